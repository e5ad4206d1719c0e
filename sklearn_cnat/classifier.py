"""CNATClassifier: robust training on label evidence through skorch, with certificates.

Design: composition, not inheritance. ``CNATClassifier`` is a plain
scikit-learn estimator whose ``fit`` builds a skorch ``NeuralNet`` subclass
(``net_``) and lets skorch run the training loop, callbacks, device placement
and progress printing. We compose rather than subclass because (a) skorch's
``NeuralNet`` exposes dozens of routing parameters (``module__*``,
``optimizer__*``) and mutates state in ``initialize`` while scikit-learn
requires ``__init__`` to store exactly its arguments; (b) our ``y`` is label
evidence (vote counts, annotator matrices, labels), which skorch's
``NeuralNetClassifier`` would treat as class labels (stratified split,
``np.unique(y)``, accuracy callback); and (c) the nested ``budget``
transformer must be a real scikit-learn parameter so that ``budget__mapping``
is tunable by ``GridSearchCV``. Budgets travel with each example through
skorch's batching as extra target columns ``[pi, r, rho]``.
"""

import copy
import inspect
import numbers

import numpy as np
import scipy.special
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from torch import nn
from skorch import NeuralNet
from torch.utils.data import Dataset

from .budgets import NoiseBudget, NoiseBudgetTransformer
from .exceptions import CNATTypeError, CNATValueError, CertificationError, NotFittedError

__all__ = ["CNATClassifier"]

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
_GEOMETRIES = ("l1", "kl", "kl_l1")
_HEADS = ("softmax", "ridge", "robust_softmax")


# --------------------------------------------------------------------------- data


class _EvidenceDataset(Dataset):
    """Pairs each input with its target row ``[pi, r, rho]`` (float32)."""

    def __init__(self, inputs, targets, transform=None):
        self.inputs = inputs
        self.targets = targets
        self.transform = transform

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        x = self.inputs[i]
        if isinstance(x, (tuple, list)):  # torch Datasets yielding (x, label, ...)
            x = x[0]
        x = torch.as_tensor(x, dtype=torch.float32)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]


def _resolve_optimizer(optimizer):
    """The torch optimizer class named by ``optimizer`` ("sgd", "adam", "adamw" or a class)."""
    if isinstance(optimizer, str):
        if optimizer not in _OPTIMIZERS:
            raise CNATValueError(f"optimizer must be one of {sorted(_OPTIMIZERS)} or a torch optimizer class, "
                                 f"got {optimizer!r}")
        return _OPTIMIZERS[optimizer]
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise CNATValueError(f"optimizer must be a name or a torch.optim.Optimizer subclass, got {optimizer!r}")
    return optimizer


def _recalibrate_net_batchnorm(net, dataset):
    """Precise BatchNorm statistics for a trained skorch net, on ``dataset`` in order (no shuffling)."""
    from .models import recalibrate_batchnorm

    recalibrate_batchnorm(net.module_, net.get_iterator(dataset, training=False), device=net.device)


_DATA_INIT_ROWS = 4096


def _init_from_data(module, dataset, seed):
    """Call ``module.init_from_data(x)`` (when it has one) on a seeded sample of the training inputs."""
    init = getattr(module, "init_from_data", None)
    if not callable(init):
        return
    n = len(dataset)
    rows = np.arange(n)
    if n > _DATA_INIT_ROWS:
        rows = np.sort(np.random.RandomState(seed).choice(n, _DATA_INIT_ROWS, replace=False))
    from ._inference import _module_device

    x = torch.stack([dataset[int(i)][0] for i in rows]).to(_module_device(module))
    init(x)


def _is_torch_dataset(X):
    return isinstance(X, Dataset) and not isinstance(X, torch.Tensor)


def _check_finite(arr, what="X"):
    if not np.all(np.isfinite(arr)):
        raise CNATValueError(f"{what} contains NaN or infinity; clean or impute it before fitting")


