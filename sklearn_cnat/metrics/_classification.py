"""Classification metrics whose ground truth may be a vote-count matrix.

Every function accepts ``y_true`` either as 1-D class labels or as a vote-count
matrix of shape ``(n_samples, n_classes)`` whose entry ``(i, j)`` counts the
annotators who gave example ``i`` the class of column ``j``. A column vector
``(n_samples, 1)`` is read as labels. From a vote matrix ``V`` the functions derive

* the vote distribution ``t_i = V_i / sum_j V_ij`` (rows must hold a vote), and
* the plurality label ``argmax_j V_ij``, ties going to the lowest column index.

``labels`` names the class of each column (of ``V`` and of ``y_prob``); it
defaults to ``0, ..., K-1``. Formulas and conventions are collected in
``docs/metrics.md``.
"""

from numbers import Integral, Real

import numpy as np
from sklearn.metrics import label_ranking_average_precision_score
from sklearn.utils import check_array, check_consistent_length, column_or_1d

from .._compat import Interval, StrOptions, validate_params
from ..exceptions import CNATTypeError, CNATValueError

__all__ = [
    "ambiguity_accuracy_score",
    "brier_score",
    "certified_accuracy_score",
    "cnr_coverage_score",
    "expected_calibration_error",
    "log_loss_votes",
    "nll_score",
    "plausible_label_map",
    "plurality_accuracy_score",
]


# --------------------------------------------------------------------------- #
# Input validation (private; each public function validates once)
# --------------------------------------------------------------------------- #


def _check_y_true(y_true):
    """Split ``y_true`` into labels or a vote matrix.

    Returns
    -------
    kind : {"labels", "votes"}
    y : ndarray of shape (n_samples,) for labels, float64 (n_samples, n_classes)
        for votes.
    """
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        if y.shape[0] == 0:
            raise CNATValueError("y_true is empty: at least one sample is required.")
        return "labels", y
    if y.ndim != 2:
        raise CNATValueError(
            "y_true must be 1-D labels or a 2-D vote-count matrix of shape "
            f"(n_samples, n_classes); got an array of shape {y.shape}."
        )
    votes = check_array(y, dtype=np.float64, input_name="y_true")
    if np.any(votes < 0):
        raise CNATValueError("A vote-count matrix y_true must not hold negative counts.")
    empty = np.flatnonzero(votes.sum(axis=1) <= 0)
    if empty.size:
        raise CNATValueError(
            "Every row of a vote-count matrix y_true needs at least one vote; "
            f"rows {empty[:10].tolist()} have none."
        )
    return "votes", votes


def _check_labels(labels, n_classes, what):
    labels = column_or_1d(np.asarray(labels))
    if labels.shape[0] != n_classes:
        raise CNATValueError(
            f"labels has {labels.shape[0]} entries but {what} has {n_classes} "
            "columns; pass one label per column."
        )
    if np.unique(labels).shape[0] != n_classes:
        raise CNATValueError("labels must not contain duplicates.")
    return labels


def _default_labels(y, n_classes):
    """Classes of the columns when ``labels=None`` and ``y_true`` holds labels."""
    y_num = y
    if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        y_num = y.astype(np.int64)
    if y_num.dtype.kind in "iu" and y_num.min() >= 0 and y_num.max() < n_classes:
        return np.arange(n_classes)
    classes = np.unique(y)
    if classes.shape[0] != n_classes:
        raise CNATValueError(
            f"y_true holds {classes.shape[0]} distinct labels {classes[:10].tolist()} "
            f"but y_prob has {n_classes} columns; pass labels= to name the class of "
            "each column."
        )
    return classes


def _encode(y, labels, what):
    """Column index of each entry of ``y`` in ``labels``; unknown entries raise."""
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    try:
        pos = np.searchsorted(sorted_labels, y)
    except TypeError as exc:
        raise CNATValueError(
            f"{what} and labels {labels[:10].tolist()} have incomparable types."
        ) from exc
    pos = np.clip(pos, 0, sorted_labels.shape[0] - 1)
    unknown = sorted_labels[pos] != y
    if np.any(unknown):
        raise CNATValueError(
            f"{what} contains values {np.unique(y[unknown])[:10].tolist()} that are "
            f"not in labels {labels[:10].tolist()}; pass labels= to name the class "
            "of each column."
        )
    return order[pos]


