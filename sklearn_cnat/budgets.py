"""Per-example noise budgets: nominal label distributions and uncertainty radii.

A :class:`NoiseBudget` holds, for every training example ``i``, the nominal
label distribution ``pi_i`` and the radii of its uncertainty set
``U_i = {q in simplex : ||q - pi_i||_1 <= r_i, KL(q || pi_i) <= rho_i}``.
:class:`NoiseBudgetTransformer` builds one from label evidence (vote counts,
annotator label matrices, single labels with or without out-of-sample
predicted probabilities, or cleanlab's multi-annotator output).

The formats, the radius mappings, what each radius covers and the numbers
behind the ``"posterior"`` mapping are in ``docs/budgets.md``.
"""

import hashlib
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy.special import xlogy
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state

from ._compat import Interval, StrOptions
from .exceptions import NoiseBudgetError, NotFittedError

__all__ = ["NoiseBudget", "NoiseBudgetTransformer", "NoiseBudgetError"]

_SIMPLEX_ATOL = 1e-6
_EVIDENCE_KINDS = ("counts", "annotators", "labels", "multiannotator")


# --------------------------------------------------------------------------- NoiseBudget


@dataclass(frozen=True, eq=False, repr=False)
class NoiseBudget:
    """Per-example nominal label distributions and uncertainty radii.

    Example ``i``'s uncertainty set is
    ``U_i = {q in simplex : ||q - pi_i||_1 <= r_i and KL(q || pi_i) <= rho_i}``.

    Parameters
    ----------
    pi : array-like of shape (n_samples, n_classes)
        Nominal label distributions; every row on the probability simplex.
    r : array-like of shape (n_samples,)
        l1 radii, in ``[0, 2]`` (2 is the l1 diameter of the simplex).
    rho : array-like of shape (n_samples,)
        KL(q || pi) radii, finite and ``>= 0``.
    classes_ : array-like of shape (n_classes,)
        Class labels; column ``k`` of ``pi`` and ``counts`` is ``classes_[k]``.
    counts : array-like of shape (n_samples, n_classes)
        Vote counts behind each row (a single label counts as one vote), ``>= 0``.
    p_error : array-like of shape (n_samples,)
        The evidence score (estimated probability that the label is wrong) the
        radius mapping used, in ``[0, 1]``.

    Attributes
    ----------
    rowwise : bool
        Provenance, not a constructor argument: ``True`` only if every row is a
        function of that row's label evidence alone, given settings fixed before the
        labels were seen (the class list included). Only :class:`NoiseBudgetTransformer`
        sets it (see its ``Notes``); row subsets and scaling by one scalar keep it; a
        budget built by hand or by ``dataclasses.replace`` has ``False``. Whole-model
        flip certificates of :class:`~sklearn_cnat.partition.PartitionAggregationClassifier`
        require it.

    Examples
    --------
    >>> import numpy as np
    >>> b = NoiseBudget(pi=np.eye(2), r=[0.1, 0.2], rho=[0.005, 0.02],
    ...                 classes_=[0, 1], counts=np.eye(2), p_error=[0.0, 0.0])
    >>> len(b), b.n_classes, b.labels.tolist()
    (2, 2, [0, 1])
    >>> b.scaled(20.0).r.tolist()
    [2.0, 2.0]
    """

    pi: np.ndarray
    r: np.ndarray
    rho: np.ndarray
    classes_: np.ndarray
    counts: np.ndarray
    p_error: np.ndarray
    rowwise: bool = field(default=False, init=False)

    def __post_init__(self):
        arrays = {}
        for name in ("pi", "r", "rho", "counts", "p_error"):
            try:
                arr = np.array(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise NoiseBudgetError(f"NoiseBudget.{name} must be numeric: {exc}") from None
            if not np.all(np.isfinite(arr)):
                raise NoiseBudgetError(f"NoiseBudget.{name} contains NaN or infinite values")
            arrays[name] = arr
        pi, r, rho, counts, p_error = (arrays[k] for k in ("pi", "r", "rho", "counts", "p_error"))
        classes = np.asarray(self.classes_)
        if pi.ndim != 2:
            raise NoiseBudgetError(f"NoiseBudget.pi must be 2-D (n_samples, n_classes), got shape {pi.shape}")
        n, k = pi.shape
        if classes.shape != (k,):
            raise NoiseBudgetError(f"NoiseBudget.classes_ must have shape ({k},) to match pi, got {classes.shape}")
        if counts.shape != (n, k):
            raise NoiseBudgetError(f"NoiseBudget.counts must have shape {(n, k)} like pi, got {counts.shape}")
        for name, arr in (("r", r), ("rho", rho), ("p_error", p_error)):
            if arr.shape != (n,):
                raise NoiseBudgetError(f"NoiseBudget.{name} must have shape ({n},), got {arr.shape}")
        if np.any(pi < 0) or np.any(np.abs(pi.sum(axis=1) - 1.0) > _SIMPLEX_ATOL):
            raise NoiseBudgetError("NoiseBudget.pi rows must lie on the simplex (non-negative, summing to 1)")
        if np.any((r < 0) | (r > 2)):
            raise NoiseBudgetError("NoiseBudget.r (l1 radius) must lie in [0, 2]")
        if np.any(rho < 0):
            raise NoiseBudgetError("NoiseBudget.rho (KL radius) must be >= 0")
        if np.any(counts < 0):
            raise NoiseBudgetError("NoiseBudget.counts must be non-negative")
        if np.any((p_error < 0) | (p_error > 1)):
            raise NoiseBudgetError("NoiseBudget.p_error must lie in [0, 1]")
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "classes_", classes)

    def __len__(self):
        return self.pi.shape[0]

    def __repr__(self):
        return (f"NoiseBudget(n_samples={len(self)}, n_classes={self.n_classes}, "
                f"mean_r={self.r.mean() if len(self) else float('nan'):.4g}, "
                f"mean_rho={self.rho.mean() if len(self) else float('nan'):.4g})")

    def __getitem__(self, index):
        """Row subset: an int, a slice, an integer array or a boolean mask."""
        if isinstance(index, (numbers.Integral, np.integer)) and not isinstance(index, bool):
            index = [int(index)]
        if not isinstance(index, slice):
            index = np.asarray(index)
            if index.dtype == bool:
                if index.shape != (len(self),):
                    raise NoiseBudgetError(
                        f"boolean mask has shape {index.shape}, expected ({len(self)},)")
            elif not np.issubdtype(index.dtype, np.integer) and index.size:
                raise NoiseBudgetError(f"NoiseBudget index must be integers, a slice or a boolean mask, "
                                       f"got dtype {index.dtype}")
            else:
                index = index.astype(np.intp)
        return _with_rowwise(NoiseBudget(pi=self.pi[index], r=self.r[index], rho=self.rho[index],
                                         classes_=self.classes_, counts=self.counts[index],
                                         p_error=self.p_error[index]), self.rowwise)

    def scaled(self, s):
        """Return a new budget with radii ``r * s`` (clipped to 2) and ``rho * s``.

        Parameters
        ----------
        s : float or array-like of shape (n_samples,)
            Non-negative scale factor(s).
        """
        s = np.asarray(s, dtype=np.float64)
        if not np.all(np.isfinite(s)) or np.any(s < 0):
            raise NoiseBudgetError(f"scale must be finite and >= 0, got {s}")
        return _with_rowwise(NoiseBudget(pi=self.pi, r=np.minimum(self.r * s, 2.0), rho=self.rho * s,
                                         classes_=self.classes_, counts=self.counts, p_error=self.p_error),
                             self.rowwise and s.ndim == 0)

    @property
    def n_classes(self):
        """Number of classes ``K``."""
        return self.pi.shape[1]

    @property
    def n_votes(self):
        """Total votes per example, shape (n_samples,)."""
        return self.counts.sum(axis=1)

    @property
    def labels(self):
        """Plurality class index per example (ties go to the lowest index), shape (n_samples,)."""
        return np.argmax(self.counts, axis=1)


