"""Noisy-label baselines the benchmark compares CNAT with.

* :class:`GCELoss`: generalized cross-entropy (Zhang & Sabuncu, "Generalized
  Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
  NeurIPS 2018): ``L_q(p, y) = (1 - p_y^q) / q``; ``q -> 0`` is cross-entropy,
  ``q = 1`` the mean absolute error.
* :class:`ELRLoss`: early-learning regularisation (Liu et al., "Early-Learning
  Regularization Prevents Memorization of Noisy Labels", NeurIPS 2020):
  cross-entropy plus ``lam * log(1 - <t_i, p_i>)``, with ``t_i`` a running
  average of the model's own predictions on example ``i``.
* Label smoothing (Szegedy et al. 2016): cross-entropy on the soft targets
  ``(1 - eps) onehot(y) + eps / K``.
* :class:`BaselineClassifier`: an sklearn estimator training a network with
  one of these losses through skorch, with ``CNATClassifier``'s conventions
  (``module="linear"`` on a feature matrix, a torch module or factory on images).
* :class:`CleanlabFilterClassifier`: confident-learning filtering (Northcutt
  et al., JAIR 2021): out-of-sample ``pred_probs`` by cross-validation,
  ``cleanlab.filter.find_label_issues``, then the estimator refitted on the
  examples not flagged.

None of these estimators certifies its predictions.
"""

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from skorch import NeuralNet
from torch import nn
from torch.nn import functional as F

from ._compat import Interval, StrOptions
from .classifier import (
    CNATClassifier,
    _EvidenceDataset,
    _instantiate_module,
    _recalibrate_net_batchnorm,
    _resolve_optimizer,
    _softmax,
    _validate_sample_weight,
)
from .exceptions import CNATValueError, NotFittedError
from .losses import _elr_penalty, _elr_probabilities, _elr_update

__all__ = ["GCELoss", "ELRLoss", "BaselineClassifier", "CleanlabFilterClassifier"]

_LOSSES = ("ce", "label_smoothing", "gce", "elr")


# --------------------------------------------------------------------------- losses


def _soft_targets(target, n_classes):
    """(n, K) float targets from class indices (n,) or soft targets (n, K)."""
    if target.ndim == 1:
        return F.one_hot(target.long(), n_classes).float()
    return target.float()


class GCELoss(nn.Module):
    """Generalized cross-entropy ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018, eq. 6).

    With soft targets ``t`` the loss is ``sum_k t_k (1 - p_k^q) / q``.

    Parameters
    ----------
    q : float in (0, 1], default=0.7
    reduction : {"mean", "sum", "none"}, default="mean"

    Examples
    --------
    >>> import torch
    >>> round(float(GCELoss(q=0.7)(torch.zeros(1, 2), torch.tensor([0]))), 4)
    0.5491
    """

    def __init__(self, q=0.7, reduction="mean"):
        super().__init__()
        if not (isinstance(q, numbers.Real) and 0 < q <= 1):
            raise CNATValueError(f"q must be in (0, 1], got {q!r}")
        self.q = q
        self.reduction = reduction

    def forward(self, logits, target, index=None, sample_weight=None):
        p = torch.softmax(logits, dim=-1)
        t = _soft_targets(target, logits.shape[-1])
        loss = (t * (1.0 - p.clamp(min=1e-12) ** self.q)).sum(dim=-1) / self.q
        return _reduce(_weighted(loss, sample_weight), self.reduction)


