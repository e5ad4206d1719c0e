"""Certified label-flip defences from the literature, on fixed features.

The certified peers our exact ridge certificates are compared with (docs/peers.md has
the statements and proofs; ``benchmarks/certified_peers.py`` runs them side by side):

* :func:`certify_knn` and :func:`certify_rnn`: plurality vote of the ``k`` nearest
  training points, or of every training point within a radius (Jia, Liu, Cao & Gong,
  "Certified Robustness of Nearest Neighbors against Data Poisoning and Backdoor
  Attacks", AAAI 2022), with the exact label-flip certificate (Theorem N1):
  ``max_flips = min_b floor((n_c - n_b - [b < c]) / 2)`` over the vote counts.
* :func:`certify_label_flip_smoothing`: the ridge (least-squares) classifier smoothed
  over random label flips (Rosenfeld, Winston, Ravikumar & Kolter, "Certified
  Robustness to Label-Flipping Attacks via Randomized Smoothing", ICML 2020), certified
  without sampling: a Chernoff bound on the smoothed probability of the predicted class
  and the Neyman-Pearson-tight number of flips that probability survives (Theorem R1).
* SS-DPA (Levine & Feizi, "Deep Partition Aggregation", ICLR 2021) is
  :class:`~sklearn_cnat.partition.PartitionAggregationClassifier` with a linear base
  estimator on label-free features; its ``max_flips`` (Theorem P1 of docs/partition.md)
  is the paper's ``floor((n_c - max_{b != c}(n_b + [b < c])) / 2)``.

Every certificate here is of tier ``"flip"``: a statement about the training labels
(class labels) of at most ``m`` rows changed to any other classes, the features held
fixed. Math kernels are private functions; the public functions validate once.
"""

import math
import numbers

import numpy as np
import torch

from .certificates import Certificate
from .exceptions import CertificationError
from .partition import _max_flips, _plurality

__all__ = ["certify_knn", "certify_rnn", "certify_label_flip_smoothing"]

_METRICS = ("euclidean", "cosine")
_CHUNK_ELEMENTS = 2**24
_T_GRID = 24


# --------------------------------------------------------------------------- validation