def _with_rowwise(budget, rowwise):
    """``budget`` with its provenance flag ``rowwise`` set (the only writer of the flag)."""
    object.__setattr__(budget, "rowwise", bool(rowwise))
    return budget


# --------------------------------------------------------------------------- math kernels


def _plurality(counts):
    """Index of the most-voted class, ties to the lowest index."""
    return np.argmax(counts, axis=1)


def _disagreement(counts):
    """``1 - max_k counts_k / sum_k counts_k``: the fraction of votes not for the plurality."""
    return 1.0 - counts.max(axis=1) / counts.sum(axis=1)


def _nominal(counts, label_idx, pi_kind, smoothing):
    """Nominal distributions: one-hot at ``label_idx`` or the vote histogram, then smoothed."""
    n, k = counts.shape
    if pi_kind == "onehot":
        pi = np.zeros((n, k))
        pi[np.arange(n), label_idx] = 1.0
    else:
        pi = counts / counts.sum(axis=1, keepdims=True)
    if smoothing:
        pi = (1.0 - smoothing) * pi + smoothing / k
    return pi


def _radius_linear(p_error, c, r_max):
    return np.minimum(c * p_error, r_max)


def _radius_piecewise(p_error, threshold, radius_hard, radius_easy):
    return np.where(p_error > threshold, radius_hard, radius_easy)


def _pinsker_rho(r):
    """KL radius ``r^2 / 2``: by Pinsker, KL(q||pi) <= r^2/2 implies ||q - pi||_1 <= r."""
    return 0.5 * np.asarray(r, dtype=np.float64) ** 2