def _check_weights(sample_weight, n_samples):
    if sample_weight is None:
        return None
    sw = column_or_1d(check_array(sample_weight, ensure_2d=False, dtype=np.float64))
    if sw.shape[0] != n_samples:
        raise CNATValueError(
            f"sample_weight has {sw.shape[0]} entries for {n_samples} samples."
        )
    if np.any(sw < 0) or sw.sum() <= 0:
        raise CNATValueError("sample_weight must be non-negative with a positive sum.")
    return sw


def _check_proba(y_prob):
    prob = check_array(
        y_prob, ensure_2d=False, dtype=[np.float64, np.float32], input_name="y_prob"
    )
    if prob.ndim == 2 and prob.shape[1] == 1:
        prob = prob[:, 0]
    if prob.ndim == 1:  # probability of the positive class (second column)
        prob = np.column_stack([1.0 - prob, prob])
    if prob.ndim != 2:
        raise CNATValueError(f"y_prob must be 1-D or 2-D; got shape {prob.shape}.")
    if np.any(prob < 0) or np.any(prob > 1):
        raise CNATValueError("y_prob must hold probabilities in [0, 1].")
    return prob


def _targets_and_proba(y_true, y_prob, labels, sample_weight):
    """Validate a probabilistic-metric call.

    Returns
    -------
    target : ndarray of shape (n_samples, n_classes)
        One-hot labels or the vote distribution.
    hard : ndarray of shape (n_samples,)
        Column index of the label, or of the plurality vote.
    prob : ndarray of shape (n_samples, n_classes)
    sample_weight : ndarray of shape (n_samples,) or None
    """
    prob = _check_proba(y_prob)
    kind, y = _check_y_true(y_true)
    check_consistent_length(y, prob)
    n_samples, n_classes = prob.shape
    if kind == "votes":
        if y.shape[1] != n_classes:
            raise CNATValueError(
                f"The vote matrix y_true has {y.shape[1]} columns but y_prob has "
                f"{n_classes}."
            )
        if labels is not None:
            _check_labels(labels, n_classes, "y_prob")
        target = y / y.sum(axis=1, keepdims=True)
        hard = _plurality(y)
    else:
        labels = (
            _default_labels(y, n_classes)
            if labels is None
            else _check_labels(labels, n_classes, "y_prob")
        )
        hard = _encode(y, labels, "y_true")
        target = np.zeros((n_samples, n_classes))
        target[np.arange(n_samples), hard] = 1.0
    return target, hard, prob, _check_weights(sample_weight, n_samples)


def _targets_and_pred(y_true, y_pred, labels):
    """Validate a label-metric call.

    Returns ``("votes", votes, pred_index)`` with the column index of each
    prediction, or ``("labels", y_true, y_pred)``.
    """
    kind, y = _check_y_true(y_true)
    pred = column_or_1d(np.asarray(y_pred))
    check_consistent_length(y, pred)
    if kind == "labels":
        return kind, y, pred
    labels = (
        np.arange(y.shape[1])
        if labels is None
        else _check_labels(labels, y.shape[1], "the vote matrix y_true")
    )
    return kind, y, _encode(pred, labels, "y_pred")


def _plurality(votes):
    """Column of the most votes per row; ties go to the lowest index."""
    return np.argmax(votes, axis=1)


def _plausible(shares, threshold):
    """Boolean (n, K): vote share reaches ``threshold`` (``None``: any vote)."""
    return shares > 0 if threshold is None else shares >= threshold


def _average(values, sample_weight):
    return float(np.average(values, weights=sample_weight))


# --------------------------------------------------------------------------- #
# Kernels (arrays in, numbers out)
# --------------------------------------------------------------------------- #


def _top_label_bins(target, hard, prob, sample_weight, n_bins, strategy, soft):
    """Per-bin weight, summed confidence and summed correctness (top label).

    Returns three arrays of shape (n_bins,): ``weight``, ``conf_sum`` and
    ``correct_sum`` (weighted sums; divide by ``weight`` for bin means).
    """
    confidence = prob.max(axis=1)
    predicted = prob.argmax(axis=1)
    rows = np.arange(prob.shape[0])
    correct = target[rows, predicted] if soft else (predicted == hard).astype(float)
    weight = np.ones_like(confidence) if sample_weight is None else sample_weight
    if strategy == "uniform":
        edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        edges = np.quantile(confidence, np.linspace(0.0, 1.0, n_bins + 1))
    # bins are right-closed, (e_{b-1}, e_b]; the first also holds its left end
    index = np.searchsorted(edges[1:-1], confidence, side="left")
    return (
        np.bincount(index, weights=weight, minlength=n_bins),
        np.bincount(index, weights=weight * confidence, minlength=n_bins),
        np.bincount(index, weights=weight * correct, minlength=n_bins),
    )