def _as_features(value, name, n_cols=None):
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2:
        raise CertificationError(f"{name} must be a 2-D array of shape (n_samples, n_features), got {arr.shape}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise CertificationError(f"{name} has {arr.shape[1]} features, F_train has {n_cols}")
    if not np.all(np.isfinite(arr)):
        raise CertificationError(f"{name} contains NaN or infinite values")
    return arr


def _encode_labels(y, n, classes):
    """Class indices of ``y`` (n,) in the order of ``classes`` (declared, or the sorted labels)."""
    y = np.asarray(y)
    if y.shape != (n,):
        raise CertificationError(f"y must be a 1-D array of {n} class labels (one per row of F_train), "
                                 f"got shape {y.shape}")
    classes = np.unique(y) if classes is None else np.asarray(classes)
    if classes.ndim != 1 or len(np.unique(classes)) != len(classes):
        raise CertificationError("classes must be a 1-D list of distinct class labels")
    if len(classes) < 2:
        raise CertificationError(f"need at least 2 classes, got {classes.tolist()}")
    lookup = {c: i for i, c in enumerate(classes.tolist())}
    idx = np.array([lookup.get(v, -1) for v in y.tolist()], dtype=np.int64)
    if (idx < 0).any():
        bad = y[np.flatnonzero(idx < 0)[0]]
        raise CertificationError(f"y holds the label {bad!r}, which is not one of the classes {classes.tolist()}")
    return idx, classes


def _check_m(m):
    if m is None:
        raise CertificationError("m (the number of training labels that may flip) is required; max_flips is "
                                 "reported for every point")
    if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
        raise CertificationError(f"m must be an integer >= 0, got {m!r}")
    return int(m)


def _check_scope(scope):
    if scope not in ("model", "head"):
        raise CertificationError(f"scope must be 'model' or 'head', got {scope!r}")
    return scope


# --------------------------------------------------------------------------- nearest neighbours


def _distances(X, F, sq_F, metric):
    """(T, n) float64 distances from the rows of ``X`` to the rows of ``F`` (torch)."""
    if metric == "cosine":
        return 1.0 - X @ F.T  # rows already normalised
    d = (X * X).sum(dim=1, keepdim=True) + sq_F[None, :] - 2.0 * (X @ F.T)
    return d.clamp_min_(0.0).sqrt_()


def _neighbour_votes(F_train, labels, F_test, n_classes, *, n_neighbors=None, radius=None, metric="euclidean",
                     chunk_size=None):
    """Vote counts (T, K) of the neighbours of each test point; every label set in ``labels``.

    ``labels`` is a list of (n,) class-index arrays (the neighbour sets are computed once
    and counted for each). Neighbours: the ``n_neighbors`` smallest distances, ties at the
    boundary to the lowest training index; or every training point at distance
    ``<= radius``. The sets depend on the features only, never on the labels.
    Distances are Euclidean or ``1 - cosine similarity``.

    Returns
    -------
    list of ndarray of shape (T, K), int64
    """
    F = torch.as_tensor(F_train, dtype=torch.float64)
    X_all = torch.as_tensor(F_test, dtype=torch.float64)
    if metric == "cosine":
        F = F / F.norm(dim=1, keepdim=True).clamp_min(1e-300)
        X_all = X_all / X_all.norm(dim=1, keepdim=True).clamp_min(1e-300)
    sq_F = (F * F).sum(dim=1)
    n = F.shape[0]
    onehots = [torch.nn.functional.one_hot(torch.as_tensor(y), n_classes).to(torch.float64) for y in labels]
    out = [np.zeros((X_all.shape[0], n_classes), dtype=np.int64) for _ in labels]
    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, X_all.shape[0], step):
        D = _distances(X_all[start:start + step], F, sq_F, metric)
        if radius is not None:
            mask = D <= radius
        else:
            k = min(n_neighbors, n)
            kth = torch.kthvalue(D, k, dim=1).values[:, None]
            less = D < kth
            equal = D == kth
            need = k - less.sum(dim=1, keepdim=True)
            mask = less | (equal & (torch.cumsum(equal.to(torch.int64), dim=1) <= need))
        maskf = mask.to(torch.float64)
        for o, oh in zip(out, onehots):
            o[start:start + step] = torch.round(maskf @ oh).to(torch.int64).numpy()
    return out


def _vote_certificate(counts, classes, m, scope, engine, abstain=None):
    """Tier-flip Certificate of a plurality vote from its vote counts (Theorem N1 / P1)."""
    pred = _plurality(counts)
    n, K = counts.shape
    flips = _max_flips(counts, pred) if n else np.zeros(0, dtype=np.int64)
    top2 = np.sort(counts, axis=1)[:, -2:]
    margin = (top2[:, 1] - top2[:, 0]).astype(np.float64)
    prediction = classes[pred]
    if abstain is not None:
        empty = counts.sum(axis=1) == 0
        flips = np.where(empty, -1, flips)
        if empty.any():
            prediction = np.where(empty, abstain, prediction.astype(object))
            try:
                prediction = prediction.astype(np.result_type(classes.dtype, np.asarray(abstain).dtype))
            except TypeError:
                pass
    return Certificate(tier="flip", scope=scope, engine=engine, prediction=prediction, certified=flips >= m,
                       margin=margin, worst_case_margin=margin - 2.0 * m, max_flips=flips.astype(np.int64), m=m,
                       classes=classes)


def _check_neighbours(F_train, y, F_test, metric, classes, scope, m):
    F_train = _as_features(F_train, "F_train")
    if len(F_train) < 1:
        raise CertificationError("F_train has no rows")
    F_test = _as_features(F_test, "F_test", n_cols=F_train.shape[1])
    if metric not in _METRICS:
        raise CertificationError(f"metric must be one of {_METRICS}, got {metric!r}")
    labels, classes = _encode_labels(y, len(F_train), classes)
    return F_train, labels, F_test, classes, _check_scope(scope), _check_m(m)