def _weissman_l1_radius(n_votes, n_classes, delta):
    """Frequentist l1 radius from Weissman et al. (2003).

    ``P(||p_hat - p||_1 >= eps) <= (2^K - 2) exp(-m eps^2 / 2)``, so with
    probability at least ``1 - delta``, ``||p_hat - p||_1 < eps`` where
    ``eps = sqrt(2 / m * log((2^K - 2) / delta))``. Values ``>= 2`` are vacuous.
    """
    m = np.asarray(n_votes, dtype=np.float64)
    log_terms = n_classes * np.log(2.0) + np.log1p(-(2.0 ** (1 - n_classes))) - np.log(delta)
    with np.errstate(divide="ignore"):
        return np.sqrt(2.0 * log_terms / m)


def _mc_level(level, n_draws):
    """Quantile level inflated by two Monte-Carlo standard errors (conservative)."""
    return min(1.0, level + 2.0 * np.sqrt(level * (1.0 - level) / n_draws))


def _row_seed(seed, row):
    """A seed that depends only on ``seed`` and the row's values (not its position)."""
    digest = hashlib.blake2b(np.ascontiguousarray(row, dtype=np.float64).tobytes(), digest_size=8).digest()
    return np.random.SeedSequence(entropy=seed, spawn_key=(int.from_bytes(digest, "little"),))


def _posterior_radii(counts, pi, prior, delta, n_draws, seed):
    """Posterior-credible radii around ``pi`` under ``Dir(prior + counts)``.

    For each row, draws ``p ~ Dir(prior + counts_i)`` ``n_draws`` times and returns
    the empirical quantiles of ``||p - pi_i||_1`` and ``KL(p || pi_i)`` at level
    ``1 - delta / 2`` (each), inflated by two Monte-Carlo standard errors, so that
    the intersection of both balls has posterior mass ``>= 1 - delta`` (union bound).
    ``pi`` must have full support. Rows with identical ``(counts, pi)`` share one
    computation, and each row's draws are seeded from ``seed`` and its values only.
    """
    k = counts.shape[1]
    keys = np.concatenate([counts, pi], axis=1)
    unique, inverse = np.unique(keys, axis=0, return_inverse=True)
    level = _mc_level(1.0 - delta / 2.0, n_draws)
    r_u = np.empty(len(unique))
    rho_u = np.empty(len(unique))
    for j, row in enumerate(unique):
        c, p0 = row[:k], row[k:]
        rng = np.random.default_rng(_row_seed(seed, row))
        draws = rng.dirichlet(prior + c, size=n_draws)
        l1 = np.abs(draws - p0).sum(axis=1)
        kl = np.maximum((xlogy(draws, draws) - xlogy(draws, p0)).sum(axis=1), 0.0)
        r_u[j] = np.quantile(l1, level, method="higher")
        rho_u[j] = np.quantile(kl, level, method="higher")
    inverse = inverse.reshape(-1)
    return np.minimum(r_u[inverse], 2.0), rho_u[inverse]


# --------------------------------------------------------------------------- evidence parsing


def _is_multiannotator_output(X):
    if isinstance(X, dict):
        return True
    return hasattr(X, "columns") and "consensus_label" in getattr(X, "columns", ())


