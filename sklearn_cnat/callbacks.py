"""skorch callbacks for CNAT training: budget curriculum, calibration monitoring, weight averaging."""

import math
import numbers

import numpy as np
import torch
from skorch.callbacks import Callback, EpochScoring

from .exceptions import CNATValueError

__all__ = ["BudgetCurriculum", "ValidECE", "WarmupDecay", "WeightEMA"]


class BudgetCurriculum(Callback):
    """Ramp the noise budgets from zero to their declared size over the first epochs.

    The paper's curriculum scheduling: at epoch ``e`` (1-based) every radius
    (``r`` and ``rho``) is multiplied by ``min(1, (e - 1) / n_epochs)``, so the
    first epoch trains on the nominal labels and epoch ``n_epochs + 1`` onwards
    on the full budgets. The current factor is recorded in the history as
    ``budget_scale``.

    Parameters
    ----------
    n_epochs : int, default=5
        Length of the ramp. ``0`` disables it (full budgets from the start).
    """

    def __init__(self, n_epochs=5):
        self.n_epochs = n_epochs

    def on_epoch_begin(self, net, **kwargs):
        epoch = len(net.history)  # the new epoch row is already appended
        scale = 1.0 if self.n_epochs <= 0 else min(1.0, (epoch - 1) / self.n_epochs)
        net.budget_scale = float(scale)
        net.history.record("budget_scale", float(scale))


def _valid_ece(net, X, y):
    from .metrics import expected_calibration_error

    proba = net.predict_proba(X)
    y = np.asarray(y)
    k = proba.shape[1]
    labels = np.argmax(y[:, :k], axis=1)  # plurality of the nominal pi
    return expected_calibration_error(labels, proba)


class ValidECE(EpochScoring):
    """Expected calibration error on the validation split, recorded as ``valid_ece``.

    Use it with skorch's ``EarlyStopping(monitor="valid_ece")`` and
    ``CNATClassifier(validation_fraction=...)`` to stop on calibration.
    Labels are the plurality class of each validation example's nominal ``pi``.
    """

    def __init__(self, name="valid_ece"):
        super().__init__(scoring=_valid_ece, lower_is_better=True, on_train=False, name=name)


class WarmupDecay:
    """Learning-rate factor per optimizer step: linear warm-up, then linear or cosine decay to 0.

    A picklable ``lr_lambda`` for :class:`torch.optim.lr_scheduler.LambdaLR` stepped every
    batch (``skorch.callbacks.LRScheduler(..., step_every="batch")``), which
    ``CNATClassifier(lr_schedule="onecycle" | "cosine")`` sets up. Step ``s`` of
    ``total_steps`` gets ``(s + 1) / w`` for ``s < w = warmup * total_steps``, then
    ``(total - s) / (total - w)`` (linear) or ``(1 + cos(pi (s - w) / (total - w))) / 2``
    (cosine); 0 after the last step.

    Parameters
    ----------
    total_steps : int
    warmup : float, default=0.2
        Fraction of the steps spent warming up.
    shape : {"linear", "cosine"}, default="linear"
    """

    def __init__(self, total_steps, warmup=0.2, shape="linear"):
        self.total_steps = int(total_steps)
        self.warmup = float(warmup)
        self.shape = shape

    def __call__(self, step):
        total = max(self.total_steps, 1)
        w = max(self.warmup * total, 1.0)
        if step < w:
            return (step + 1) / w
        frac = min(max((step - w) / max(total - w, 1.0), 0.0), 1.0)
        if self.shape == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0 - frac


def _check_ema_decay(decay, name="WeightEMA decay"):
    if isinstance(decay, bool) or not (isinstance(decay, numbers.Real) and 0 < decay < 1):
        raise CNATValueError(f"{name} must be a number in (0, 1), got {decay!r}")


class _EMAUpdate:
    """Picklable ``multi_avg_fn`` of ``AveragedModel``: ``a <- decay * a + (1 - decay) * p``."""

    def __init__(self, decay):
        self.decay = decay

    @torch.no_grad()
    def __call__(self, averaged, current, n_averaged):
        if averaged[0].is_floating_point():  # one dtype per call (AveragedModel groups them)
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay)
        else:
            for a, p in zip(averaged, current):
                a.copy_(p)  # an integer parameter cannot be averaged: it follows the model


class WeightEMA(Callback):
    """Exponential moving average of the module's parameters over training steps.

    After every training batch the average ``a`` moves towards the parameters ``p``:
    ``a <- decay * a + (1 - decay) * p`` (the first step copies ``p``), through
    :class:`torch.optim.swa_utils.AveragedModel`. When training ends the average replaces
    the parameters (``apply=True``); buffers (BatchNorm running statistics) are not
    averaged: ``CNATClassifier`` re-estimates them at the averaged weights
    (``recalibrate_bn=True``). ``CNATClassifier(ema=decay)`` adds one. Each ``fit`` or
    ``partial_fit`` call starts a new average.

    Parameters
    ----------
    decay : float in (0, 1), default=0.999
        Weight of the old average per step; the average spans about ``1 / (1 - decay)``
        steps.
    apply : bool, default=True
        Copy the average into the module when training ends. ``False`` only keeps it in
        ``averaged_`` (e.g. to compare it with the final weights).

    Attributes
    ----------
    averaged_ : torch.optim.swa_utils.AveragedModel or None
        The running average (its ``module`` is a copy of the network); ``None`` once
        ``apply`` has copied it into the module (one copy of the network is kept, also
        in a pickled estimator).
    """

    def __init__(self, decay=0.999, apply=True):
        self.decay = decay
        self.apply = apply

    def on_train_begin(self, net, **kwargs):
        from torch.optim.swa_utils import AveragedModel

        _check_ema_decay(self.decay)
        self.averaged_ = AveragedModel(net.module_, multi_avg_fn=_EMAUpdate(float(self.decay)))

    def on_batch_end(self, net, training=False, **kwargs):
        if training:
            self.averaged_.update_parameters(net.module_)

    def on_train_end(self, net, **kwargs):
        if not self.apply:
            return
        if int(self.averaged_.n_averaged) > 0:
            with torch.no_grad():
                for p, a in zip(net.module_.parameters(), self.averaged_.module.parameters(), strict=True):
                    p.copy_(a)
        self.averaged_ = None