def certify_knn(F_train, y, F_test, *, n_neighbors, m, metric="euclidean", classes=None, scope="model",
                chunk_size=None):
    """Label-flip certificates of the k-nearest-neighbour plurality vote (Theorem N1).

    The classifier predicts, for a test point, the plurality class (ties to the lowest
    class index) among the labels of its ``n_neighbors`` nearest training points (ties in
    distance to the lowest training index). Flipping a training label changes at most one
    neighbour's vote, and only the neighbour set's labels matter, so the prediction stays
    for every change of at most ``m`` training labels iff ``m <= max_flips``,

        max_flips = min_{b != c} floor((n_c - n_b - [b < c]) / 2),

    exactly (the bound is attained): Jia et al. (AAAI 2022) specialised to label flips.
    ``scope="model"`` when the features do not depend on the labels.

    Parameters
    ----------
    F_train : array-like of shape (n_train, d)
        Training features (fixed).
    y : array-like of shape (n_train,)
        Training labels.
    F_test : array-like of shape (n_test, d)
    n_neighbors : int
        ``k`` (``min(k, n_train)`` neighbours are used).
    m : int
        Number of training labels that may flip; ``certified == (max_flips >= m)``.
    metric : {"euclidean", "cosine"}, default="euclidean"
    classes : array-like of shape (K,) or None
        Class labels in column order, declared independently of ``y`` (default: the
        sorted labels of ``y``; declare them when a class may be absent).
    scope : {"model", "head"}, default="model"
    chunk_size : int or None
        Test points per block of the distance computation.

    Returns
    -------
    Certificate
        Tier "flip", engine "knn-vote"; ``max_flips`` per point, ``margin`` the vote gap.

    Examples
    --------
    >>> import numpy as np
    >>> F = np.array([[0.0], [0.1], [0.2], [1.0], [1.1]])
    >>> cert = certify_knn(F, [0, 0, 0, 1, 1], np.array([[0.05]]), n_neighbors=3, m=1)
    >>> int(cert.max_flips[0]), bool(cert.certified[0])
    (1, True)
    """
    F_train, labels, F_test, classes, scope, m = _check_neighbours(F_train, y, F_test, metric, classes, scope, m)
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise CertificationError(f"n_neighbors must be a positive integer, got {n_neighbors!r}")
    (counts,) = _neighbour_votes(F_train, [labels], F_test, len(classes), n_neighbors=int(n_neighbors),
                                 metric=metric, chunk_size=chunk_size)
    return _vote_certificate(counts, classes, m, scope, "knn-vote")


def certify_rnn(F_train, y, F_test, *, radius, m, metric="euclidean", classes=None, scope="model", abstain=-1,
                chunk_size=None):
    """Label-flip certificates of the radius-nearest-neighbour plurality vote (Theorem N1).

    As :func:`certify_knn`, with the neighbours of a test point every training point at
    distance at most ``radius`` (Euclidean distance for ``metric="euclidean"``,
    ``1 - cosine similarity`` for ``"cosine"``). A test point without neighbours is an
    abstention: prediction ``abstain``, never certified (``max_flips = -1``).

    Parameters
    ----------
    radius : float
        Distance threshold (``>= 0``), in the units above.
    abstain : object, default=-1
        Prediction reported for points without neighbours.

    Other parameters and the return value are those of :func:`certify_knn` (engine
    "rnn-vote").
    """
    F_train, labels, F_test, classes, scope, m = _check_neighbours(F_train, y, F_test, metric, classes, scope, m)
    if not isinstance(radius, numbers.Real) or not math.isfinite(radius) or radius < 0:
        raise CertificationError(f"radius must be a finite number >= 0, got {radius!r}")
    (counts,) = _neighbour_votes(F_train, [labels], F_test, len(classes), radius=float(radius), metric=metric,
                                 chunk_size=chunk_size)
    return _vote_certificate(counts, classes, m, scope, "rnn-vote", abstain=abstain)


# --------------------------------------------------------------------------- label-flip smoothing


def _flip_noise(q, K):
    """Per-label probabilities of the smoothing: keep ``1 - q``, each other class ``u = q / (K - 1)``."""
    return 1.0 - q, q / (K - 1)