class ELRLoss(nn.Module):
    """Early-learning regularisation (Liu et al. 2020, eqs. 5-6).

    ``loss_i = CE(p_i, y_i) + lam * log(1 - <t_i, p_i>)``, where ``p_i`` is the
    softmax output clipped to ``[1e-4, 1 - 1e-4]`` and ``t_i`` the temporal
    ensemble ``t_i <- beta t_i + (1 - beta) p_i / sum(p_i)`` (``p_i`` detached),
    updated before the regulariser is computed, in training mode only. ``t``
    starts at zero.

    Parameters
    ----------
    n_samples : int
        Number of training examples (size of the target memory).
    n_classes : int
    lam : float, default=3.0
        Regularisation weight ``lambda``.
    beta : float in [0, 1), default=0.7
        Momentum of the running average.

    Notes
    -----
    ``forward(logits, target, index)`` needs ``index`` (n,), the positions of
    the batch's examples in the training set; ``BaselineClassifier`` passes them
    through its dataset. ``sample_weight`` (n,) weights both per-example terms
    (``mean_i w_i loss_i``; ``BaselineClassifier`` passes ``w_i / mean(w)``).

    Examples
    --------
    >>> import torch
    >>> crit = ELRLoss(n_samples=1, n_classes=2, lam=3.0, beta=0.7)
    >>> round(float(crit(torch.zeros(1, 2), torch.tensor([0]), index=torch.tensor([0]))), 4)
    0.2056
    """

    def __init__(self, n_samples, n_classes, lam=3.0, beta=0.7):
        super().__init__()
        if not (isinstance(n_samples, numbers.Integral) and n_samples >= 1):
            raise CNATValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if not (isinstance(n_classes, numbers.Integral) and n_classes >= 2):
            raise CNATValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if not (isinstance(lam, numbers.Real) and lam >= 0):
            raise CNATValueError(f"lam must be >= 0, got {lam!r}")
        if not (isinstance(beta, numbers.Real) and 0 <= beta < 1):
            raise CNATValueError(f"beta must be in [0, 1), got {beta!r}")
        self.lam = lam
        self.beta = beta
        self.register_buffer("target_memory", torch.zeros(n_samples, n_classes))

    def forward(self, logits, target, index=None, sample_weight=None):
        if index is None:
            raise CNATValueError("ELRLoss needs the training-set index of every example in the batch")
        index = index.long().to(logits.device)
        ce = _weighted(-(_soft_targets(target, logits.shape[-1]) * torch.log_softmax(logits, dim=-1)).sum(dim=-1),
                       sample_weight).mean()
        p = _elr_probabilities(logits)
        if self.training:
            _elr_update(self.target_memory, index, p, self.beta)
        reg = _weighted(_elr_penalty(self.target_memory[index], p), sample_weight).mean()
        return ce + self.lam * reg


class _SoftCrossEntropy(nn.Module):
    """Cross-entropy against soft targets (used for "ce" and "label_smoothing")."""

    def forward(self, logits, target, index=None, sample_weight=None):
        t = _soft_targets(target, logits.shape[-1])
        return _weighted(-(t * torch.log_softmax(logits, dim=-1)).sum(dim=-1), sample_weight).mean()


def _weighted(loss, sample_weight):
    """Per-example losses (n,) times per-example weights (n,) (unchanged when None)."""
    return loss if sample_weight is None else loss * sample_weight.to(loss.dtype)


def _reduce(loss, reduction):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise CNATValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


# --------------------------------------------------------------------------- skorch net


class _BaselineNet(NeuralNet):
    """skorch NeuralNet whose targets are ``[soft target (K), training index]`` and, with
    weights, ``w_i / mean(w)`` as column K + 1 (the loss is ``mean_i w_i loss_i / mean(w)``)."""

    def get_loss(self, y_pred, y_true, X=None, training=False):
        k = y_pred.shape[1]
        y_true = y_true.to(y_pred.device)
        weight = y_true[:, k + 1] if y_true.shape[1] > k + 1 else None
        return self.criterion_(y_pred, y_true[:, :k], index=y_true[:, k], sample_weight=weight)


# --------------------------------------------------------------------------- estimators


