"""Training recipes: the :class:`~sklearn_cnat.CNATClassifier` settings docs/benchmarks.md measures.

A recipe is a plain ``dict`` of keyword arguments, so it composes with everything else
the estimator takes (a budget, a head, ``feature_split``, ``random_state``) and with
``clone``/``GridSearchCV``::

    CNATClassifier(**fast_cnn_recipe(n_samples=len(X)), feature_split=0.5, random_state=0)

The benchmark (``benchmarks/strong_path.py --recipe airbench94``), the command line
(``cnat run --backbone fast_cnn`` on images) and the README build their networks from
the same function, so a number in docs/benchmarks.md is what a user of the recipe gets
on the same data and machine.
"""

import numbers

import numpy as np

from .exceptions import CNATValueError

__all__ = ["fast_cnn_recipe", "AIRBENCH94"]

#: airbench94's network and optimiser settings at batch 256 (Jordan 2024; FastCNN follows its
#: network): BatchNorm scales fixed at 1 and biases at 64 times the learning rate (weight decay
#: divided by 64: the same decay per step), BatchNorm momentum 0.4, logits times 1/9, Nesterov
#: momentum 0.85, learning rate 0.375 and weight decay 1.33e-3 (its decay per step, 5e-4, at
#: batch 256). Label smoothing 0.2, flip/translate augmentation, a one-cycle schedule, a weight
#: average and six-view test-time augmentation are the strong path's (docs/benchmarks.md).
AIRBENCH94 = dict(lr=0.375, momentum=0.85, weight_decay=1.33e-3, bn_bias_lr_scale=64.0,
                  batchnorm_momentum=0.4, batchnorm_weight=False, logit_scale=1 / 9, label_smoothing=0.2)

_REFERENCE_BATCH = 256
# ridge alpha grid of the strong path (cnat run's default, the benchmark's): 0.1 to 1e7, sqrt(10) apart
_ALPHAS = tuple(float(a) for a in np.logspace(-1, 7, 17))
_EMA_SPAN = 0.2  # the weight average spans about the last fifth of the training steps


def _recipe_ema(n_samples, max_epochs, batch_size):
    """Weight-average decay whose span ``1 / (1 - decay)`` is a fifth of the training steps
    (0.99915 for 50,000 rows, 30 epochs, batch 256: the 0.999 the benchmark selected), in
    ``[0.9, 0.9999]``; ``None`` (no average) below 50 steps."""
    steps = max_epochs * int(np.ceil(n_samples / batch_size))
    if steps < 50:
        return None
    return float(np.clip(1.0 - 1.0 / (_EMA_SPAN * steps), 0.9, 0.9999))


def _batchnorm_bias_groups(module, lr, weight_decay, scale):
    """skorch ``param_groups`` putting every BatchNorm bias of ``module`` at ``scale`` times the
    learning rate with the weight decay divided by ``scale`` (the same decay per step)."""
    from torch import nn

    return [(f"{name}.bias", {"lr": lr * scale, "weight_decay": weight_decay / scale})
            for name, m in module.named_modules() if isinstance(m, nn.BatchNorm2d)]


def fast_cnn_recipe(n_samples=None, *, max_epochs=30, batch_size=256, ema="auto", tta="flip_translate",
                    module_kwargs=None):
    """Keyword arguments of :class:`~sklearn_cnat.CNATClassifier` for the strong path.

    :class:`~sklearn_cnat.models.FastCNN` with :data:`AIRBENCH94`'s settings, trained
    by SGD with a one-cycle learning-rate schedule, bfloat16 autocast where native,
    seeded flip/translate augmentation, a weight average and six-view test-time
    augmentation. 30 epochs on the 50,000 CIFAR-10N images with their three votes:
    90.2 % clean top-1 in under 30 minutes on two CPU cores (docs/benchmarks.md).

    Parameters
    ----------
    n_samples : int or None, default=None
        Training rows the network will see (with ``feature_split``, the backbone's
        rows); sets the weight average's decay when ``ema="auto"``.
    max_epochs : int, default=30
    batch_size : int, default=256
        The learning rate scales with it linearly (``0.375 * batch_size / 256``), so the
        weight decay per example stays airbench94's.
    ema : float in (0, 1), None or "auto", default="auto"
        Decay per step of the weight average; ``"auto"``: its span is a fifth of the
        training steps (``n_samples`` needed), none below 50 steps.
    tta : {"flip", "flip_translate", False}, default="flip_translate"
        Test-time views (``CNATClassifier(tta=)``).
    module_kwargs : dict or None, default=None
        Further :class:`~sklearn_cnat.models.FastCNN` arguments (e.g. ``whiten=False``
        for images under 9 x 9 pixels, ``num_classes``); they override the recipe's.

    Returns
    -------
    params : dict
        ``module``, ``module_kwargs``, ``max_epochs``, ``batch_size``, ``lr``,
        ``optimizer``, ``optimizer_kwargs`` (with the BatchNorm biases' parameter
        groups), ``lr_schedule``, ``label_smoothing``, ``precision``, ``augment``,
        ``tta`` and ``ema``.
    """
    from .models import FastCNN

    for name, value in (("max_epochs", max_epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise CNATValueError(f"{name} must be a positive integer, got {value!r}")
    if n_samples is not None and (isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral)
                                  or n_samples < 1):
        raise CNATValueError(f"n_samples must be a positive integer or None, got {n_samples!r}")
    if isinstance(ema, str):
        if ema != "auto":
            raise CNATValueError(f"ema must be a number in (0, 1), None or 'auto', got {ema!r}")
        if n_samples is None:
            raise CNATValueError("ema='auto' sets the weight average from the training steps: pass n_samples")
        ema = _recipe_ema(int(n_samples), int(max_epochs), int(batch_size))
    a = AIRBENCH94
    module_kwargs = dict(batchnorm_momentum=a["batchnorm_momentum"], batchnorm_weight=a["batchnorm_weight"],
                         logit_scale=a["logit_scale"], **(module_kwargs or {}))
    lr = a["lr"] * batch_size / _REFERENCE_BATCH
    scale = a["bn_bias_lr_scale"]
    try:
        probe = FastCNN(**module_kwargs)
    except TypeError as exc:
        raise CNATValueError(f"module_kwargs are not FastCNN's: {exc}") from None
    groups = _batchnorm_bias_groups(probe, lr, a["weight_decay"], scale)
    return dict(module=FastCNN, module_kwargs=module_kwargs, max_epochs=int(max_epochs), batch_size=int(batch_size),
                lr=lr, optimizer="sgd",
                optimizer_kwargs={"momentum": a["momentum"], "nesterov": True, "weight_decay": a["weight_decay"],
                                  "param_groups": groups},
                lr_schedule="onecycle", label_smoothing=a["label_smoothing"], precision="auto",
                augment="flip_translate", tta=tta, ema=ema)