def _resolve_evidence(X, evidence):
    """The evidence kind of ``X`` (the ``"auto"`` rule is documented on the transformer)."""
    if evidence != "auto":
        return evidence
    if _is_multiannotator_output(X):
        return "multiannotator"
    arr = np.asarray(X)
    if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
        return "labels"
    if arr.ndim != 2:
        raise NoiseBudgetError(f"label evidence must be 1-D or 2-D, got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        return "annotators"
    if np.any(np.isnan(arr.astype(np.float64))) or np.any(arr == -1):
        return "annotators"
    return "counts"


def _missing_mask(arr):
    """NaN, None or -1 entries of an annotator matrix."""
    if np.issubdtype(arr.dtype, np.number):
        return np.isnan(arr.astype(np.float64)) | (arr == -1)
    import pandas as pd

    return np.asarray(pd.isna(arr), dtype=bool) | np.asarray(arr == -1, dtype=bool)


def _as_label_values(values, what):
    """Validate numeric label values (finite) and return them as an array."""
    values = np.asarray(values)
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        raise NoiseBudgetError(f"{what} contain NaN or infinite values")
    if values.dtype.kind == "O":
        import pandas as pd

        if np.any(pd.isna(values)):
            raise NoiseBudgetError(f"{what} contain missing values (NaN/None)")
    return values


def _tidy_classes(values):
    """Sorted unique labels; integral floats become int64 (so ``2.0`` is reported as ``2``)."""
    classes = np.unique(values)
    if classes.dtype.kind == "f" and classes.size and np.all(classes == np.round(classes)):
        classes = classes.astype(np.int64)
    return classes


def _encode(values, classes, what):
    """Class indices of ``values``; a NoiseBudgetError names labels not in ``classes``."""
    lookup = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    flat = np.asarray(values).ravel().tolist()
    idx = np.fromiter((lookup.get(v, -1) for v in flat), dtype=np.intp, count=len(flat))
    if np.any(idx < 0):
        bad = sorted({repr(v) for v, i in zip(flat, idx) if i < 0})[:5]
        raise NoiseBudgetError(f"{what} contain labels outside the classes {np.asarray(classes).tolist()}: "
                               f"{', '.join(bad)}; pass the full class list as `classes`")
    return idx.reshape(np.shape(values))


def _check_pred_probs(pred_probs, n, k):
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2 or pred_probs.shape[1] != k:
        raise NoiseBudgetError(f"pred_probs must have shape (n_samples, {k}) (one column per class), "
                               f"got {pred_probs.shape}")
    if pred_probs.shape[0] != n:
        raise NoiseBudgetError(f"pred_probs has {pred_probs.shape[0]} rows but the label evidence has {n}")
    if not np.all(np.isfinite(pred_probs)):
        raise NoiseBudgetError("pred_probs contains NaN or infinite values")
    if np.any(pred_probs < 0) or np.any(np.abs(pred_probs.sum(axis=1) - 1.0) > _SIMPLEX_ATOL):
        raise NoiseBudgetError("pred_probs rows must be non-negative and sum to 1")
    return pred_probs


def _onehot_counts(idx, k):
    counts = np.zeros((len(idx), k))
    counts[np.arange(len(idx)), idx] = 1.0
    return counts


def _annotator_counts(idx, missing, k):
    """Vote counts from an encoded annotator matrix (``idx`` ignored where ``missing``)."""
    n = idx.shape[0]
    counts = np.zeros((n, k))
    rows = np.broadcast_to(np.arange(n)[:, None], idx.shape)
    np.add.at(counts, (rows[~missing], idx[~missing]), 1.0)
    return counts


def _check_votes_present(counts):
    empty = np.flatnonzero(counts.sum(axis=1) == 0)
    if empty.size:
        raise NoiseBudgetError(f"{empty.size} rows have zero votes (e.g. row {empty[0]}); every example needs "
                               f"at least one label")


class _Evidence:
    """Parsed evidence: ``counts`` (n, K), the one-hot index ``label_idx`` (n,), ``p_error`` (n,)."""

    def __init__(self, counts, label_idx, p_error):
        self.counts = counts
        self.label_idx = label_idx
        self.p_error = np.clip(p_error, 0.0, 1.0)


def _read_counts(X):
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise NoiseBudgetError("vote counts must be numeric") from None
    if arr.ndim != 2:
        raise NoiseBudgetError(f"vote counts must be 2-D (n_samples, n_classes), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise NoiseBudgetError("vote counts contain NaN or infinite values")
    if np.any(arr < 0):
        raise NoiseBudgetError("vote counts must be non-negative; got negative counts (an annotator matrix "
                               "uses -1 for missing: pass evidence='annotators')")
    if np.any(arr != np.round(arr)):
        raise NoiseBudgetError("vote counts must be integers (integral floats such as 2.0 are accepted); got "
                               "non-integer counts")
    _check_votes_present(arr)
    return arr


def _read_labels(X):
    arr = np.asarray(X)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise NoiseBudgetError(f"labels must be 1-D (or of shape (n, 1)), got shape {arr.shape}")
    return _as_label_values(arr, "labels")


def _read_annotators(X):
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise NoiseBudgetError(f"an annotator label matrix must be 2-D (n_samples, n_annotators), "
                               f"got shape {arr.shape}")
    missing = _missing_mask(arr)
    if arr.dtype.kind in "fc" and np.any(np.isinf(arr)):
        raise NoiseBudgetError("the annotator label matrix contains infinite values")
    empty = np.flatnonzero(missing.all(axis=1))
    if empty.size:
        raise NoiseBudgetError(f"{empty.size} rows have zero votes (no annotator labelled them, e.g. row "
                               f"{empty[0]}); every example needs at least one label")
    return arr, missing


def _read_multiannotator(X):
    """``(consensus, quality, annotator_matrix_or_None)`` from cleanlab's output."""
    matrix = None
    if isinstance(X, dict):
        if "label_quality" not in X:
            raise NoiseBudgetError("cleanlab multiannotator output must contain a 'label_quality' DataFrame")
        table = X["label_quality"]
        matrix = X.get("labels_multiannotator")
    else:
        table = X
    for col in ("consensus_label", "consensus_quality_score"):
        if col not in getattr(table, "columns", ()):
            raise NoiseBudgetError(f"cleanlab multiannotator 'label_quality' must have a {col!r} column")
    consensus = _as_label_values(np.asarray(table["consensus_label"]), "consensus labels")
    quality = np.asarray(table["consensus_quality_score"], dtype=np.float64)
    if not np.all(np.isfinite(quality)) or np.any((quality < 0) | (quality > 1)):
        raise NoiseBudgetError("consensus_quality_score must be finite and in [0, 1]")
    if matrix is not None:
        matrix = _read_annotators(matrix)
        if matrix[0].shape[0] != len(consensus):
            raise NoiseBudgetError(f"labels_multiannotator has {matrix[0].shape[0]} rows but label_quality "
                                   f"has {len(consensus)}")
    return consensus, quality, matrix


def _cleanlab_label_quality(label_idx, pred_probs):
    from cleanlab.rank import get_label_quality_scores

    return np.asarray(get_label_quality_scores(label_idx, pred_probs), dtype=np.float64)


def _cleanlab_multiannotator(idx, missing, pred_probs):
    """cleanlab's consensus labels and quality scores for an encoded annotator matrix."""
    n_labelled = (~missing).sum(axis=1)
    if idx.shape[1] == 1 or np.all(n_labelled == 1):
        # cleanlab's multiannotator routine refuses one label per example and asks for
        # get_label_quality_scores on the single labels instead.
        single = np.where(missing, 0, idx)[np.arange(len(idx)), np.argmax(~missing, axis=1)]
        return single, _cleanlab_label_quality(single, pred_probs)
    import pandas as pd
    from cleanlab.multiannotator import get_label_quality_multiannotator

    frame = pd.DataFrame(np.where(missing, np.nan, idx.astype(np.float64)))
    table = get_label_quality_multiannotator(frame, pred_probs, verbose=False, return_detailed_quality=False,
                                             return_annotator_stats=False)["label_quality"]
    return (np.asarray(table["consensus_label"], dtype=np.intp),
            np.asarray(table["consensus_quality_score"], dtype=np.float64))


# --------------------------------------------------------------------------- transformer


class NoiseBudgetTransformer(TransformerMixin, BaseEstimator):
    """Turn label evidence into per-example noise budgets (:class:`NoiseBudget`).

    ``X`` is label *evidence*, not features: one of

    - ``"counts"``: a vote-count matrix of shape (n_samples, n_classes) of
      non-negative integers (integral floats accepted), column ``k`` for ``classes_[k]``;
    - ``"annotators"``: an annotator label matrix of shape (n_samples, n_annotators)
      with ``NaN``, ``None`` or ``-1`` for "not labelled" (cleanlab's multi-annotator format);
    - ``"labels"``: labels of shape (n_samples,) or (n_samples, 1);
    - ``"multiannotator"``: the output of
      ``cleanlab.multiannotator.get_label_quality_multiannotator`` (the dict, or its
      ``"label_quality"`` DataFrame). Add the annotator matrix to the dict under
      ``"labels_multiannotator"`` to get vote counts from it; otherwise each example
      counts as one vote at its consensus label.

    ``evidence="auto"`` decides in this order: a dict, or a DataFrame with a
    ``consensus_label`` column -> multiannotator; 1-D or (n, 1) -> labels; 2-D
    non-numeric, or containing NaN or -1 -> annotators; other 2-D -> counts. A
    complete annotator matrix (no missing entry) of small integers looks like counts:
    pass ``evidence="annotators"`` for it. ``transform`` reads its input as the kind
    resolved in ``fit`` (``evidence_``).

    Evidence score ``p_error`` (used by the ``linear`` and ``piecewise`` mappings):

    - votes without ``pred_probs``: disagreement ``1 - max_k n_k / sum_k n_k``;
    - labels without ``pred_probs``: 0 (a single label carries no evidence of error);
    - labels with out-of-sample ``pred_probs``: ``1 - cleanlab.rank.get_label_quality_scores``;
    - an annotator matrix with ``pred_probs``: cleanlab's CROWDLAB,
      ``1 - consensus_quality_score`` of ``get_label_quality_multiannotator``, and
      ``pi="onehot"`` sits at cleanlab's consensus label;
    - multiannotator output: ``1 - consensus_quality_score``, one-hot at ``consensus_label``.

    ``pred_probs`` is refused with vote counts (CROWDLAB needs annotator identities;
    pass the annotator matrix instead) and with multiannotator output (already scored).

    Parameters
    ----------
    evidence : {"auto", "counts", "annotators", "labels", "multiannotator"}, default="auto"
        How to read ``X`` (see above).
    classes : array-like of shape (n_classes,) or None, default=None
        The class labels, in column order. ``None``: ``arange(K)`` for counts and when
        ``pred_probs`` is given (its K columns); otherwise the sorted unique labels seen
        in ``fit``. Pass the full list so that classes absent from the data are kept.
    pi : {"onehot", "votes"}, default="onehot"
        Nominal distribution: one-hot at the plurality (ties to the lowest index) /
        given / consensus label, or the vote histogram ``counts / counts.sum()``.
    smoothing : float in [0, 1), default=0.0
        ``pi <- (1 - smoothing) * pi + smoothing / K``. The smoothed ``pi`` *is* the
        declared nominal. Needed for a non-trivial KL ball: ``KL(q || pi)`` is finite
        only on ``supp(pi)``, so the KL ball around a one-hot ``pi`` is ``{pi}``.
    mapping : {"flat", "linear", "piecewise", "posterior"}, default="flat"
        How radii are set: ``flat`` ``r = radius``; ``linear``
        ``r = min(c * p_error, r_max)``; ``piecewise`` ``r = radius_hard`` where
        ``p_error > threshold_`` (the ``1 - hard_fraction`` quantile of ``p_error``
        in ``fit``), else ``radius_easy``; ``posterior`` the Dirichlet-posterior
        credible radius (see ``delta``, ``prior``). For all but ``posterior``,
        ``rho = r**2 / 2`` (Pinsker: the KL ball then lies inside the l1 ball).
    scale : float >= 0, default=1.0
        Multiplies every radius after the mapping: ``r <- min(scale * r, 2)``,
        ``rho <- scale * rho`` (exactly :meth:`NoiseBudget.scaled`).
    radius : float in [0, 2], default=0.1
        The ``flat`` l1 radius.
    c : float >= 0, default=1.0
        ``linear`` slope.
    r_max : float in [0, 2], default=1.0
        ``linear`` cap.
    hard_fraction : float in [0, 1], default=0.2
        ``piecewise``: the fraction of ``fit`` examples (highest ``p_error``) that get
        ``radius_hard`` (at most this fraction; ties at the threshold are "easy").
    radius_hard : float in [0, 2], default=0.5
        ``piecewise`` radius of hard examples.
    radius_easy : float in [0, 2], default=0.0
        ``piecewise`` radius of the others.
    delta : float in (0, 1), default=0.05
        ``posterior``: the set misses the annotator distribution with posterior
        probability at most ``delta`` (``delta / 2`` for each of the two balls).
    prior : float > 0, default=1.0
        ``posterior``: symmetric Dirichlet prior concentration per class; the
        posterior of example ``i`` is ``Dir(prior + counts_i)``.
    n_draws : int >= 100, default=4000
        ``posterior``: Monte-Carlo draws per distinct ``(counts, pi)`` row.
    random_state : int, RandomState instance or None, default=0
        ``posterior``: seeds the Monte-Carlo draws (a row's draws depend only on the
        seed and the row's values, so a subset gets the same radii as the full set).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    n_classes_ : int
        Number of classes.
    evidence_ : str
        The evidence kind resolved in ``fit``.
    threshold_ : float or None
        ``piecewise`` threshold on ``p_error`` (None for other mappings).
    seed_ : int
        The integer seed of the ``posterior`` draws.

    Notes
    -----
    Most of scikit-learn's common estimator checks do not apply: they feed random
    real-valued features, whereas ``X`` here is label evidence, and ``transform``
    returns a :class:`NoiseBudget`, not an array. The parameter checks (cloning,
    ``get_params``/``set_params``, nothing done in ``__init__``) do apply and are tested.

    The budgets returned carry ``rowwise=True`` (see :class:`NoiseBudget`) exactly when
    row ``i`` is a function of evidence row ``i`` alone: a mapping other than
    ``piecewise`` (whose threshold is learned from all rows), an integer
    ``random_state`` for ``posterior``, no ``pred_probs`` (out-of-sample predictions
    and CROWDLAB scores depend on other rows), classes not inferred from the labels
    (``classes`` given, or vote counts, whose columns fix K), and an evidence kind that
    a changed row cannot switch: vote counts or labels (a row that is not a valid count
    or label row raises), an annotator matrix only with ``evidence="annotators"`` (under
    ``"auto"``, removing the last missing entry turns it into counts), never
    multiannotator output (scored on all rows by cleanlab).

    Examples
    --------
    >>> import numpy as np
    >>> votes = np.array([[3, 0, 0], [2, 1, 0], [1, 1, 1]])
    >>> budget = NoiseBudgetTransformer(mapping="linear").fit_transform(votes)
    >>> budget.r.round(3).tolist()
    [0.0, 0.333, 0.667]
    >>> budget.labels.tolist()
    [0, 0, 0]
    """

    _parameter_constraints = {
        "evidence": [StrOptions({"auto", *_EVIDENCE_KINDS})],
        "classes": ["array-like", None],
        "pi": [StrOptions({"onehot", "votes"})],
        "smoothing": [Interval(numbers.Real, 0, 1, closed="left")],
        "mapping": [StrOptions({"flat", "linear", "piecewise", "posterior"})],
        "scale": [Interval(numbers.Real, 0, None, closed="left")],
        "radius": [Interval(numbers.Real, 0, 2, closed="both")],
        "c": [Interval(numbers.Real, 0, None, closed="left")],
        "r_max": [Interval(numbers.Real, 0, 2, closed="both")],
        "hard_fraction": [Interval(numbers.Real, 0, 1, closed="both")],
        "radius_hard": [Interval(numbers.Real, 0, 2, closed="both")],
        "radius_easy": [Interval(numbers.Real, 0, 2, closed="both")],
        "delta": [Interval(numbers.Real, 0, 1, closed="neither")],
        "prior": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_draws": [Interval(numbers.Integral, 100, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        evidence="auto",
        classes=None,
        pi="onehot",
        smoothing=0.0,
        mapping="flat",
        scale=1.0,
        radius=0.1,
        c=1.0,
        r_max=1.0,
        hard_fraction=0.2,
        radius_hard=0.5,
        radius_easy=0.0,
        delta=0.05,
        prior=1.0,
        n_draws=4000,
        random_state=0,
    ):
        self.evidence = evidence
        self.classes = classes
        self.pi = pi
        self.smoothing = smoothing
        self.mapping = mapping
        self.scale = scale
        self.radius = radius
        self.c = c
        self.r_max = r_max
        self.hard_fraction = hard_fraction
        self.radius_hard = radius_hard
        self.radius_easy = radius_easy
        self.delta = delta
        self.prior = prior
        self.n_draws = n_draws
        self.random_state = random_state

    # ------------------------------------------------------------------ fit / transform

    def fit(self, X, y=None, pred_probs=None):
        """Learn the classes (and the ``piecewise`` threshold) from label evidence.

        Parameters
        ----------
        X : array-like, DataFrame or dict
            Label evidence (see the class docstring).
        y : None
            Ignored.
        pred_probs : array-like of shape (n_samples, n_classes), default=None
            Out-of-sample predicted probabilities, for labels or an annotator matrix.

        Returns
        -------
        self : NoiseBudgetTransformer
        """
        self._fit(X, pred_probs)
        return self

    def fit_transform(self, X, y=None, pred_probs=None):
        """``fit(X, pred_probs=pred_probs).transform(X, pred_probs=pred_probs)``, reading ``X`` once.

        Returns
        -------
        budget : NoiseBudget of length n_samples
        """
        evidence = self._fit(X, pred_probs)
        return self._budget(evidence, self._rowwise(pred_probs))

    def transform(self, X, pred_probs=None):
        """Noise budgets for label evidence ``X`` (read as ``evidence_``).

        Parameters
        ----------
        X : array-like, DataFrame or dict
            Label evidence of the kind seen in ``fit``.
        pred_probs : array-like of shape (n_samples, n_classes), default=None
            Out-of-sample predicted probabilities, for labels or an annotator matrix.

        Returns
        -------
        budget : NoiseBudget of length n_samples
        """
        if not hasattr(self, "classes_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet; call 'fit' first.")
        return self._budget(self._read(X, pred_probs), self._rowwise(pred_probs))

    # ------------------------------------------------------------------ internals

    def _rowwise(self, pred_probs):
        """Whether each output row is a function of its own evidence row (``NoiseBudget.rowwise``)."""
        kind_fixed = self.evidence_ in ("counts", "labels") or self.evidence == self.evidence_ == "annotators"
        return (self.mapping != "piecewise" and pred_probs is None and kind_fixed
                and (self.classes is not None or self.evidence_ == "counts")
                and (self.mapping != "posterior" or isinstance(self.random_state, numbers.Integral)))

    def _fit(self, X, pred_probs):
        self._validate_params()
        kind = _resolve_evidence(X, self.evidence)
        self.evidence_ = kind
        self.classes_ = self._infer_classes(kind, X, pred_probs)
        self.n_classes_ = len(self.classes_)
        if self.random_state is None or isinstance(self.random_state, np.random.RandomState):
            self.seed_ = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        else:
            self.seed_ = int(self.random_state)
        evidence = self._read(X, pred_probs)
        self.threshold_ = None
        if self.mapping == "piecewise":
            if self.hard_fraction >= 1:
                self.threshold_ = -np.inf
            else:
                self.threshold_ = float(np.quantile(evidence.p_error, 1.0 - self.hard_fraction))
        return evidence

    def _infer_classes(self, kind, X, pred_probs):
        if self.classes is not None:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.size == 0:
                raise NoiseBudgetError(f"classes must be a non-empty 1-D list, got shape {classes.shape}")
            if len(np.unique(classes)) != len(classes):
                raise NoiseBudgetError("classes must not contain duplicates")
            if kind == "counts" and np.ndim(X) == 2 and np.shape(X)[1] != len(classes):
                raise NoiseBudgetError(f"vote counts have {np.shape(X)[1]} columns but classes has "
                                       f"{len(classes)} entries; they must match")
            return classes
        if kind == "counts":
            return np.arange(np.asarray(X).shape[1]) if np.ndim(X) == 2 else np.arange(0)
        if pred_probs is not None:
            return np.arange(np.shape(pred_probs)[1]) if np.ndim(pred_probs) == 2 else np.arange(0)
        if kind == "labels":
            return _tidy_classes(_read_labels(X))
        if kind == "annotators":
            arr, missing = _read_annotators(X)
            return _tidy_classes(_as_label_values(arr[~missing], "annotator labels"))
        consensus, _, matrix = _read_multiannotator(X)
        values = [consensus]
        if matrix is not None:
            values.append(_as_label_values(matrix[0][~matrix[1]], "annotator labels"))
        return _tidy_classes(np.concatenate(values))

    def _read(self, X, pred_probs):
        """Parse ``X`` (of kind ``evidence_``) into counts, one-hot indices and ``p_error``."""
        kind, k = self.evidence_, self.n_classes_
        if kind == "counts":
            if pred_probs is not None:
                raise NoiseBudgetError("pred_probs cannot be combined with vote counts (cleanlab's CROWDLAB "
                                       "needs annotator identities): pass the annotator matrix instead")
            counts = _read_counts(X)
            if counts.shape[1] != k:
                raise NoiseBudgetError(f"vote counts have {counts.shape[1]} columns but the transformer was "
                                       f"fitted with {k} classes")
            return _Evidence(counts, _plurality(counts), _disagreement(counts))
        if kind == "labels":
            idx = _encode(_read_labels(X), self.classes_, "labels")
            counts = _onehot_counts(idx, k)
            if pred_probs is None:
                return _Evidence(counts, idx, np.zeros(len(idx)))
            pred_probs = _check_pred_probs(pred_probs, len(idx), k)
            return _Evidence(counts, idx, 1.0 - _cleanlab_label_quality(idx, pred_probs))
        if kind == "annotators":
            arr, missing = _read_annotators(X)
            idx = np.zeros(arr.shape, dtype=np.intp)
            idx[~missing] = _encode(arr[~missing], self.classes_, "annotator labels")
            counts = _annotator_counts(idx, missing, k)
            if pred_probs is None:
                return _Evidence(counts, _plurality(counts), _disagreement(counts))
            pred_probs = _check_pred_probs(pred_probs, len(counts), k)
            consensus, quality = _cleanlab_multiannotator(idx, missing, pred_probs)
            return _Evidence(counts, consensus, 1.0 - quality)
        # multiannotator
        if pred_probs is not None:
            raise NoiseBudgetError("pred_probs is not used with cleanlab multiannotator output (it is already "
                                   "scored); drop pred_probs")
        consensus, quality, matrix = _read_multiannotator(X)
        label_idx = _encode(consensus, self.classes_, "consensus labels")
        if matrix is None:
            counts = _onehot_counts(label_idx, k)
        else:
            arr, missing = matrix
            idx = np.zeros(arr.shape, dtype=np.intp)
            idx[~missing] = _encode(arr[~missing], self.classes_, "annotator labels")
            counts = _annotator_counts(idx, missing, k)
        return _Evidence(counts, label_idx, 1.0 - quality)

    def _budget(self, ev, rowwise=False):
        pi = _nominal(ev.counts, ev.label_idx, self.pi, self.smoothing)
        if self.mapping == "posterior":
            no_support = np.flatnonzero(np.any(pi <= 0, axis=1))
            if no_support.size:
                raise NoiseBudgetError(
                    f"mapping='posterior' computes a KL radius around pi, finite only where pi has full "
                    f"support; {no_support.size} rows of pi have zero entries: set smoothing > 0")
            r, rho = _posterior_radii(ev.counts, pi, self.prior, self.delta, self.n_draws, self.seed_)
        else:
            if self.mapping == "flat":
                r = np.full(len(pi), float(self.radius))
            elif self.mapping == "linear":
                r = _radius_linear(ev.p_error, self.c, self.r_max)
            else:
                r = _radius_piecewise(ev.p_error, self.threshold_, self.radius_hard, self.radius_easy)
            rho = _pinsker_rho(r)
        budget = _with_rowwise(NoiseBudget(pi=pi, r=r, rho=rho, classes_=self.classes_, counts=ev.counts,
                                           p_error=ev.p_error), rowwise)
        return budget if self.scale == 1 else budget.scaled(self.scale)