class BaselineClassifier(ClassifierMixin, BaseEstimator):
    """A network trained on noisy labels with cross-entropy, label smoothing, GCE or ELR.

    Same conventions as :class:`~sklearn_cnat.CNATClassifier` (inputs, modules,
    optimisers, seeding), but ``y`` is one label per example.

    Parameters
    ----------
    module : "linear", torch.nn.Module class, instance or factory, default="linear"
        As in ``CNATClassifier``: ``"linear"`` is a linear layer on a feature matrix.
    loss : {"ce", "label_smoothing", "gce", "elr"}, default="ce"
    smoothing : float in [0, 1), default=0.1
        Label-smoothing ``eps`` (``loss="label_smoothing"``).
    q : float in (0, 1], default=0.7
        GCE exponent (``loss="gce"``).
    elr_lambda : float >= 0, default=3.0
        ELR weight (``loss="elr"``).
    elr_beta : float in [0, 1), default=0.7
        ELR momentum (``loss="elr"``).
    max_epochs : int, default=10
    lr : float, default=1e-3
    batch_size : int, default=128
    optimizer : {"adam", "adamw", "sgd"} or torch optimizer class, default="adam"
    optimizer_kwargs : dict or None, default=None
    module_kwargs : dict or None, default=None
    callbacks : list of skorch callbacks or None, default=None
    validation_fraction : float or None, default=None
        Hold out this fraction (unstratified, seeded) as skorch's validation split.
    recalibrate_bn : bool, default=True
        Re-estimate BatchNorm running statistics on the training inputs after training,
        as :class:`~sklearn_cnat.CNATClassifier` does.
    device : str, default="cpu"
    verbose : int, default=0
    random_state : int or None, default=None
        Seeds weight initialisation and shuffling; the global torch RNG is left as it was.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    net_ : skorch.NeuralNet
    n_features_in_ : int
        Only for 2-D feature matrices.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.baselines import BaselineClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(60, 4)).astype(np.float32); y = (X[:, 0] > 0).astype(int)
    >>> clf = BaselineClassifier(loss="gce", max_epochs=5, lr=0.05, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 2)
    """

    _parameter_constraints = {
        "loss": [StrOptions(set(_LOSSES))],
        "smoothing": [Interval(numbers.Real, 0, 1, closed="left")],
        "q": [Interval(numbers.Real, 0, 1, closed="right")],
        "elr_lambda": [Interval(numbers.Real, 0, None, closed="left")],
        "elr_beta": [Interval(numbers.Real, 0, 1, closed="left")],
        "max_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither"), None],
        "recalibrate_bn": ["boolean"],
    }

    def __init__(
        self,
        module="linear",
        *,
        loss="ce",
        smoothing=0.1,
        q=0.7,
        elr_lambda=3.0,
        elr_beta=0.7,
        max_epochs=10,
        lr=1e-3,
        batch_size=128,
        optimizer="adam",
        optimizer_kwargs=None,
        module_kwargs=None,
        callbacks=None,
        validation_fraction=None,
        recalibrate_bn=True,
        device="cpu",
        verbose=0,
        random_state=None,
    ):
        self.module = module
        self.loss = loss
        self.smoothing = smoothing
        self.q = q
        self.elr_lambda = elr_lambda
        self.elr_beta = elr_beta
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.optimizer_kwargs = optimizer_kwargs
        self.module_kwargs = module_kwargs
        self.callbacks = callbacks
        self.validation_fraction = validation_fraction
        self.recalibrate_bn = recalibrate_bn
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    # Input handling, seeding and the output-shape check are CNATClassifier's.
    _prepare_inputs = CNATClassifier._prepare_inputs
    _seed = CNATClassifier._seed
    _check_module_output = CNATClassifier._check_module_output

    def _encode_labels(self, y, n):
        if y is None:
            raise CNATValueError(f"{type(self).__name__} requires y to be passed, but the target y is None "
                                 "(one label per example)")
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        classes, y_idx = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise CNATValueError(f"{type(self).__name__} needs at least 2 classes in y; got only one class "
                                 f"({classes[0]!r})")
        if len(y_idx) != n:
            raise CNATValueError(f"X has {n} samples but y has {len(y_idx)}; they must match")
        return classes, y_idx

    def _criterion(self, n, k):
        if self.loss == "gce":
            return GCELoss, {"criterion__q": self.q}
        if self.loss == "elr":
            return ELRLoss, {"criterion__n_samples": n, "criterion__n_classes": k,
                             "criterion__lam": self.elr_lambda, "criterion__beta": self.elr_beta}
        return _SoftCrossEntropy, {}

    def _targets(self, y_idx, k, sample_weight=None):
        t = np.eye(k)[y_idx]
        if self.loss == "label_smoothing":
            t = (1.0 - self.smoothing) * t + self.smoothing / k
        cols = [t, np.arange(len(y_idx), dtype=np.float64)[:, None]]
        if sample_weight is not None:
            cols.append((sample_weight / sample_weight.mean())[:, None])
        t = np.concatenate(cols, axis=1)
        return torch.as_tensor(t, dtype=torch.float64 if len(y_idx) > 2**24 else torch.float32)

    def fit(self, X, y, sample_weight=None):
        """Fit on inputs ``X`` and labels ``y``.

        Parameters
        ----------
        X : ndarray, torch.Tensor or torch Dataset
            As in ``CNATClassifier.fit``: features (n, d) or images.
        y : array-like of shape (n_samples,)
            One (noisy) label per example.
        sample_weight : array-like of shape (n_samples,), float or None, default=None
            Row weights ``>= 0`` (finite, not all zero): the training loss is
            ``mean_i w_i loss_i / mean(w)`` per batch (both ELR terms are weighted).

        Returns
        -------
        self
        """
        self._validate_params()
        opt = _resolve_optimizer(self.optimizer)
        inputs, n = self._prepare_inputs(X, fit=True)
        sample_weight = _validate_sample_weight(sample_weight, n)
        self.classes_, y_idx = self._encode_labels(y, n)
        k = len(self.classes_)
        seed = self._seed()
        dataset = _EvidenceDataset(inputs, self._targets(y_idx, k, sample_weight))
        from skorch.callbacks import ProgressBar
        from skorch.dataset import ValidSplit

        callbacks = list(self.callbacks or [])
        if self.verbose:
            callbacks.append(("progress_bar", ProgressBar()))
        train_split = None
        if self.validation_fraction is not None:
            train_split = ValidSplit(self.validation_fraction, stratified=False, random_state=seed)
        criterion, criterion_kwargs = self._criterion(n, k)
        kwargs = {f"optimizer__{key}": v for key, v in (self.optimizer_kwargs or {}).items()}
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            n_features = inputs.shape[1] if self._input_kind == "features" else None
            in_channels = inputs.shape[1] if self._input_kind == "images" else None
            module = _instantiate_module(self.module, n_features, k, in_channels, self.module_kwargs)
            net = _BaselineNet(
                module=module,
                criterion=criterion,
                optimizer=opt,
                lr=self.lr,
                max_epochs=self.max_epochs,
                batch_size=self.batch_size,
                train_split=train_split,
                iterator_train__shuffle=True,
                callbacks=callbacks,
                predict_nonlinearity=_softmax,
                device=self.device,
                verbose=self.verbose,
                **criterion_kwargs,
                **kwargs,
            )
            self._check_module_output(net, dataset, k)
            if self.max_epochs:
                net.partial_fit(dataset, y=None)
                if self.recalibrate_bn:
                    _recalibrate_net_batchnorm(net, dataset)
        self.net_ = net
        return self

    def _loader_inputs(self, inputs):
        return _EvidenceDataset(inputs, torch.zeros(len(inputs), len(self.classes_) + 1))

    def _check_fitted(self):
        if not hasattr(self, "net_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def _scores(self, X):
        """Logits of shape (n_samples, n_classes)."""
        self._check_fitted()
        inputs, _ = self._prepare_inputs(X, fit=False)
        from ._inference import _forward_per_point  # batch-invariant: a row's logits depend on it alone

        return _forward_per_point(self.net_.module_, self._loader_inputs(inputs))[0]

    def decision_function(self, X):
        """Logits.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            For two classes, scikit-learn's convention: ``logit_1 - logit_0``.
        """
        z = self._scores(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Softmax of the logits, shape (n_samples, n_classes)."""
        z = self._scores(X)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels (arg-max logit, ties to the lowest class index)."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


class CleanlabFilterClassifier(ClassifierMixin, BaseEstimator):
    """Drop the examples cleanlab flags as mislabelled, then fit the estimator on the rest.

    ``fit`` computes out-of-sample predicted probabilities by stratified
    ``cv``-fold cross-validation of ``estimator`` on ``(X, y)``, flags label
    issues with ``cleanlab.filter.find_label_issues(y, pred_probs,
    filter_by=filter_by)``, and refits a clone of ``estimator`` on the examples
    not flagged.

    Parameters
    ----------
    estimator : classifier or None, default=None
        Must implement ``predict_proba``. ``None``: ``BaselineClassifier(loss="ce")``.
    cv : int, default=5
        Number of folds for the out-of-sample ``pred_probs``.
    filter_by : str, default="prune_by_noise_rate"
        Passed to ``cleanlab.filter.find_label_issues``.
    random_state : int or None, default=None
        Seeds the fold assignment (and the estimator's ``random_state`` if it has
        one and it is None).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    pred_probs_ : ndarray of shape (n_samples, n_classes)
        Out-of-sample predicted probabilities from cross-validation.
    label_issues_ : ndarray of shape (n_samples,), bool
        Examples flagged (and dropped).
    estimator_ : classifier
        The estimator refitted on the kept examples.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = CleanlabFilterClassifier(LogisticRegression(max_iter=500), cv=3, random_state=0).fit(X, y)
    >>> int(clf.label_issues_.sum()) < 10
    True
    """

    _parameter_constraints = {
        "cv": [Interval(numbers.Integral, 2, None, closed="left")],
        "filter_by": [str],
    }

    def __init__(self, estimator=None, *, cv=5, filter_by="prune_by_noise_rate", random_state=None):
        self.estimator = estimator
        self.cv = cv
        self.filter_by = filter_by
        self.random_state = random_state

    def _base(self):
        est = BaselineClassifier(loss="ce") if self.estimator is None else clone(self.estimator)
        if self.random_state is not None and "random_state" in est.get_params(deep=False) \
                and est.get_params(deep=False)["random_state"] is None:
            est.set_params(random_state=self.random_state)
        return est

    def fit(self, X, y):
        """Cross-validate, flag label issues, refit on the kept examples.

        Parameters
        ----------
        X : array-like (indexable by rows)
        y : array-like of shape (n_samples,)
            One (noisy) label per example.

        Returns
        -------
        self
        """
        from cleanlab.filter import find_label_issues

        self._validate_params()
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise CNATValueError("CleanlabFilterClassifier needs at least 2 classes in y; got only one class")
        counts = np.bincount(y_idx)
        if counts.min() < self.cv:
            raise CNATValueError(f"every class needs at least cv={self.cv} examples for the cross-validated "
                                 f"pred_probs; the smallest class has {counts.min()}")
        folds = StratifiedKFold(n_splits=self.cv, shuffle=True, random_state=self.random_state)
        self.pred_probs_ = cross_val_predict(self._base(), X, y_idx, cv=folds, method="predict_proba")
        self.label_issues_ = np.asarray(find_label_issues(y_idx, self.pred_probs_, filter_by=self.filter_by),
                                        dtype=bool)
        keep = np.flatnonzero(~self.label_issues_)
        X_keep = X[keep] if hasattr(X, "shape") else [X[i] for i in keep]
        self.estimator_ = self._base().fit(X_keep, y_idx[keep])
        return self

    def predict_proba(self, X):
        """Class probabilities of the refitted estimator, columns in ``classes_`` order."""
        check_is_fitted(self, "estimator_")
        proba = self.estimator_.predict_proba(X)
        out = np.zeros((proba.shape[0], len(self.classes_)))
        out[:, np.asarray(self.estimator_.classes_, dtype=np.intp)] = proba
        return out

    def predict(self, X):
        """Predicted class labels."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
