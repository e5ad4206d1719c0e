"""skorch callbacks for CNAT training: budget curriculum and calibration monitoring."""

import numpy as np
from skorch.callbacks import Callback, EpochScoring

__all__ = ["BudgetCurriculum", "ValidECE"]


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