def _ece(target, hard, prob, sample_weight, n_bins, strategy, soft):
    weight, conf_sum, correct_sum = _top_label_bins(
        target, hard, prob, sample_weight, n_bins, strategy, soft
    )
    # sum_b (W_b / W) |acc_b - conf_b| = sum_b |A_b - C_b| / W
    return float(np.abs(correct_sum - conf_sum).sum() / weight.sum())


def _brier(target, prob, sample_weight):
    return _average(((prob - target) ** 2).sum(axis=1), sample_weight)


def _nll(target, prob, sample_weight, eps):
    prob = np.clip(prob, eps, 1.0 - eps)
    loss = -np.where(target > 0, target * np.log(prob), 0.0).sum(axis=1)
    return _average(loss, sample_weight)


def _certified(certificate):
    try:
        certified = certificate.certified
    except AttributeError:
        raise CNATTypeError(
            "Expected a Certificate (an object with boolean `certified` and "
            f"`prediction` arrays); got {type(certificate).__name__}."
        ) from None
    certified = column_or_1d(np.asarray(certified))
    if certified.shape[0] == 0:
        raise CNATValueError("The certificate covers no samples.")
    if certified.dtype != bool:
        raise CNATTypeError(
            f"certificate.certified must be boolean; got dtype {certified.dtype}."
        )
    return certified


# --------------------------------------------------------------------------- #
# Public metrics
# --------------------------------------------------------------------------- #

_COMMON = {
    "y_true": ["array-like"],
    "labels": ["array-like", None],
    "sample_weight": ["array-like", None],
}