def _chernoff_log_failure(H, labels, pred, q, K, n_grid=_T_GRID):
    """``log`` of a bound on ``P[f(y~)(x) != c]`` under the smoothing, for a chunk of test points.

    ``f(y~)(x) = argmax_k sum_i h_i(x) [y~_i = k]`` is the ridge prediction on the noisy
    labels ``y~`` (one-hot); ``c = pred``. For each rival ``b``, ``D_b = s_c - s_b`` is a sum
    of independent terms ``h_i ([y~_i = c] - [y~_i = b])``, and for every ``t >= 0``

        P[D_b <= 0] <= prod_i E exp(-t h_i ([y~_i = c] - [y~_i = b]))

    (Chernoff, (R2) in docs/peers.md); ``f != c`` implies ``D_b <= 0`` for some ``b``
    (union bound over the ``K - 1`` rivals). A row's factor depends only on whether its
    label is ``c``, ``b`` or another class, so on a grid of ``t`` shared by the rivals of a
    point the exponents of all rivals come from three per-class sums. The grid is
    geometric around the Gaussian optima ``E[D_b] / Var[D_b]`` of the rivals; the bound
    holds at every grid value and the smallest is kept. Returns (T,) float64, ``<= 0``.
    """
    keep, u = _flip_noise(q, K)
    rest_own = max(0.0, 1.0 - keep - u)  # P[y~_i not in {c, b}] for a row labelled c or b
    T, n = H.shape
    dt = H.dtype
    onehot = torch.nn.functional.one_hot(labels, K).to(dt)  # (n, K)
    rows = torch.arange(T)
    # Gaussian optimum of each rival: t_b = E[D_b] / Var[D_b]
    p_c = torch.where(labels[None, :] == pred[:, None], torch.tensor(keep, dtype=dt), torch.tensor(u, dtype=dt))
    mean_c = (H * p_c).sum(1, keepdim=True)  # E s_c
    hk = H @ onehot  # sum of h over each class's rows
    mean = mean_c - (u * H.sum(1, keepdim=True) + (keep - u) * hk)  # E[D_b], (T, K)
    h2 = (H * H) @ onehot
    h2_all = (H * H).sum(1, keepdim=True)
    # Var of h_i([c] - [b]): rows labelled c or b: keep + u - (keep - u)^2; others: 2u
    var = 2 * u * h2_all + (keep + u - (keep - u) ** 2 - 2 * u) * (h2 + h2[rows, pred][:, None])
    t_gauss = torch.where(mean > 0, mean / var.clamp_min(1e-300), torch.zeros_like(mean))
    t_gauss[rows, pred] = 0.0
    top = t_gauss.amax(1)
    low = torch.where(t_gauss > 0, t_gauss, torch.full_like(t_gauss, math.inf)).amin(1)
    low = torch.where(torch.isinf(low), top, low)
    own_rows = torch.nn.functional.one_hot(pred, K).to(torch.bool)  # (T, K): the column b = c

    abs_hk = H.abs() @ onehot  # (T, K)

    def exponents(grid):
        """(T, G, K): log of the Chernoff product at each grid value of t, for each rival b.

        A row's factor is ``E exp(-t term_i) = a e^{-x} + b e^{x} + c`` with ``x = t h_i``,
        evaluated as ``|x| + log(...)`` with ``e = exp(-|x|)`` (no overflow for any t).
        """
        x = grid[:, :, None] * H[:, None, :]  # (T, G, n)
        e = torch.exp(-x.abs())
        e2 = e * e
        pos = x >= 0
        shift = grid[:, :, None] * abs_hk[:, None, :]  # sum of |x| per class, (T, G, K)
        phi_other = torch.log(u * (1.0 + e2) + (1.0 - 2 * u) * e) @ onehot + shift  # neither c nor b
        phi_c = torch.log(torch.where(pos, keep * e2 + u, keep + u * e2) + rest_own * e) @ onehot + shift
        phi_b = torch.log(torch.where(pos, u * e2 + keep, u + keep * e2) + rest_own * e) @ onehot + shift
        del x, e, e2, pos
        own_c = phi_c[rows, :, pred]  # column c: the rows labelled c
        other_c = phi_other[rows, :, pred]
        value = (phi_other.sum(-1) - other_c + own_c)[..., None] - phi_other + phi_b  # column b: rows labelled b
        return value.masked_fill(own_rows[:, None, :], math.inf)

    def geometric(lo, hi, size):
        ratio = torch.linspace(0.0, 1.0, size, dtype=dt)
        log_lo, log_hi = torch.log(lo.clamp_min(1e-300)), torch.log(hi.clamp_min(1e-300))
        return torch.exp(log_lo[:, None] + ratio[None, :] * (log_hi - log_lo)[:, None])  # (T, G)

    # coarse: far on both sides of the Gaussian optima (for small q the sums are skewed and the
    # optimum lies far below E[D] / Var[D]; for a few dominant rows it can lie above)
    coarse = geometric(low * 2.0**-12, top * 2.0**12, n_grid // 2)
    value = exponents(coarse)
    best = value.amin(1)
    idx = value.argmin(1)  # (T, K)
    G = coarse.shape[1]
    lo_t = torch.gather(coarse, 1, (idx - 1).clamp_min(0)).masked_fill(own_rows, math.inf).amin(1)
    hi_t = torch.gather(coarse, 1, (idx + 1).clamp_max(G - 1)).masked_fill(own_rows, 0.0).amax(1)
    fine = geometric(lo_t, torch.maximum(hi_t, lo_t), n_grid - G)  # around every rival's best
    best = torch.minimum(best, exponents(fine).amin(1)).clamp_max(0.0)  # t = 0 gives log 1 = 0
    best[rows, pred] = -math.inf  # no rival b = c
    return torch.logsumexp(best, dim=1).clamp_max(0.0)


def _log_flip_thresholds(q, K, log_failure_floor, r_cap):
    """``L[r]``: ``x`` survives ``r`` flips iff ``log(1 - p_lower) < L[r]`` (Theorem R1, (R4)).

    For labels ``y'`` that differ from ``y`` in ``r`` rows, the likelihood ratio of the
    smoothing distributions is ``rho^S`` with ``rho = (1 - q) / u`` and ``S = B - A``
    (``A``, ``B``: changed rows whose noisy label equals the old, the new label). Under the
    smoothing around ``y``, ``S`` is a sum of ``r`` independent steps ``-1`` (prob
    ``1 - q``), ``+1`` (``u``), ``0`` (the rest); its law is built by convolution, one row
    at a time, in log space. Neyman-Pearson: the smallest probability of the event
    ``f = c`` around ``y'`` given probability ``p`` around ``y`` fills the levels of
    smallest ratio first; ``L[r]`` is the log of the mass ``1 - p*`` left when that
    smallest probability reaches 1/2. ``L`` is made non-increasing (running minimum), so
    ``L[r]`` certifies every ``r' <= r`` at once. Stops at the first ``r`` with
    ``L[r] <= log_failure_floor`` (no point survives more) or at ``r_cap``.
    """
    keep, u = _flip_noise(q, K)
    other = max(0.0, 1.0 - keep - u)
    log_a, log_b = math.log(keep), math.log(u)
    log_o = math.log(other) if other > 0 else -math.inf
    log_rho = log_a - log_b
    log_mu = np.zeros(1)  # r = 0: S = 0
    L = [math.log(0.5)]
    slack = 1e-12  # floating-point allowance on the within-level remainder (conservative)
    r = 0
    while r < r_cap and L[-1] > log_failure_floor:
        r += 1
        new = np.full(2 * r + 1, -np.inf)
        new[:-2] = log_mu + log_a  # step -1
        new[1:-1] = np.logaddexp(new[1:-1], log_mu + log_o)  # step 0
        new[2:] = np.logaddexp(new[2:], log_mu + log_b)  # step +1
        log_mu = new
        s = np.arange(-r, r + 1)
        nu = np.exp(log_mu + s * log_rho)  # law of S around y' (sums to 1)
        cum = np.cumsum(nu)
        j = int(np.searchsorted(cum, 0.5))  # first level where the nu-mass reaches 1/2
        j = min(j, len(cum) - 1)
        rest = cum[j] - 0.5 - slack * (r + 1)
        tail = np.logaddexp.reduce(log_mu[j + 1:]) if j + 1 < len(log_mu) else -np.inf
        within = math.log(rest) - s[j] * log_rho if rest > 0 else -np.inf
        L.append(min(L[-1], float(np.logaddexp(tail, within))))
    return np.array(L)


def certify_label_flip_smoothing(F_train, y, F_test, *, alpha, q, m, classes=None, scope="model", chunk_size=None):
    """Rosenfeld et al. (2020): the ridge classifier smoothed over random label flips, certified.

    **Smoothing.** Around labels ``y``, each training label is kept with probability
    ``1 - q`` and otherwise replaced by one of the ``K - 1`` other classes, uniformly,
    independently across rows (for ``K = 2``: each label flipped with probability ``q``).
    The base classifier ``f(y~)(x)`` is the ridge head (``Ridge(alpha,
    fit_intercept=True)`` on the one-hot labels, the learner of
    :func:`~sklearn_cnat.certificates.certify_ridge`) fitted on the noisy labels ``y~``;
    the smoothed classifier is ``g_y(x) = argmax_k P[f(y~)(x) = k]``.

    **What is certified** (Theorem R1, docs/peers.md). The reported prediction is
    ``c = argmax_k E[s_k]``, which is the ridge prediction on ``y`` itself. ``p_lower`` is a
    Chernoff lower bound on ``P[f(y~)(x) = c]``, computed in closed form (no sampling). If
    ``max_flips >= 0`` then ``g_y(x) = c``, and ``g_{y'}(x) = c`` for every label vector
    ``y'`` that differs from ``y`` in at most ``max_flips`` rows: a deterministic statement
    about the *smoothed* classifier, whose definition involves a probability over the
    smoothing only. It says nothing about one draw ``f(y~)``. ``max_flips = -1`` when
    ``p_lower <= 1/2`` (then even ``g_y(x) = c`` is not established).

    Parameters
    ----------
    F_train : array-like of shape (n_train, d)
    y : array-like of shape (n_train,)
    F_test : array-like of shape (n_test, d)
    alpha : float
        Ridge regularisation, ``> 0``.
    q : float in (0, (K - 1) / K)
        Probability that the smoothing changes a label.
    m : int
        ``certified == (max_flips >= m)``.
    classes : array-like of shape (K,) or None
    scope : {"model", "head"}, default="model"
    chunk_size : int or None
        Test points per block (default: about 2**22 entries of the (T, K, n) work arrays).

    Returns
    -------
    Certificate
        Tier "flip", engine "rosenfeld-smoothed-ridge"; ``margin`` is the ridge score
        margin, ``worst_case_margin`` is ``L[m] - log(1 - p_lower)`` (positive iff certified
        at ``m``; (R4) in docs/peers.md).
    """
    from .certificates._ridge import _ridge_fit, _ridge_influence, _ridge_scores

    F_train = _as_features(F_train, "F_train")
    n = len(F_train)
    if n < 1:
        raise CertificationError("F_train has no rows")
    F_test = _as_features(F_test, "F_test", n_cols=F_train.shape[1])
    labels, classes = _encode_labels(y, n, classes)
    K = len(classes)
    if not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise CertificationError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not isinstance(q, numbers.Real) or not 0.0 < q < (K - 1) / K:
        raise CertificationError(f"q must lie in (0, (K - 1) / K) = (0, {(K - 1) / K:.4g}) so that the smoothed "
                                 f"scores keep the order of the ridge scores, got {q!r}")
    m, scope = _check_m(m), _check_scope(scope)
    Y = np.eye(K)[labels]
    coef, intercept = _ridge_fit(F_train, Y, float(alpha))
    scores = _ridge_scores(F_test, coef, intercept)
    pred = np.argmax(scores, axis=1)
    T = len(F_test)
    rows = np.arange(T)
    rival = scores.copy()
    rival[rows, pred] = -np.inf
    margin = scores[rows, pred] - rival.max(axis=1) if T else np.zeros(0)
    step = chunk_size or max(1, (_CHUNK_ELEMENTS // 4) // max(n * K, 1))
    log_fail = np.empty(T)
    lab = torch.as_tensor(labels)
    for i, H in enumerate(_ridge_influence(F_train, F_test, float(alpha), chunk_size=step)):
        sl = slice(i * step, i * step + H.shape[0])
        log_fail[sl] = _chernoff_log_failure(torch.as_tensor(H), lab, torch.as_tensor(pred[sl]), float(q), K).numpy()
    floor = float(log_fail.min()) if T else 0.0
    L = _log_flip_thresholds(float(q), K, floor, n)
    survives = L[None, :] > log_fail[:, None]  # (T, R + 1), non-increasing along r
    flips = survives.sum(axis=1) - 1
    L_m = L[min(m, len(L) - 1)] if m < len(L) else -np.inf
    return Certificate(tier="flip", scope=scope, engine="rosenfeld-smoothed-ridge", prediction=classes[pred],
                       certified=flips >= m, margin=margin, worst_case_margin=L_m - log_fail,
                       max_flips=flips.astype(np.int64), m=m, classes=classes)