def _as_array_inputs(X):
    """Convert array-like images/features to arrays the estimators read.

    2-D: feature matrix (n, d), float64 with the values as given (integers and uint8
    too: a feature matrix is never rescaled). 3-D (n, H, W): grayscale images, a channel
    axis is added. 4-D: NCHW floats are used as given (float32); uint8 images are
    scaled to [0, 1], and uint8 NHWC (last axis 1, 3 or 4 channels and second axis not)
    is transposed to NCHW. Returns (array, kind) with kind in {"features", "images"}.
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if hasattr(X, "toarray") or hasattr(X, "tocsr"):
        raise CNATTypeError("sparse input is not supported by CNATClassifier; convert X with X.toarray()")
    arr = np.asarray(X)
    if np.iscomplexobj(arr):
        raise CNATValueError("Complex data not supported: X must be real-valued")
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise CNATTypeError(f"X could not be converted to numbers: {exc}") from exc
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise CNATValueError(f"X must be numeric, got dtype {arr.dtype}")
    if arr.ndim == 1:
        raise CNATValueError(
            f"Expected a 2D array, got a 1D array of shape {arr.shape}. Reshape your data either using "
            "array.reshape(-1, 1) if it has a single feature or array.reshape(1, -1) if it holds a "
            "single sample."
        )
    if arr.ndim not in (2, 3, 4):
        raise CNATValueError(
            f"X must be a feature matrix (n, d), grayscale images (n, H, W) or images "
            f"(n, C, H, W) / (n, H, W, C); got an array of shape {arr.shape}"
        )
    if arr.ndim == 2 and arr.shape[1] == 0:
        raise CNATValueError(f"0 feature(s) (shape={arr.shape}) while a minimum of 1 is required.")
    if arr.ndim == 2:
        # Feature matrices are kept in float64 as given: the ridge head is Ridge on X itself
        # (docs/certificates.md, (C0)); rounding to float32 would serve another learner.
        out = arr.astype(np.float64)
        _check_finite(out)
        return np.ascontiguousarray(out), "features"
    is_uint8 = arr.dtype == np.uint8
    if arr.ndim == 3:
        arr = arr[:, None]
    if is_uint8 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    out = arr.astype(np.float32)
    if is_uint8:
        out /= 255.0
    else:
        _check_finite(out)
    return np.ascontiguousarray(out), "images"


def _instantiate_module(module, n_features, n_classes, in_channels, module_kwargs):
    kwargs = dict(module_kwargs or {})
    if isinstance(module, str):
        if module != "linear":
            raise CNATValueError(f"module={module!r} is not supported; use 'linear', a torch.nn.Module "
                                 "class or instance, or a factory such as sklearn_cnat.models.resnet18")
        if n_features is None:
            raise CNATValueError("module='linear' needs a 2-D feature matrix X of shape (n_samples, n_features)")
        return nn.Linear(n_features, n_classes, **kwargs)
    if isinstance(module, nn.Module):
        return copy.deepcopy(module)
    if callable(module):
        params = _signature_params(module)
        if "num_classes" in params and "num_classes" not in kwargs:
            kwargs["num_classes"] = n_classes
        if "in_channels" in params and "in_channels" not in kwargs and in_channels is not None:
            kwargs["in_channels"] = in_channels
        built = module(**kwargs)
        if not isinstance(built, nn.Module):
            raise CNATTypeError(f"module factory {module!r} returned {type(built).__name__}, not a torch.nn.Module")
        return built
    raise CNATTypeError(
        f"module must be 'linear', a torch.nn.Module class or instance, or a factory returning one; "
        f"got {type(module).__name__}"
    )


def _signature_params(fn):
    try:
        return inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}


def _check_label_evidence(y):
    """Reject regression targets; turn a column vector of labels into 1-D with a warning."""
    import warnings

    from sklearn.exceptions import DataConversionWarning
    from sklearn.utils.multiclass import type_of_target

    from .evidence import LabelEvidence

    if isinstance(y, (dict, LabelEvidence)) or hasattr(y, "columns"):
        return y  # cleanlab multiannotator output, long-format tables, parsed evidence: the transformer reads them
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected; it is read as labels.",
                      DataConversionWarning, stacklevel=3)
        arr = arr.ravel()
    if arr.ndim == 1 and arr.dtype.kind in "fc" and len(arr):
        kind = type_of_target(arr[~np.isnan(arr)] if arr.dtype.kind == "f" else arr)
        if kind == "continuous":
            raise CNATValueError("Unknown label type: continuous. y holds non-integer floats; a classifier "
                                 "needs class labels, vote counts or annotator labels")
    return arr


def _validate_sample_weight(sample_weight, n_samples):
    """``sample_weight`` as float64 (n,) (or None): finite, ``>= 0``, not all zero.

    scikit-learn's ``_check_sample_weight`` (a scalar is broadcast), its ``ValueError`` raised as
    :class:`~sklearn_cnat.exceptions.CNATValueError` naming the argument.
    """
    if sample_weight is None:
        return None
    from ._compat import _check_sample_weight

    try:
        return _check_sample_weight(sample_weight, np.empty((n_samples, 0)), dtype=np.float64,
                                    ensure_non_negative=True)
    except ValueError as exc:
        raise CNATValueError(f"invalid sample_weight for {n_samples} training rows: {exc}") from exc


def _alpha_grid(alpha):
    """``alpha`` as a tuple of positive floats (one value, or the candidates of a grid)."""
    values = [alpha] if isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) else alpha
    try:
        values = list(values)
    except TypeError:
        values = None
    if not values or not all(isinstance(a, numbers.Real) and not isinstance(a, bool) and np.isfinite(a) and a > 0
                             for a in values):
        raise CNATValueError(f"alpha must be a positive number or a non-empty sequence of them, got {alpha!r}")
    return tuple(float(a) for a in values)


def _resolve_split_head(split_head, feature_split, head):
    """``split_head`` made concrete: ``"auto"`` is ``"all"`` for the ridge head of a split
    representation (docs/certificates.md, Proposition 8.1), else ``"disjoint"``."""
    if split_head != "auto":
        return split_head
    return "all" if feature_split is not None and head == "ridge" else "disjoint"


def _take(inputs, rows):
    """Rows ``rows`` of an input array or torch Dataset (no copy when all rows, in order)."""
    if len(rows) == len(inputs) and np.array_equal(rows, np.arange(len(inputs))):
        return inputs
    if _is_torch_dataset(inputs):
        from torch.utils.data import Subset

        return Subset(inputs, [int(i) for i in rows])
    return inputs[rows]


def _served_certificate(cert, served):
    """``cert`` restricted to the points where it speaks of the class ``predict`` serves.

    The engines recompute the head's prediction; wherever it differs from ``served`` (the
    labels ``predict`` returns for the same features) the point is reported with the served
    label and uncertified, so that a certified point's prediction is always the served one
    (docs/certificates.md, "Served predictions").
    """
    import dataclasses

    same = cert.prediction == served
    if same.all():
        return cert
    return dataclasses.replace(cert, prediction=served, certified=cert.certified & same)


# --------------------------------------------------------------------------- skorch net


class _CNATNet(NeuralNet):
    """skorch NeuralNet whose loss reads ``[pi, r, rho]`` target columns.

    ``budget_scale`` multiplies every radius (set by the BudgetCurriculum callback).
    """

    budget_scale = 1.0
    elr_lambda = 0.0  # weight of the early-learning term; > 0: the last target column is the row index
    elr_beta = 0.7
    elr_memory = None  # (n_train, K) temporal ensemble of the network's predictions (losses._elr_update)
    autocast_dtype = None  # torch dtype of the training autocast, None for float32
    channels_last = False
    augment_fn = None  # callable(batch, generator), applied to training batches only
    augment_generator = None

    def infer(self, x, **fit_params):
        """Forward pass; in training: seeded augmentation and autocast (sklearn_cnat._precision)."""
        if not isinstance(x, torch.Tensor):
            return super().infer(x, **fit_params)
        x = x.to(self.device) if self.device is not None else x
        if x.ndim == 4 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        training = self.module_.training
        if training and self.augment_fn is not None:
            x = self.augment_fn(x, self.augment_generator)
        if training and self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.module_(x, **fit_params)
            return out.float()
        return self.module_(x, **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        k = y_pred.shape[1]
        y_true = y_true.to(y_pred.device)
        pi = y_true[:, :k]
        s = self.budget_scale
        r = (y_true[:, k] * s).clamp(max=2.0)
        rho = y_true[:, k + 1] * s
        extra = y_true[:, k + 2:]  # [w_i / mean(w)] when weighted, then [row index] with the ELR term
        losses = self.criterion_(y_pred, pi, r=r, rho=rho)  # per row, or already the mean (neither column)
        if self.elr_lambda:
            from .losses import _elr_penalty, _elr_probabilities, _elr_update

            index, extra = extra[:, -1].long(), extra[:, :-1]
            if self.elr_memory.device != y_pred.device:
                self.elr_memory = self.elr_memory.to(y_pred.device)
            p = _elr_probabilities(y_pred)
            if training:
                _elr_update(self.elr_memory, index, p, self.elr_beta)
            losses = losses + self.elr_lambda * _elr_penalty(self.elr_memory[index], p)
        if extra.shape[1]:  # loss mean(w_i loss_i) / mean(w)
            return (losses * extra[:, 0]).mean()
        return losses.mean()


def _softmax(logits):
    return torch.softmax(logits, dim=-1)


# --------------------------------------------------------------------------- estimator


class CNATClassifier(ClassifierMixin, BaseEstimator):
    """Classifier trained with the CNAT loss on label evidence, with CNR certificates.

    Parameters
    ----------
    module : "linear", torch.nn.Module class, instance or factory, default="linear"
        The network. ``"linear"`` is a linear layer on a feature matrix (e.g.
        embeddings from a frozen foundation model). A class or factory is called
        with ``num_classes`` (and ``in_channels`` when it accepts it) set from the
        data plus ``module_kwargs``; an instance is deep-copied and must output
        ``K`` logits. ``sklearn_cnat.models.resnet18``/``SmallCNN``/``FastCNN`` and
        ``torchvision.models.resnet18`` all work. A module with a method
        ``init_from_data(x)`` gets it called, before its backbone trains, with up to
        4,096 seeded training inputs (images only, never labels; in split mode
        backbone rows only, every row for the ``pseudo_label_epochs`` student): :class:`~sklearn_cnat.models.FastCNN` sets its
        patch-whitening stem from them.
    budget : NoiseBudgetTransformer or None, default=None
        Turns ``y`` into per-example budgets; nested, so ``budget__mapping`` etc.
        are tunable. ``None`` means ``NoiseBudgetTransformer()``.
    geometry : {"l1", "kl", "kl_l1"}, default="l1"
        Uncertainty set used by the loss and by the certificates.
    head : {"ridge", "softmax", "robust_softmax"}, default="ridge"
        ``"softmax"``: predictions from the CNAT-trained network (no certificate
        engine). ``"ridge"`` (the default, so that a default-constructed estimator
        certifies): after training, a ridge head with the semantics of
        ``sklearn.linear_model.Ridge(alpha=alpha)`` is fitted on the feature map
        (the input of the module's last linear layer) and the nominal ``pi``; it
        makes the predictions and is certified exactly, all tiers (see
        docs/certificates.md). ``"robust_softmax"``: after training, an
        L2-regularised linear softmax head is fitted with the CNAT loss by
        full-batch L-BFGS on the feature map; certified by the sensitivity engine,
        tiers bounded and flip (docs/certificates_softmax.md).
    alpha : float or sequence of float, default=1.0
        Regularisation of the ridge head, or of the robust softmax head
        (objective ``mean CNAT loss + alpha / (2 n) ||W||^2``). A sequence (ridge head
        only) is a grid: ``alpha_`` is chosen by exact leave-one-out agreement with the
        head rows' nominal labels, one-standard-error rule (``sklearn_cnat._alpha``);
        certificates then speak of the learner at ``alpha_`` held fixed.
    mode : {"worst", "smooth"}, default="worst"
        CNAT loss mode: exact worst case, or a label distribution drawn inside
        each set (see :class:`~sklearn_cnat.losses.CNATLoss`).
    max_epochs : int, default=10
    lr : float, default=1e-3
    batch_size : int, default=128
    optimizer : {"adam", "adamw", "sgd"} or torch optimizer class, default="adam"
    optimizer_kwargs : dict or None, default=None
        Extra optimizer arguments (``weight_decay``, ``momentum``...).
    module_kwargs : dict or None, default=None
        Extra arguments for a module class or factory.
    curriculum_epochs : int, default=0
        Ramp the budgets from 0 to full over this many epochs
        (:class:`~sklearn_cnat.callbacks.BudgetCurriculum`).
    callbacks : list of skorch callbacks or None, default=None
        Extra skorch callbacks, e.g. ``[ValidECE(), EarlyStopping(monitor="valid_ece")]``.
    validation_fraction : float or None, default=None
        Hold out this fraction (unstratified, seeded) as skorch's validation split.
    calibration : {"loo", "noise_corrected"}, default="loo"
        Temperature of the ridge head's probabilities (``head="ridge"`` only):
        ``"loo"`` fits it on exact leave-one-out scores against ``pi``;
        ``"noise_corrected"`` fits it through the label-noise channel estimated by
        cleanlab from those leave-one-out probabilities and the votes (see
        ``sklearn_cnat._calibration``). Neither changes a prediction.
    recalibrate_bn : bool, default=True
        After training, re-estimate the module's BatchNorm running statistics on the
        training inputs at the final weights
        (:func:`~sklearn_cnat.models.recalibrate_batchnorm`); no effect without BatchNorm.
    scope : {None, "model", "head"}, default=None
        What the certificates cover. ``None``: "model" when the estimator sees no
        training on these labels (``module="linear"``, or ``max_epochs=0``), else
        "head". Declare ``"head"`` when ``X`` (or a module instance passed in) comes
        from a representation fine-tuned on these same labels: the estimator cannot
        see that, and "model" would then overstate the certificate. ``"model"`` for a
        network trained here raises.
    feature_split : float in (0, 1) or None, default=None
        Split representation: the backbone is trained (CNAT loss) on a seeded
        fraction ``feature_split`` of the rows and frozen; the head is fitted on the
        other rows. No label of a head row reaches the backbone, so certificates have
        scope "model" for the head rows' labels (``Certificate.covers``, ``head_rows_``;
        the backbone rows' labels are not covered). The split depends only on
        ``n_samples`` and ``random_state``; it needs row-wise budgets
        (``NoiseBudget.rowwise``: vote counts or declared classes, a row-wise mapping).
    split_head : {"auto", "disjoint", "all"}, default="auto"
        With ``feature_split``: ``"disjoint"`` fits the head on the rows the backbone did
        not see; ``"all"`` fits the ridge head on every row, the backbone rows' labels
        held fixed in every certificate (they reached the features, so they cannot be
        covered): certificates still cover the other rows' labels, scope "model", now
        with a head of ``n_samples`` rows (docs/certificates.md, Proposition 8.1). Needs
        ``head="ridge"``. ``"auto"``: ``"all"`` for the ridge head with
        ``feature_split``, else ``"disjoint"`` (the robust softmax head cannot hold rows
        fixed); chosen on training labels (docs/benchmarks.md, split mode: the same
        covered-row leave-one-out agreement, higher coverage in every tier). The choice
        made is ``split_head_``.
    pseudo_label_epochs : int or None, default=None
        With ``feature_split``: self-training on the other rows' images, never their
        labels. The backbone trained on its rows (the teacher) labels the other rows'
        images with its softmax (averaged over the test-time views of ``tta``); then a
        fresh network of the same architecture (the student, seeded ``random_state +
        1``) is trained for ``pseudo_label_epochs`` epochs on every row, the backbone
        rows with their CNAT targets and the other rows with the teacher's
        probabilities as nominal and radius 0 (no label smoothing on top), and is the
        backbone the head reads. No label of a covered row reaches it, so certificates
        cover the same rows as without it (docs/certificates.md, section 8.2).
        ``None``: off.
    train_backbone : bool, default=True
        ``False``: the module is a fixed feature map (e.g. a pretrained model loaded
        with ``torch.load(..., weights_only=True)``): nothing is trained but the
        head, BatchNorm statistics are left as loaded, and certificates have scope
        "model" for every row. Needs ``head="ridge"`` or ``"robust_softmax"``.
    precision : {"auto", "float32", "bfloat16", "float16"}, default="auto"
        Autocast dtype of network training. ``"auto"``: bfloat16 on a CPU that
        computes it natively (AMX-BF16 or AVX512-BF16, detected at run time), float32
        on other CPUs, mixed precision on CUDA (see ``sklearn_cnat._precision``).
        The head's training features (one batched pass in ``fit``) are computed under
        the same autocast; served outputs (``predict``, ``feature_map``, ``certify``)
        in float32; the head, certificates and calibration in float64.
    augment : {"auto", None, "flip", "translate", "flip_translate"} or callable, default="auto"
        Seeded on-the-fly augmentation of training batches (random horizontal flip,
        translation by up to 2 pixels with reflect padding). ``"auto"``: flip and
        translate for colour images of at least 16 x 16 pixels, nothing otherwise. A
        callable receives ``(batch, generator)`` and returns the batch.
    tta : {"auto", True, False, "flip", "flip_translate"}, default="auto"
        Test-time augmentation of served logits and features (``predict_proba``,
        ``decision_function``, ``feature_map``, certificates, and the head's training
        features). ``"flip"`` (or ``True``): the mean over the image and its mirror
        image. ``"flip_translate"``: airbench94's multi-crop evaluation, those two
        (weight 1/4 each) and both translated by one pixel up-left and down-right
        (reflect padding, 1/8 each): three times the evaluations. ``"auto"``:
        ``"flip"`` when ``augment`` flips, else off.
    lr_schedule : {None, "onecycle", "cosine"}, default=None
        Per-step learning-rate factor: linear warm-up over the first 20 % of the steps,
        then linear (``"onecycle"``) or cosine decay to 0
        (:class:`~sklearn_cnat.callbacks.WarmupDecay` through skorch's ``LRScheduler``).
    label_smoothing : float in [0, 1), default=0.0
        Network training only: the backbone's CNAT loss reads
        ``(1 - label_smoothing) * pi + label_smoothing / K`` as the nominal, with the
        same radii. Each row's target depends on that row's own ``pi`` only, so
        ``budget.rowwise`` and ``feature_split`` are unaffected; the head, its
        certificates and calibration read the unsmoothed ``pi``.
    elr_lambda : float >= 0, default=0.0
        Network training only: weight ``lambda`` of the early-learning term (Liu et
        al. 2020, eq. 6) added to each row's CNAT loss,
        ``lambda * log(1 - <t_i, p_i>)``, with ``p_i`` the network's softmax
        (clipped to ``[1e-4, 1 - 1e-4]``) and ``t_i`` the running average of its
        past predictions for row ``i`` (``t_i <- elr_beta t_i + (1 - elr_beta) p_i``,
        updated each time the row is in a training batch, starting at 0). It pulls
        the network toward what it predicted early, before it memorises wrong labels.
        ``t_i`` is a function of row ``i``'s own training history, so with
        ``feature_split`` the backbone still never reads a head row's label; the head,
        its certificates and calibration are as without it. ``0``: off.
    elr_beta : float in [0, 1), default=0.7
        Momentum of ``t_i`` (``elr_lambda > 0``).
    ema : float in (0, 1) or None, default=None
        Network training only: keep an exponential moving average of the module's
        parameters over training steps, ``decay = ema`` per step
        (:class:`~sklearn_cnat.callbacks.WeightEMA`), and use it as the trained weights
        (BatchNorm statistics re-estimated at them when ``recalibrate_bn``). ``None``:
        the last weights.
    accelerator : accelerate.Accelerator or None, default=None
        Train through skorch's ``AccelerateMixin`` (Hugging Face accelerate).
    device : str, default="cpu"
    verbose : int, default=0
        0: silent. 1: skorch's per-epoch table and a progress bar.
    random_state : int or None, default=None
        Seeds weight initialisation, shuffling and the smooth-mode sampler. The
        global torch RNG is left as it was.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    budget_ : NoiseBudget
        The fitted per-example budgets.
    net_ : skorch.NeuralNet or None
        The trained network (None for ``module="linear", head="ridge"``, which
        fits the ridge head directly on ``X``).
    coef_, intercept_ : ndarray of shape (n_features, n_classes), (n_classes,)
        The ridge head (``head="ridge"``).
    temperature_ : float
        Temperature of the ridge head's probabilities (``head="ridge"``), fitted on
        leave-one-out training scores (``calibration``).
    train_features_ : ndarray of shape (n_head_rows, n_features)
        Feature map of the head's training rows (``head="ridge"``), kept for
        certificates.
    alpha_ : float
        The regularisation used (``alpha``, or the grid's choice).
    alpha_scores_ : dict or None
        Leave-one-out agreement per candidate when ``alpha`` is a grid.
    head_rows_ : ndarray of bool of shape (n_samples,)
        Rows the head is fitted on (all rows unless ``feature_split`` with
        ``split_head_ == "disjoint"``).
    split_head_ : {"disjoint", "all"}
        ``split_head`` as resolved (``"auto"`` made concrete); ``"disjoint"`` without
        ``feature_split``.
    pseudo_labels_ : ndarray of shape (n_samples - n_backbone_rows, n_classes)
        The teacher's probabilities for the rows it did not train on, in row order
        (``pseudo_label_epochs`` only).
    covered_rows_ : ndarray of bool of shape (n_samples,)
        Rows whose labels the certificates cover (``Certificate.covers``): all rows
        unless ``feature_split``, else the rows the backbone did not train on.
    sample_weight_ : ndarray of shape (n_samples,) or None
        The validated ``sample_weight`` of ``fit`` (None when not given); the head rows'
        weights enter the ridge head and its certificates (docs/certificates.md, section 9).
    tta_ : False, "flip" or "flip_translate"
        The test-time views of served outputs.
    scope_ : {"model", "head"}
        What the certificates cover (``scope``): "model" when the features do not
        depend on the training labels, "head" when they may (the statement is then
        conditional on the learned representation).
    n_features_in_ : int
        Only for 2-D feature matrices.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat import CNATClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(60, 4)); votes = np.eye(3, dtype=int)[rng.randint(0, 3, 60)] * 3
    >>> clf = CNATClassifier(head="ridge", random_state=0).fit(X, votes)
    >>> clf.predict(X[:2]).shape
    (2,)
    """

    def __init__(
        self,
        module="linear",
        *,
        budget=None,
        geometry="l1",
        head="ridge",
        alpha=1.0,
        mode="worst",
        max_epochs=10,
        lr=1e-3,
        batch_size=128,
        optimizer="adam",
        optimizer_kwargs=None,
        module_kwargs=None,
        curriculum_epochs=0,
        callbacks=None,
        validation_fraction=None,
        calibration="loo",
        recalibrate_bn=True,
        scope=None,
        feature_split=None,
        split_head="auto",
        pseudo_label_epochs=None,
        train_backbone=True,
        precision="auto",
        augment="auto",
        tta="auto",
        lr_schedule=None,
        label_smoothing=0.0,
        elr_lambda=0.0,
        elr_beta=0.7,
        ema=None,
        accelerator=None,
        device="cpu",
        verbose=0,
        random_state=None,
    ):
        self.module = module
        self.budget = budget
        self.geometry = geometry
        self.head = head
        self.alpha = alpha
        self.mode = mode
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.optimizer_kwargs = optimizer_kwargs
        self.module_kwargs = module_kwargs
        self.curriculum_epochs = curriculum_epochs
        self.callbacks = callbacks
        self.validation_fraction = validation_fraction
        self.calibration = calibration
        self.recalibrate_bn = recalibrate_bn
        self.scope = scope
        self.feature_split = feature_split
        self.split_head = split_head
        self.pseudo_label_epochs = pseudo_label_epochs
        self.train_backbone = train_backbone
        self.precision = precision
        self.augment = augment
        self.tta = tta
        self.lr_schedule = lr_schedule
        self.label_smoothing = label_smoothing
        self.elr_lambda = elr_lambda
        self.elr_beta = elr_beta
        self.ema = ema
        self.accelerator = accelerator
        self.device = device
        self.verbose = verbose
        self.random_state = random_state

    def set_params(self, **params):
        """Set parameters; ``budget__<name>`` on the default ``budget=None`` builds it first.

        ``budget=None`` means ``NoiseBudgetTransformer()``, so a default-constructed
        estimator can be tuned over ``budget__mapping`` etc. as if it held one.
        """
        if self.budget is None and "budget" not in params and any(k.startswith("budget__") for k in params):
            super().set_params(budget=NoiseBudgetTransformer())
        return super().set_params(**params)

    # ------------------------------------------------------------------ helpers

    def _validate_params(self):
        if self.geometry not in _GEOMETRIES:
            raise CNATValueError(f"geometry must be one of {_GEOMETRIES}, got {self.geometry!r}")
        if self.head not in _HEADS:
            raise CNATValueError(f"head must be one of {_HEADS}, got {self.head!r}")
        if self.mode not in ("worst", "smooth"):
            raise CNATValueError(f"mode must be 'worst' or 'smooth', got {self.mode!r}")
        for name in ("max_epochs", "curriculum_epochs"):
            val = getattr(self, name)
            if not isinstance(val, numbers.Integral) or val < 0:
                raise CNATValueError(f"{name} must be a non-negative integer, got {val!r}")
        if not isinstance(self.batch_size, numbers.Integral) or self.batch_size < 1:
            raise CNATValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.lr, numbers.Real) and self.lr > 0):
            raise CNATValueError(f"lr must be a positive number, got {self.lr!r}")
        _alpha_grid(self.alpha)
        if self.calibration not in ("loo", "noise_corrected"):
            raise CNATValueError(f"calibration must be 'loo' or 'noise_corrected', got {self.calibration!r}")
        if self.calibration != "loo" and self.head != "ridge":
            raise CNATValueError(f"calibration={self.calibration!r} needs head='ridge' (leave-one-out scores); "
                                 f"head={self.head!r} reports the network's softmax")
        if not isinstance(self.recalibrate_bn, (bool, np.bool_)):
            raise CNATValueError(f"recalibrate_bn must be True or False, got {self.recalibrate_bn!r}")
        fs = self.feature_split
        if fs is not None:
            if isinstance(fs, bool) or not (isinstance(fs, numbers.Real) and 0 < fs < 1):
                raise CNATValueError(f"feature_split must be a fraction in (0, 1) or None, got {fs!r}")
            if self.module == "linear":
                raise CNATValueError("feature_split needs a network module (module='linear' has no backbone)")
            if not self.train_backbone:
                raise CNATValueError("feature_split splits the rows between backbone training and the head; "
                                     "with train_backbone=False there is no backbone training")
            if self.head not in ("ridge", "robust_softmax"):
                raise CNATValueError("feature_split needs head='ridge' or 'robust_softmax' (the head fitted on "
                                     "the rows the backbone did not see)")
        if self.split_head not in ("auto", "disjoint", "all"):
            raise CNATValueError(f"split_head must be 'auto', 'disjoint' or 'all', got {self.split_head!r}")
        if self.split_head == "all" and (fs is None or self.head != "ridge"):
            raise CNATValueError("split_head='all' needs feature_split and head='ridge' (the exact engine holds "
                                 "the backbone rows' labels fixed; docs/certificates.md, Proposition 8.1)")
        ple = self.pseudo_label_epochs
        if ple is not None:
            if isinstance(ple, bool) or not isinstance(ple, numbers.Integral) or ple < 1:
                raise CNATValueError(f"pseudo_label_epochs must be a positive integer or None, got {ple!r}")
            if fs is None:
                raise CNATValueError("pseudo_label_epochs needs feature_split: the teacher trains on the backbone "
                                     "rows and labels the other rows' images")
            if not self.max_epochs:
                raise CNATValueError("pseudo_label_epochs needs max_epochs > 0: the teacher that labels the other "
                                     "rows' images is the backbone trained for max_epochs")
        if not isinstance(self.train_backbone, (bool, np.bool_)):
            raise CNATValueError(f"train_backbone must be True or False, got {self.train_backbone!r}")
        if not self.train_backbone:
            if self.module == "linear" or not isinstance(self.module, nn.Module) and not callable(self.module):
                raise CNATValueError("train_backbone=False needs a module (a trained torch.nn.Module instance, "
                                     "or a factory) to use as a fixed feature map")
            if self.head not in ("ridge", "robust_softmax"):
                raise CNATValueError("train_backbone=False needs head='ridge' or 'robust_softmax': nothing else "
                                     "is trained")
        from ._precision import _autocast_dtype

        _autocast_dtype(self.precision, self.device)
        if self.lr_schedule not in (None, "onecycle", "cosine"):
            raise CNATValueError(f"lr_schedule must be None, 'onecycle' or 'cosine', got {self.lr_schedule!r}")
        ls = self.label_smoothing
        if isinstance(ls, bool) or not (isinstance(ls, numbers.Real) and 0 <= ls < 1):
            raise CNATValueError(f"label_smoothing must be a number in [0, 1), got {ls!r}")
        lam, beta = self.elr_lambda, self.elr_beta
        if isinstance(lam, bool) or not (isinstance(lam, numbers.Real) and np.isfinite(lam) and lam >= 0):
            raise CNATValueError(f"elr_lambda must be a finite number >= 0, got {lam!r}")
        if isinstance(beta, bool) or not (isinstance(beta, numbers.Real) and 0 <= beta < 1):
            raise CNATValueError(f"elr_beta must be a number in [0, 1), got {beta!r}")
        if self.ema is not None:
            from .callbacks import _check_ema_decay

            _check_ema_decay(self.ema, "ema")
        if self.scope not in (None, "model", "head"):
            raise CNATValueError(f"scope must be None, 'model' or 'head', got {self.scope!r}")
        vf = self.validation_fraction
        if vf is not None and not (isinstance(vf, numbers.Real) and 0 < vf < 1):
            raise CNATValueError(f"validation_fraction must be in (0, 1) or None, got {vf!r}")
        _resolve_optimizer(self.optimizer)

    def _resolve_scope(self):
        """``scope_``: declared, or "model" when no label the certificate covers reaches the features."""
        trained = self.module != "linear" and self.max_epochs > 0 and self.train_backbone
        covered_reach_features = trained and self.feature_split is None
        if self.scope is None:
            return "head" if covered_reach_features else "model"
        if self.scope == "model" and covered_reach_features:
            raise CNATValueError(
                f"scope='model' is not sound here: the network is trained for {self.max_epochs} epoch(s) on "
                "these labels, so the features depend on them; use scope='head' (or None), "
                "feature_split=... (backbone and head on disjoint rows), train_backbone=False (a frozen "
                "backbone), or PartitionAggregationClassifier"
            )
        return self.scope

    def _prepare_inputs(self, X, *, fit):
        """Return (inputs, n_samples) where inputs is a float32 array or a torch Dataset."""
        if _is_torch_dataset(X):
            if fit:
                self._input_kind = "dataset"
            elif getattr(self, "_input_kind", None) != "dataset":
                raise CNATValueError("this classifier was fitted on arrays; pass an array, not a torch Dataset")
            return X, len(X)
        arr, kind = _as_array_inputs(X)
        if fit:
            self._input_kind = kind
            if kind == "features":
                self.n_features_in_ = arr.shape[1]
            elif hasattr(self, "n_features_in_"):
                del self.n_features_in_
            self._input_shape = arr.shape[1:]
        else:
            if kind == "features" and hasattr(self, "n_features_in_") and arr.shape[1] != self.n_features_in_:
                raise CNATValueError(
                    f"X has {arr.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            if arr.shape[1:] != self._input_shape:
                raise CNATValueError(f"X has sample shape {arr.shape[1:]}, but the classifier was fitted on "
                                     f"sample shape {self._input_shape}")
        if len(arr) == 0:
            raise CNATValueError("X has 0 samples; at least one is required")
        return arr, len(arr)

    def _fit_budget(self, y, n_samples):
        if isinstance(y, NoiseBudget):
            budget = y
        else:
            if y is None:
                raise CNATValueError(f"{type(self).__name__} requires y to be passed, but the target y is None "
                                     "(label evidence: votes, annotator labels or labels)")
            y = _check_label_evidence(y)
            transformer = NoiseBudgetTransformer() if self.budget is None else clone(self.budget)
            budget = transformer.fit_transform(y)
            self.budget_transformer_ = transformer
        if len(budget) != n_samples:
            raise CNATValueError(f"X has {n_samples} samples but y has {len(budget)}; they must match")
        if budget.pi.shape[1] < 2:
            raise CNATValueError("the label evidence has only one class; a classifier needs at least 2 classes")
        if self.geometry in ("kl", "kl_l1") and not np.all(np.isfinite(budget.rho)):
            raise CNATValueError(
                f"geometry={self.geometry!r} needs finite KL radii, but {int((~np.isfinite(budget.rho)).sum())} "
                "rows have rho = inf (mapping='posterior' with a pi that lacks full support: a KL ball around "
                "it cannot hold the posterior); set NoiseBudgetTransformer(smoothing=...) > 0 or use geometry='l1'")
        return budget

    def _targets(self, budget, sample_weight=None):
        """Network targets of ``budget``'s rows (label smoothing applied): see ``_target_tensor``."""
        rho = budget.rho if self.geometry != "l1" else np.zeros(len(budget))  # l1 reads no KL radius
        return self._target_tensor(self._smoothed(budget.pi), budget.r, rho, sample_weight)

    def _smoothed(self, pi):
        if self.label_smoothing:
            return (1.0 - self.label_smoothing) * pi + self.label_smoothing / pi.shape[1]
        return pi

    def _target_tensor(self, pi, r, rho, sample_weight=None):
        """``[pi, r, rho]`` (n, K + 2); with weights, ``w_i / mean(w)`` as column K + 2; with the
        early-learning term, the row index ``0 .. n - 1`` as the last column."""
        cols = [pi, r[:, None], rho[:, None]]
        if sample_weight is not None:
            cols.append((sample_weight / sample_weight.mean())[:, None])
        if self.elr_lambda:
            if len(pi) > 2**24:
                raise CNATValueError(f"elr_lambda > 0 supports at most 2**24 training rows (the row index travels "
                                     f"as a float32 target column), got {len(pi)}")
            cols.append(np.arange(len(pi), dtype=np.float64)[:, None])
        t = np.concatenate(cols, axis=1)
        return torch.as_tensor(t, dtype=torch.float32)

    def _check_weights_supported(self, sample_weight, backbone_rows, head_rows):
        """Refuse what cannot honour the weights; never ignore them (docs/certificates.md, section 9)."""
        if sample_weight is None:
            return
        trains_head = self.head in ("ridge", "robust_softmax")
        if self.head == "robust_softmax":
            raise CNATValueError(
                "sample_weight is not supported with head='robust_softmax': its fit and its certificate's "
                "sensitivity bound (docs/certificates_softmax.md) are for the unweighted objective; use "
                "head='ridge' (weighted exact certificates) or head='softmax'")
        if self.head == "ridge" and self.calibration == "noise_corrected":
            raise CNATValueError(
                "sample_weight is not supported with calibration='noise_corrected': the noise channel is "
                "estimated from unweighted votes; use calibration='loo' (weighted leave-one-out temperature)")
        trains_net = self.module != "linear" and self.max_epochs > 0 and self.train_backbone
        if trains_net and not sample_weight[backbone_rows].sum() > 0:
            raise CNATValueError("sample_weight is 0 on every row the network trains on (the backbone rows of "
                                 "feature_split): the weighted loss would be 0")
        if trains_head and not sample_weight[head_rows].sum() > 0:
            raise CNATValueError("sample_weight is 0 on every row the ridge head is fitted on (the head rows of "
                                 "feature_split): the weighted head is not defined")

    def _held_rows(self):
        """Head rows whose labels every certificate holds fixed, bool (n_head_rows,): the backbone
        rows with ``split_head="all"`` (docs/certificates.md, Proposition 8.1), else none."""
        return ~self.covered_rows_[self.head_rows_]

    def _head_weights(self):
        """Weights of the head's training rows, or None."""
        w = getattr(self, "sample_weight_", None)
        return None if w is None else w[self.head_rows_]

    def _seed(self):
        rs = self.random_state
        if rs is None:
            return None
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2**31 - 1))
        return int(rs)

    def _build_net(self, inputs, n_classes, seed, n_train=None, augment_fn=None, max_epochs=None):
        n_features = inputs.shape[1] if self._input_kind == "features" else None
        in_channels = inputs.shape[1] if self._input_kind == "images" else None
        module = _instantiate_module(self.module, n_features, n_classes, in_channels, self.module_kwargs)
        from skorch.callbacks import ProgressBar
        from skorch.dataset import ValidSplit

        from .callbacks import BudgetCurriculum
        from .losses import CNATLoss

        max_epochs = self.max_epochs if max_epochs is None else max_epochs
        callbacks = list(self.callbacks or [])
        if self.curriculum_epochs:
            callbacks.append(("budget_curriculum", BudgetCurriculum(self.curriculum_epochs)))
        if self.verbose:
            callbacks.append(("progress_bar", ProgressBar()))
        if self.ema is not None:
            from .callbacks import WeightEMA

            callbacks.append(("weight_ema", WeightEMA(self.ema)))
        if self.lr_schedule is not None and max_epochs:
            from skorch.callbacks import LRScheduler

            from .callbacks import WarmupDecay

            n_fit = n_train if n_train is not None else len(inputs)
            if self.validation_fraction is not None:
                n_fit = n_fit - int(np.ceil(self.validation_fraction * n_fit))
            steps = max_epochs * max(1, int(np.ceil(n_fit / self.batch_size)))
            callbacks.append(("lr_schedule", LRScheduler(
                policy=torch.optim.lr_scheduler.LambdaLR, step_every="batch",
                lr_lambda=WarmupDecay(steps, shape="linear" if self.lr_schedule == "onecycle" else "cosine"))))
        train_split = None
        if self.validation_fraction is not None:
            train_split = ValidSplit(self.validation_fraction, stratified=False, random_state=seed)
        opt = _resolve_optimizer(self.optimizer)
        kwargs = {f"optimizer__{k}": v for k, v in (self.optimizer_kwargs or {}).items()}
        net_cls, device = _CNATNet, self.device
        if self.accelerator is not None:
            from ._accelerate import _AcceleratedCNATNet  # imports accelerate: only when asked

            net_cls, device = _AcceleratedCNATNet, None  # the accelerator places the tensors
            kwargs["accelerator"] = self.accelerator
        net = net_cls(
            module=module,
            criterion=CNATLoss,
            criterion__reduction="none" if getattr(self, "sample_weight_", None) is not None or self.elr_lambda
            else "mean",
            criterion__geometry=self.geometry,
            criterion__mode=self.mode,
            criterion__random_state=seed,
            optimizer=opt,
            lr=self.lr,
            max_epochs=max_epochs,
            batch_size=self.batch_size,
            train_split=train_split,
            iterator_train__shuffle=True,
            callbacks=callbacks,
            predict_nonlinearity=_softmax,
            device=device,
            verbose=self.verbose,
            **kwargs,
        )
        from ._precision import _autocast_dtype

        if self.accelerator is None:
            net.autocast_dtype = _autocast_dtype(self.precision, self.device)
        net.channels_last = self._input_kind == "images"
        if self.elr_lambda:
            net.elr_lambda, net.elr_beta = float(self.elr_lambda), float(self.elr_beta)
            net.elr_memory = torch.zeros(n_train if n_train is not None else len(inputs), n_classes)
        net.augment_fn = augment_fn
        net.augment_generator = torch.Generator().manual_seed(
            seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0]))
        return net

    def _check_module_output(self, net, dataset, n_classes):
        net.initialize()
        x0 = dataset[0][0].unsqueeze(0)
        module = net.module_
        was_training = module.training
        module.eval()
        try:
            with torch.no_grad():
                out = module(x0.to(net.device))
        except Exception as exc:  # noqa: BLE001 - re-raised with context
            raise CNATValueError(
                f"the module could not process one input of shape {tuple(x0.shape[1:])}: {exc}"
            ) from exc
        finally:
            module.train(was_training)
        if out.ndim != 2 or out.shape[1] != n_classes:
            raise CNATValueError(
                f"the module outputs logits of shape {tuple(out.shape[1:])} per sample, but the label "
                f"evidence has K={n_classes} classes; build the module with num_classes={n_classes}"
            )

    # ------------------------------------------------------------------ fit / predict

    def fit(self, X, y=None, sample_weight=None):
        """Fit on inputs ``X`` and label evidence ``y``, optionally with row weights.

        Parameters
        ----------
        X : ndarray, torch.Tensor or torch Dataset
            Feature matrix (n, d); images (n, C, H, W) float, or uint8 (n, H, W, C)
            / (n, C, H, W), scaled to [0, 1]; grayscale (n, H, W); or a torch
            Dataset yielding inputs (or tuples whose first item is the input).
        y : array-like or NoiseBudget
            Vote counts (n, K), annotator labels (n, M) with NaN/-1 missing,
            labels (n,), or a precomputed :class:`~sklearn_cnat.budgets.NoiseBudget`.
        sample_weight : array-like of shape (n,), float or None, default=None
            Row weights ``>= 0`` (finite, not all zero; a float weights every row alike).
            The ridge head is ``Ridge(alpha).fit(F, pi, sample_weight=w)`` (weighted
            centring) and its certificates use the weighted influence
            (docs/certificates.md, section 9); an ``alpha`` grid uses the weighted
            leave-one-out; a network's CNAT loss is ``mean(w_i loss_i) / mean(w)``. With
            ``feature_split`` the backbone rows' weights weight the network's loss and the
            head rows' weights the head. ``head="robust_softmax"`` and
            ``calibration="noise_corrected"`` raise ``CNATValueError`` with weights.

        Returns
        -------
        self
        """
        self._validate_params()
        inputs, n = self._prepare_inputs(X, fit=True)
        sample_weight = _validate_sample_weight(sample_weight, n)
        budget = self._fit_budget(y, n)
        seed = self._seed()
        backbone_rows, other_rows = self._split_rows(n, budget, seed)
        split_head = _resolve_split_head(self.split_head, self.feature_split, self.head)
        head_rows = np.arange(n) if split_head == "all" else other_rows
        self._check_weights_supported(sample_weight, backbone_rows, head_rows)
        self.budget_ = budget
        self.sample_weight_ = sample_weight
        self.classes_ = np.asarray(budget.classes_)
        k = len(self.classes_)
        self.scope_ = self._resolve_scope()
        self.covered_rows_ = np.zeros(n, dtype=bool)
        self.covered_rows_[other_rows] = True
        if hasattr(self, "pseudo_labels_"):
            del self.pseudo_labels_
        self.split_head_ = split_head
        self.head_rows_ = np.zeros(n, dtype=bool)
        self.head_rows_[head_rows] = True

        if self.module == "linear" and self.head in ("ridge", "robust_softmax"):
            # the head alone, on the given features: no network to train
            self.net_ = None
            self.tta_ = False
            if self._input_kind != "features":
                raise CNATValueError("module='linear' needs a 2-D feature matrix X of shape (n_samples, n_features)")
            self._fit_head(inputs.astype(np.float64))
            return self

        from ._augment import _resolve_augment, _resolve_tta

        shape = getattr(self, "_input_shape", None)
        augment_fn = _resolve_augment(self.augment, self._input_kind, shape)
        self.tta_ = _resolve_tta(self.tta, augment_fn, self._input_kind)
        train_inputs = _take(inputs, backbone_rows)
        backbone_weights = None if sample_weight is None else sample_weight[backbone_rows]
        dataset = _EvidenceDataset(train_inputs, self._targets(budget[backbone_rows], backbone_weights))
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            net = self._build_net(inputs, k, seed, n_train=len(backbone_rows), augment_fn=augment_fn)
            self._check_module_output(net, dataset, k)
            if net.channels_last:
                net.module_.to(memory_format=torch.channels_last)
            if self.max_epochs and self.train_backbone:
                _init_from_data(net.module_, dataset, seed)
                net.partial_fit(dataset, y=None)  # initialised above; partial_fit keeps those weights
                if self.recalibrate_bn:
                    _recalibrate_net_batchnorm(net, dataset)
        if self.pseudo_label_epochs:
            net = self._fit_student(net, inputs, budget, backbone_rows, sample_weight, seed, augment_fn)
        self.net_ = net
        if self.head in ("ridge", "robust_softmax"):
            self._fit_head(self._features(_take(inputs, head_rows), served=False))
        return self

    def _fit_student(self, teacher, inputs, budget, backbone_rows, sample_weight, seed, augment_fn):
        """Self-training (``pseudo_label_epochs``): the student network trained on every row, the
        rows the teacher did not see with its test-time-view softmax as nominal (docs/certificates.md,
        section 8.2). Reads ``budget`` on ``backbone_rows`` only."""
        from ._inference import _forward_batched

        n, k = len(budget), budget.pi.shape[1]
        other = np.setdiff1d(np.arange(n), backbone_rows)
        logits = _forward_batched(teacher.module_, self._loader_inputs(_take(inputs, other)), tta=self.tta_,
                                  autocast_dtype=teacher.autocast_dtype, channels_last=teacher.channels_last)[0]
        pi, r, rho = np.zeros((n, k)), np.zeros(n), np.zeros(n)
        pi[other] = _softmax(torch.as_tensor(logits)).numpy()
        nominal = budget[backbone_rows]
        pi[backbone_rows], r[backbone_rows] = self._smoothed(nominal.pi), nominal.r
        if self.geometry != "l1":
            rho[backbone_rows] = nominal.rho
        self.pseudo_labels_ = pi[other]
        dataset = _EvidenceDataset(inputs, self._target_tensor(pi, r, rho, sample_weight))
        student_seed = None if seed is None else seed + 1
        with torch.random.fork_rng(devices=[]):
            if student_seed is not None:
                torch.manual_seed(student_seed)
            net = self._build_net(inputs, k, student_seed, n_train=n, augment_fn=augment_fn,
                                  max_epochs=self.pseudo_label_epochs)
            net.initialize()
            if net.channels_last:
                net.module_.to(memory_format=torch.channels_last)
            _init_from_data(net.module_, dataset, student_seed)
            net.partial_fit(dataset, y=None)
            if self.recalibrate_bn:
                _recalibrate_net_batchnorm(net, dataset)
        return net

    def _split_rows(self, n, budget, seed):
        """Rows the backbone trains on and rows the head is fitted on (``feature_split``)."""
        rows = np.arange(n)
        if self.feature_split is None:
            return rows, rows
        if not budget.rowwise:
            raise CNATValueError(
                "feature_split needs row-wise budgets (budget.rowwise): with these budgets a row's radii "
                "or pi depend on other rows' labels (mapping='piecewise', pred_probs, classes inferred from "
                "1-D labels, annotator matrices under evidence='auto', or a hand-built NoiseBudget), so the "
                "backbone would depend on the head rows' labels; pass vote counts or "
                "NoiseBudgetTransformer(classes=...) with a row-wise mapping"
            )
        perm = np.random.RandomState(0 if seed is None else seed).permutation(n)
        n_backbone = int(round(self.feature_split * n))
        if n_backbone < 1 or n - n_backbone < 2:
            raise CNATValueError(f"feature_split={self.feature_split} leaves {n_backbone} backbone row(s) and "
                                 f"{n - n_backbone} head row(s) of {n}; both parts need rows (the head at least 2)")
        return np.sort(perm[:n_backbone]), np.sort(perm[n_backbone:])

    def _head_budget(self):
        return self.budget_ if self.head_rows_.all() else self.budget_[np.flatnonzero(self.head_rows_)]

    def _fit_head(self, features):
        if self.head == "ridge":
            self._fit_ridge_head(features)
        else:
            self._fit_robust_softmax_head(features)

    def _fit_ridge_head(self, features):
        from .certificates._ridge import _ridge_fit

        from ._calibration import (
            _fit_noise_corrected_temperature,
            _fit_temperature,
            _noise_channel,
            _ridge_loo_scores,
        )

        self.train_features_ = np.asarray(features, dtype=np.float64)
        head_budget = self._head_budget()
        pi = head_budget.pi
        w = self._head_weights()
        grid = _alpha_grid(self.alpha)
        if len(grid) == 1:
            self.alpha_, self.alpha_scores_ = grid[0], None
        else:
            from ._alpha import _loo_alpha

            self.alpha_, self.alpha_scores_ = _loo_alpha(self.train_features_, pi, grid, w)
        alpha = self.alpha_
        self.coef_, self.intercept_ = _ridge_fit(self.train_features_, pi, alpha, w)
        loo = _ridge_loo_scores(self.train_features_, pi, alpha, self.coef_, self.intercept_, w)
        self.temperature_ = _fit_temperature(loo, pi, sample_weight=w)
        if self.calibration == "noise_corrected":
            counts = head_budget.counts
            channel = _noise_channel(counts, scipy.special.softmax(loo / self.temperature_, axis=1))
            self.temperature_ = _fit_noise_corrected_temperature(loo, counts, channel)

    def _fit_robust_softmax_head(self, features):
        from .certificates._softmax import fit_robust_softmax_head

        self.train_features_ = np.asarray(features, dtype=np.float64)
        grid = _alpha_grid(self.alpha)
        if len(grid) != 1:
            raise CNATValueError("head='robust_softmax' needs one alpha; a grid of alphas is chosen by exact "
                                 "leave-one-out only for head='ridge'")
        self.alpha_, self.alpha_scores_ = grid[0], None
        self.coef_, self.intercept_, self.grad_norm_ = fit_robust_softmax_head(
            self.train_features_, self._head_budget(), alpha=self.alpha_, geometry=self.geometry
        )

    def _loader_inputs(self, inputs):
        k = len(self.classes_)
        return _EvidenceDataset(inputs, torch.zeros(len(inputs), k + 2))

    def _features(self, inputs, served=True):
        """Feature map (input of the last linear layer) as float64 (n, d).

        ``served=True``: every point evaluated alone in float32 (batch-invariant, what
        ``predict`` and ``certify`` read); ``served=False``: in batches under the
        training autocast (the training features the head is fitted on, computed once
        in ``fit``). Both average over the test-time views of ``tta_``.
        """
        if self.net_ is None:
            return np.asarray(inputs, dtype=np.float64)
        from ._inference import _forward_batched, _forward_per_point

        dataset = self._loader_inputs(inputs)
        if served:
            return _forward_per_point(self.net_.module_, dataset, features=True, tta=self.tta_)[1]
        return _forward_batched(self.net_.module_, dataset, features=True, tta=self.tta_,
                                autocast_dtype=self.net_.autocast_dtype, channels_last=self.net_.channels_last)[1]

    def _check_fitted(self):
        if not hasattr(self, "budget_"):
            raise NotFittedError(
                f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with appropriate "
                "arguments before using this estimator."
            )

    def feature_map(self, X):
        """Feature map of ``X``: the input of the module's last linear layer.

        For ``module="linear"`` this is ``X`` itself. These are the features the
        ridge head and its certificates are computed on.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features), float64
        """
        self._check_fitted()
        inputs, _ = self._prepare_inputs(X, fit=False)
        return self._features(inputs)

    def decision_function(self, X):
        """Confidence scores: ridge scores or network logits.

        Returns
        -------
        scores : ndarray of shape (n_samples, n_classes), or (n_samples,) for two classes
            For two classes, scikit-learn's convention: ``score_1 - score_0``
            (positive means ``classes_[1]``).
        """
        scores = self._scores(X)
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def _scores(self, X):
        """Scores of shape (n_samples, n_classes)."""
        self._check_fitted()
        inputs, _ = self._prepare_inputs(X, fit=False)
        if self.head in ("ridge", "robust_softmax"):
            return self._head_scores(self._features(inputs))
        from ._inference import _forward_per_point

        return _forward_per_point(self.net_.module_, self._loader_inputs(inputs), tta=self.tta_)[0]

    def predict_proba(self, X):
        """Class probabilities of shape (n_samples, n_classes).

        Softmax of the logits for ``head="softmax"``. For ``head="ridge"``,
        ``softmax(scores / temperature_)`` with the temperature fitted on the
        exact leave-one-out ridge scores of the training set against the nominal
        labels (see ``sklearn_cnat._calibration``); it keeps the arg-max.
        """
        scores = self._scores(X)
        if self.head == "ridge":
            scores = scores / self.temperature_
        z = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        """Predicted class labels (arg-max score, ties to the lowest class index)."""
        scores = self._scores(X)
        return self.classes_[np.argmax(scores, axis=1)]

    def score(self, X, y, sample_weight=None):
        """Accuracy against the plurality vote of ``y`` (votes, annotator labels or labels)."""
        from sklearn.metrics import accuracy_score

        self._check_fitted()
        if isinstance(y, NoiseBudget):
            truth = self.classes_[y.labels]
        elif getattr(self, "budget_transformer_", None) is not None and np.ndim(y) == 2 and np.shape(y)[1] > 1:
            truth = self.classes_[self.budget_transformer_.transform(y).labels]
        else:
            truth = np.asarray(y).ravel()
        return accuracy_score(truth, self.predict(X), sample_weight=sample_weight)

    # ------------------------------------------------------------------ certificates

    def certify(self, X, tier="stochastic", m=None, delta=0.05, reference=None):
        """Certify the predictions on ``X`` against changes of the training labels.

        Engines: ``head="ridge"``, exact, all tiers (docs/certificates.md);
        ``head="robust_softmax"``, sensitivity bound, tiers bounded and flip
        (docs/certificates_softmax.md). ``head="softmax"`` and unsupported tiers
        raise :class:`~sklearn_cnat.exceptions.CertificationError` rather than
        issue an unsound certificate (use
        :class:`~sklearn_cnat.partition.PartitionAggregationClassifier` for
        whole-network certificates).

        Parameters
        ----------
        X : array-like
            Test inputs, as for ``predict``.
        tier : {"stochastic", "bounded", "flip"}, default="stochastic"
        m : int or None
            Number of flipped training labels for tier "flip".
        delta : float, default=0.05
            Failure probability for tier "stochastic".
        reference : {"expected", "reannotation"} or None, default=None
            Tier "stochastic" (``head="ridge"``): compare with the learner trained on the
            expected nominal (``"expected"``, what ``None`` means; Theorem 4) or refitted on
            a fresh re-annotation by the same annotators (``"reannotation"``; Theorem 5 of
            docs/certificates.md). Must be None for the other tiers.

        Returns
        -------
        Certificate
        """
        self._check_fitted()
        if reference is not None and tier != "stochastic":
            raise CertificationError(f"reference is only used by tier='stochastic' (what a fresh draw of the "
                                     f"votes is compared with), got reference={reference!r} with tier={tier!r}")
        if self.head == "softmax":
            raise CertificationError(
                "CNATClassifier(head='softmax') has no sound certificate engine: a network head trained "
                "by stochastic gradients is not the exact minimiser any proof needs; use head='ridge' "
                "(exact certificates on the feature map), head='robust_softmax', or "
                "PartitionAggregationClassifier for whole-network certificates"
            )
        inputs, _ = self._prepare_inputs(X, fit=False)
        common = dict(alpha=self.alpha_, tier=tier, geometry=self.geometry, m=m, delta=delta,
                      scope=self.scope_, classes=self.classes_)
        from .certificates._certificate import _warn_trivial_kl

        head_budget = self._head_budget()
        _warn_trivial_kl(head_budget.pi, head_budget.rho, self.geometry, tier)
        features = self._features(inputs)
        if self.head == "ridge":
            from .certificates import certify_ridge

            held = self._held_rows()
            cert = certify_ridge(self.train_features_, head_budget, features, reference=reference,
                                 sample_weight=self._head_weights(), fixed_rows=held if held.any() else None,
                                 **common)
        else:
            from .certificates._softmax import certify_softmax_head

            cert = certify_softmax_head(self.train_features_, head_budget, features, coef=self.coef_,
                                        intercept=self.intercept_, grad_norm=self.grad_norm_, **common)
        served = np.argmax(self._head_scores(features), axis=1)
        cert = _served_certificate(cert, self.classes_[served])
        import dataclasses

        certified = cert.certified
        if tier == "flip" and self._classes_inferred():
            # docs/certificates.md, section 8, "Classes": with classes read off the labels, m flips
            # can remove a class from the list; the served class must keep more than m rows.
            support = (self.budget_.pi > 0).sum(axis=0)
            certified = certified & (support[served] > cert.m)
        return dataclasses.replace(cert, covers=self.covered_rows_.copy(), certified=certified)

    def _classes_inferred(self):
        """Whether ``classes_`` was read off the labels (not declared, not vote-count columns)."""
        transformer = getattr(self, "budget_transformer_", None)
        if transformer is None:
            return False  # a NoiseBudget passed in declares its classes
        return getattr(transformer, "classes", None) is None and getattr(transformer, "evidence_", None) != "counts"

    def _head_scores(self, features):
        from .certificates._ridge import _ridge_scores

        return _ridge_scores(features, self.coef_, self.intercept_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        head_only = self.module == "linear" and self.head in ("ridge", "robust_softmax")  # closed form / L-BFGS
        tags.non_deterministic = self.random_state is None and not head_only
        return tags