@validate_params(
    {
        **_COMMON,
        "y_prob": ["array-like"],
        "n_bins": [Interval(Integral, 1, None, closed="left")],
        "strategy": [StrOptions({"uniform", "quantile"})],
        "soft": ["boolean"],
    },
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(
    y_true,
    y_prob,
    *,
    n_bins=15,
    strategy="uniform",
    soft=False,
    labels=None,
    sample_weight=None,
):
    r"""Top-label expected calibration error (ECE).

    Examples are binned by their confidence :math:`c_i = \max_k p_{ik}`; with
    :math:`W_b` the (weighted) number of examples in bin :math:`b`, :math:`W`
    their total, :math:`\mathrm{acc}_b` the mean correctness and
    :math:`\mathrm{conf}_b` the mean confidence in the bin,

    .. math::
        \mathrm{ECE} = \sum_b \frac{W_b}{W}\,\lvert \mathrm{acc}_b
        - \mathrm{conf}_b \rvert \in [0, 1].

    The predicted class is :math:`\arg\max_k p_{ik}` (ties to the lowest
    column). By default it is correct when it equals the label, i.e. the
    plurality vote (ties to the lowest column) of a vote matrix. Empty bins
    contribute nothing. Guo et al., "On Calibration of Modern Neural Networks",
    ICML 2017.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Labels, or vote counts per class.
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities; a 1-D array is the probability of the second
        class of a binary problem.
    n_bins : int, default=15
        Number of bins.
    strategy : {"uniform", "quantile"}, default="uniform"
        ``"uniform"``: equal-width bins on [0, 1], right-closed
        :math:`(\frac{b-1}{B}, \frac{b}{B}]` (the first also holds 0).
        ``"quantile"``: edges at the (unweighted) quantiles of the confidences,
        so the bins hold about equally many examples.
    soft : bool, default=False
        If True, the correctness of example :math:`i` is the vote share of its
        predicted class, :math:`t_{i,\hat y_i}` (the chance that a random
        annotator agrees), instead of 0/1 agreement with the plurality. The
        two coincide for 1-D labels.
    labels : array-like of shape (n_classes,), default=None
        Class of each column of ``y_prob`` (and of the vote matrix). Defaults
        to ``0..K-1`` for votes or integer labels in that range, else to the
        sorted distinct labels of ``y_true``.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    ece : float
        In [0, 1]; 0 is perfectly calibrated. Lower is better.

    Examples
    --------
    >>> from sklearn_cnat.metrics import expected_calibration_error
    >>> votes = [[3, 0], [2, 1], [0, 3], [1, 2]]
    >>> y_prob = [[0.75, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.25]]
    >>> expected_calibration_error(votes, y_prob, n_bins=4)
    0.0
    """
    target, hard, prob, sw = _targets_and_proba(y_true, y_prob, labels, sample_weight)
    return _ece(target, hard, prob, sw, n_bins, strategy, soft)


@validate_params(
    {**_COMMON, "y_prob": ["array-like"]}, prefer_skip_nested_validation=True
)
def brier_score(y_true, y_prob, *, labels=None, sample_weight=None):
    r"""Multiclass Brier score against labels or vote distributions.

    .. math::
        \mathrm{BS} = \frac{1}{n}\sum_{i=1}^{n}\sum_{k=1}^{K}(p_{ik} - t_{ik})^2
        \in [0, 2],

    where :math:`t_i` is the one-hot encoding of the label, or the vote
    distribution :math:`V_i / \sum_k V_{ik}` for a vote matrix. For binary
    labels this is twice scikit-learn's ``brier_score_loss`` (which halves the
    binary score). Lower is better.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Labels, or vote counts per class.
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities; a 1-D array is the probability of the second
        class of a binary problem.
    labels : array-like of shape (n_classes,), default=None
        Class of each column; see :func:`expected_calibration_error`.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from sklearn_cnat.metrics import brier_score
    >>> brier_score([[2, 2]], [[1.0, 0.0]])
    0.5
    """
    target, _, prob, sw = _targets_and_proba(y_true, y_prob, labels, sample_weight)
    return _brier(target, prob, sw)


@validate_params(
    {
        **_COMMON,
        "y_prob": ["array-like"],
        "eps": [StrOptions({"auto"}), Interval(Real, 0, 0.5, closed="neither")],
    },
    prefer_skip_nested_validation=True,
)
def nll_score(y_true, y_prob, *, eps="auto", labels=None, sample_weight=None):
    r"""Cross-entropy (negative log-likelihood) against labels or vote distributions.

    .. math::
        \mathrm{NLL} = -\frac{1}{n}\sum_{i=1}^{n}\sum_{k=1}^{K}
        t_{ik}\log \operatorname{clip}(p_{ik}, \epsilon, 1 - \epsilon),

    with :math:`t_i` the one-hot label or the vote distribution. Against 1-D
    labels this equals scikit-learn's ``log_loss``; against votes it is the
    expected log loss of a randomly drawn annotator's label. Lower is better.
    ``log_loss_votes`` is the same function.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Labels, or vote counts per class.
    y_prob : array-like of shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities; a 1-D array is the probability of the second
        class of a binary problem.
    eps : "auto" or float, default="auto"
        Clipping constant; ``"auto"`` is the machine epsilon of ``y_prob``'s
        dtype (as scikit-learn's ``log_loss``).
    labels : array-like of shape (n_classes,), default=None
        Class of each column; see :func:`expected_calibration_error`.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    loss : float

    Examples
    --------
    >>> from sklearn_cnat.metrics import nll_score
    >>> round(nll_score([[1, 1]], [[0.5, 0.5]]), 4)
    0.6931
    """
    target, _, prob, sw = _targets_and_proba(y_true, y_prob, labels, sample_weight)
    if eps == "auto":
        eps = float(np.finfo(prob.dtype).eps)
    return _nll(target, prob.astype(np.float64), sw, eps)


log_loss_votes = nll_score


@validate_params(
    {**_COMMON, "y_pred": ["array-like"]}, prefer_skip_nested_validation=True
)
def plurality_accuracy_score(y_true, y_pred, *, labels=None, sample_weight=None):
    r"""Accuracy against the plurality vote.

    .. math::
        \mathrm{acc} = \frac{1}{n}\sum_i [\hat y_i = \ell_i],
        \qquad \ell_i = \mathrm{labels}[\arg\max_k V_{ik}]

    (ties to the lowest column). For 1-D labels, :math:`\ell_i = y_i` and this
    is scikit-learn's ``accuracy_score``.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Labels, or vote counts per class.
    y_pred : array-like of shape (n_samples,)
        Predicted class labels.
    labels : array-like of shape (n_classes,), default=None
        Class of each vote column (default ``0..K-1``); ignored for 1-D labels.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from sklearn_cnat.metrics import plurality_accuracy_score
    >>> round(plurality_accuracy_score([[2, 1], [1, 1], [0, 3]], [0, 1, 1]), 4)
    0.6667
    """
    kind, y, pred = _targets_and_pred(y_true, y_pred, labels)
    correct = pred == (_plurality(y) if kind == "votes" else y)
    return _average(correct, _check_weights(sample_weight, correct.shape[0]))


_THRESHOLD = [Interval(Real, 0, 1, closed="right"), None]


@validate_params(
    {
        **_COMMON,
        "votes": ["array-like"],
        "y_pred": ["array-like"],
        "threshold": _THRESHOLD,
    },
    prefer_skip_nested_validation=True,
)
def ambiguity_accuracy_score(
    votes, y_pred, *, threshold=None, labels=None, sample_weight=None
):
    r"""Accuracy that accepts every plausible label (ImageNet-ReaL style).

    With vote shares :math:`s_{ik} = V_{ik} / \sum_j V_{ij}`, the plausible set
    of example :math:`i` is :math:`P_i = \{k : s_{ik} \ge \tau\}` (``threshold``
    :math:`\tau`; ``None``: :math:`s_{ik} > 0`, any annotator chose it), and

    .. math::
        \mathrm{acc}_\tau = \frac{1}{|I|}\sum_{i \in I} [\hat y_i \in P_i],
        \qquad I = \{i : P_i \neq \emptyset\}.

    As in Beyer et al., "Are we done with ImageNet?" (2020), examples without
    a plausible label are left out. For 1-D labels, :math:`P_i = \{y_i\}`
    and this is plain accuracy.

    Parameters
    ----------
    votes : array-like of shape (n_samples, n_classes) or (n_samples,)
        Vote counts per class, or labels.
    y_pred : array-like of shape (n_samples,)
        Predicted class labels.
    threshold : float in (0, 1] or None, default=None
        Minimal vote share of a plausible label; ``None`` accepts any label
        that received a vote.
    labels : array-like of shape (n_classes,), default=None
        Class of each vote column (default ``0..K-1``).
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float

    Raises
    ------
    ValueError
        If no example has a plausible label.

    Examples
    --------
    >>> from sklearn_cnat.metrics import ambiguity_accuracy_score
    >>> votes = [[2, 1, 0], [0, 1, 2]]
    >>> ambiguity_accuracy_score(votes, [1, 1])
    1.0
    >>> ambiguity_accuracy_score(votes, [1, 1], threshold=0.5)
    0.0
    """
    kind, y, pred = _targets_and_pred(votes, y_pred, labels)
    sw = _check_weights(sample_weight, pred.shape[0])
    if kind == "labels":
        return _average(pred == y, sw)
    plausible = _plausible(y / y.sum(axis=1, keepdims=True), threshold)
    keep = plausible.any(axis=1)
    if not keep.any():
        raise CNATValueError(
            f"No example has a label with vote share >= {threshold}; lower threshold."
        )
    correct = plausible[np.arange(pred.shape[0]), pred]
    return _average(correct[keep], None if sw is None else sw[keep])


@validate_params(
    {
        **_COMMON,
        "votes": ["array-like"],
        "y_prob": ["array-like"],
        "threshold": _THRESHOLD,
    },
    prefer_skip_nested_validation=True,
)
def plausible_label_map(
    votes, y_prob, *, threshold=None, labels=None, sample_weight=None
):
    r"""Mean average precision of the class ranking against the plausible labels.

    For each example the classes are ranked by ``y_prob``; the relevant ones
    are the plausible labels :math:`P_i` of :func:`ambiguity_accuracy_score`.
    With :math:`\mathrm{rank}_{ik} = |\{j : p_{ij} \ge p_{ik}\}|`,

    .. math::
        \mathrm{AP}_i = \frac{1}{|P_i|}\sum_{k \in P_i}
        \frac{|\{j \in P_i : p_{ij} \ge p_{ik}\}|}{\mathrm{rank}_{ik}},
        \qquad \mathrm{mAP} = \frac{1}{|I|}\sum_{i \in I}\mathrm{AP}_i,

    over the examples :math:`I` with a non-empty :math:`P_i`. Ties in
    ``y_prob`` count against the prediction (a tied irrelevant class ranks
    ahead). This is scikit-learn's ``label_ranking_average_precision_score``
    on the plausible-label indicator. With a single plausible label it is the
    reciprocal rank of that label.

    Parameters
    ----------
    votes : array-like of shape (n_samples, n_classes) or (n_samples,)
        Vote counts per class, or labels.
    y_prob : array-like of shape (n_samples, n_classes)
        Predicted probabilities (any scores ranking the classes).
    threshold : float in (0, 1] or None, default=None
        Minimal vote share of a plausible label; ``None`` accepts any label
        that received a vote.
    labels : array-like of shape (n_classes,), default=None
        Class of each column; see :func:`expected_calibration_error`.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float
        In (0, 1]; higher is better.

    Raises
    ------
    ValueError
        If no example has a plausible label.

    Examples
    --------
    >>> from sklearn_cnat.metrics import plausible_label_map
    >>> round(plausible_label_map([[2, 1, 0]], [[0.5, 0.2, 0.3]]), 4)
    0.8333
    """
    target, _, prob, sw = _targets_and_proba(votes, y_prob, labels, sample_weight)
    plausible = _plausible(target, threshold)
    keep = plausible.any(axis=1)
    if not keep.any():
        raise CNATValueError(
            f"No example has a label with vote share >= {threshold}; lower threshold."
        )
    return float(
        label_ranking_average_precision_score(
            plausible[keep].astype(np.int64),
            prob[keep],
            sample_weight=None if sw is None else sw[keep],
        )
    )


@validate_params(
    {"certificate": "no_validation", "sample_weight": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def cnr_coverage_score(certificate, *, sample_weight=None):
    r"""Fraction of certified predictions (CNR coverage).

    .. math::
        \mathrm{coverage} = \frac{1}{n}\sum_i [\text{certified}_i]

    Parameters
    ----------
    certificate : Certificate
        Any object with a boolean ``certified`` array of shape (n_samples,),
        e.g. the result of ``estimator.certify(X)``.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from sklearn_cnat.metrics import cnr_coverage_score
    >>> cert = SimpleNamespace(certified=[True, False, True, True],
    ...                        prediction=[0, 1, 1, 0])
    >>> cnr_coverage_score(cert)
    0.75
    """
    certified = _certified(certificate)
    return _average(certified, _check_weights(sample_weight, certified.shape[0]))


@validate_params(
    {**_COMMON, "certificate": "no_validation"}, prefer_skip_nested_validation=True
)
def certified_accuracy_score(y_true, certificate, *, labels=None, sample_weight=None):
    r"""Fraction of predictions that are certified and correct.

    .. math::
        \mathrm{cert\_acc} = \frac{1}{n}\sum_i [\text{certified}_i]\,
        [\hat y_i = \ell_i],

    with :math:`\hat y_i` the certificate's ``prediction`` and :math:`\ell_i`
    the label or plurality vote (ties to the lowest column). It is at most
    both the coverage and the accuracy.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,) or (n_samples, n_classes)
        Labels, or vote counts per class.
    certificate : Certificate
        Any object with a boolean ``certified`` array and a ``prediction``
        array (class labels) of shape (n_samples,).
    labels : array-like of shape (n_classes,), default=None
        Class of each vote column (default ``0..K-1``); ignored for 1-D labels.
    sample_weight : array-like of shape (n_samples,), default=None
        Sample weights.

    Returns
    -------
    score : float

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> from sklearn_cnat.metrics import certified_accuracy_score
    >>> cert = SimpleNamespace(certified=[True, False, True, True],
    ...                        prediction=[0, 1, 1, 0])
    >>> certified_accuracy_score([[3, 0], [0, 3], [3, 0], [2, 1]], cert)
    0.5
    """
    certified = _certified(certificate)
    try:
        prediction = certificate.prediction
    except AttributeError:
        raise CNATTypeError(
            "Expected a Certificate with a `prediction` array; got "
            f"{type(certificate).__name__}."
        ) from None
    kind, y, pred = _targets_and_pred(y_true, prediction, labels)
    check_consistent_length(certified, pred)
    correct = pred == (_plurality(y) if kind == "votes" else y)
    return _average(
        certified & correct, _check_weights(sample_weight, certified.shape[0])
    )
