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
import os
from dataclasses import dataclass, field

import numpy as np
from scipy.special import xlogy
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import check_random_state

from ._compat import HasMethods, Interval, StrOptions
from .evidence import (  # noqa: F401  (the parsing kernels live in evidence.py; re-exported for old imports)
    LabelEvidence,
    _annotator_counts,
    _as_label_values,
    _check_votes_present,
    _encode,
    _missing_mask,
    _onehot_counts,
    _read_annotators,
    _read_counts,
    _read_labels,
    _resolve_kind,
    _tidy_classes,
    read_evidence,
)
from .exceptions import NoiseBudgetError, NotFittedError

__all__ = ["NoiseBudget", "NoiseBudgetTransformer", "NoiseBudgetError"]

_SIMPLEX_ATOL = 1e-6
_EVIDENCE_KINDS = ("counts", "annotators", "labels", "long", "multiannotator")


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
        KL radii, ``>= 0``; ``+inf`` where no finite KL ball holds the declared set
        (``mapping="posterior"`` around a ``pi`` without full support): KL geometries
        refuse such rows, l1 ignores them.
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
    aggregator : str or None
        Provenance, not a constructor argument: the name of the aggregator (e.g.
        ``"DawidSkene"``) whose model of annotator reliability set ``pi``
        (``NoiseBudgetTransformer(aggregator=...)``); None otherwise. Such a ``pi_i``
        depends on the other examples' votes, so tier ``"stochastic"`` refuses it
        (docs/budgets.md, "Aggregators"); row subsets and scaling keep it.

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
    aggregator: str = field(default=None, init=False)

    def __post_init__(self):
        arrays = {}
        for name in ("pi", "r", "rho", "counts", "p_error"):
            try:
                arr = np.array(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise NoiseBudgetError(f"NoiseBudget.{name} must be numeric: {exc}") from None
            bad = ~np.isfinite(arr) if name != "rho" else (np.isnan(arr) | (arr == -np.inf))
            if np.any(bad):
                raise NoiseBudgetError(f"NoiseBudget.{name} contains NaN or infinite values"
                                       + (" (rho may be +inf: no KL limit)" if name == "rho" else ""))
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
        return _with_aggregator(_with_rowwise(NoiseBudget(pi=self.pi[index], r=self.r[index], rho=self.rho[index],
                                                          classes_=self.classes_, counts=self.counts[index],
                                                          p_error=self.p_error[index]), self.rowwise),
                                self.aggregator)

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
        return _with_aggregator(_with_rowwise(NoiseBudget(pi=self.pi, r=np.minimum(self.r * s, 2.0),
                                                          rho=self.rho * s, classes_=self.classes_,
                                                          counts=self.counts, p_error=self.p_error),
                                              self.rowwise and s.ndim == 0), self.aggregator)

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


def _with_aggregator(budget, name):
    """``budget`` with its provenance field ``aggregator`` set (None or the aggregator's name)."""
    object.__setattr__(budget, "aggregator", None if name is None else str(name))
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
    if isinstance(X, LabelEvidence):
        if evidence not in ("auto", X.kind):
            raise NoiseBudgetError(f"evidence={evidence!r} but the LabelEvidence was read as {X.kind!r}")
        return X.kind
    if evidence != "auto":
        return evidence
    if _is_multiannotator_output(X):
        return "multiannotator"
    if hasattr(X, "columns") or isinstance(X, (str, os.PathLike)):
        return None  # a table or a file: read_evidence decides, reading it once
    return _resolve_kind(X)


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


class _Evidence:
    """Scored evidence: ``counts`` (n, K), the one-hot index ``label_idx`` (n,), ``p_error`` (n,),
    and ``posterior`` (n, K), the aggregator's class probabilities (None without one)."""

    def __init__(self, counts, label_idx, p_error, posterior=None):
        self.counts = counts
        self.label_idx = label_idx
        self.p_error = np.clip(p_error, 0.0, 1.0)
        self.posterior = posterior


def _aggregate(aggregator, record):
    """Class probabilities (n, K) of a crowd-kit-style aggregator fitted on ``record``'s votes.

    The aggregator is cloned (crowd-kit's are transductive: ``fit_predict_proba`` fits
    and predicts on the same votes) and sees ``DataFrame[task, worker, label]`` with the
    item's row index, the annotator's index and the class index.
    """
    import pandas as pd
    from sklearn.base import clone

    name = type(aggregator).__name__
    if record.votes is None:
        raise NoiseBudgetError(f"aggregator={name} models each annotator's reliability and needs to know who gave "
                               f"which vote; {record.kind} evidence has no annotator identities: pass an annotator "
                               f"matrix (evidence='annotators') or long-format votes (item, annotator, label)")
    n, k = record.counts.shape
    frame = pd.DataFrame({"task": record.votes[:, 0], "worker": record.votes[:, 1], "label": record.votes[:, 2]})
    proba = clone(aggregator, safe=False).fit_predict_proba(frame)
    if not (hasattr(proba, "reindex") and hasattr(proba, "columns")):
        raise NoiseBudgetError(f"{name}.fit_predict_proba must return a DataFrame indexed by task with one column "
                               f"per label, got {type(proba).__name__}")
    missing = sorted(set(range(n)) - set(proba.index.tolist()))
    if missing:
        raise NoiseBudgetError(f"{name}.fit_predict_proba returned no probabilities for {len(missing)} items "
                               f"(e.g. row {missing[0]})")
    unknown = sorted(set(proba.columns.tolist()) - set(range(k)), key=repr)
    if unknown:
        raise NoiseBudgetError(f"{name}.fit_predict_proba returned columns {unknown[:3]} that are not labels given")
    post = proba.reindex(index=range(n), columns=range(k), fill_value=0.0).to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(post)) or np.any(post < 0) or np.any(np.abs(post.sum(axis=1) - 1.0) > _SIMPLEX_ATOL):
        raise NoiseBudgetError(f"{name}.fit_predict_proba must return finite, non-negative probabilities summing "
                               f"to 1 per task")
    return post / post.sum(axis=1, keepdims=True)


def _positional(record):
    """Long-format votes whose items are the row positions ``0..n-1``, in that order."""
    items = record.items.tolist()
    ok = all(isinstance(v, (numbers.Integral, np.integer)) and not isinstance(v, bool) for v in items)
    if not ok or sorted(int(v) for v in items) != list(range(len(items))):
        raise NoiseBudgetError(
            f"long-format votes name their items ({', '.join(repr(v) for v in items[:3])}, ...), and the budget's "
            f"rows must follow the rows of X: order them with sklearn_cnat.evidence.read_evidence(votes)"
            f".align(item_names) and pass the LabelEvidence, or number the items 0..n-1 (row positions)")
    return record.take(np.argsort(np.asarray(items, dtype=np.int64), kind="stable"))


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

    ``X`` is label *evidence*, not features, read by
    :func:`sklearn_cnat.evidence.read_evidence` (an array, a DataFrame, a file name or a
    :class:`~sklearn_cnat.evidence.LabelEvidence`): one of

    - ``"counts"``: a vote-count matrix of shape (n_samples, n_classes) of
      non-negative integers (integral floats accepted), column ``k`` for ``classes_[k]``;
    - ``"annotators"``: an annotator label matrix of shape (n_samples, n_annotators)
      with ``NaN``, ``None`` or ``-1`` for "not labelled" (cleanlab's multi-annotator format);
    - ``"labels"``: labels of shape (n_samples,) or (n_samples, 1);
    - ``"long"``: one row per vote, a DataFrame with item, annotator and label columns
      (crowd-kit's ``task, worker, label``). Its items must be the row positions
      ``0..n-1``; for named items (file names) pass
      ``read_evidence(votes).align(names)`` instead, which orders them by name;
    - ``"multiannotator"``: the output of
      ``cleanlab.multiannotator.get_label_quality_multiannotator`` (the dict, or its
      ``"label_quality"`` DataFrame). Add the annotator matrix to the dict under
      ``"labels_multiannotator"`` to get vote counts from it; otherwise each example
      counts as one vote at its consensus label.

    ``evidence="auto"`` decides by structure, never by one value: a dict, or a DataFrame
    with a ``consensus_label`` column -> multiannotator; a table with item, annotator
    and label columns (by name) -> long; 1-D or (n, 1) -> labels; 2-D with a
    non-numeric entry -> annotators; 2-D numeric without missing entries -> counts. A
    numeric matrix with NaN, blanks or -1 is refused (broken counts, or an annotator
    matrix: pass ``evidence="annotators"`` or ``"counts"``), and so is a complete
    annotator matrix of integers read as counts unless declared: pass
    ``evidence="annotators"`` for it. ``transform`` reads its input as the kind
    resolved in ``fit`` (``evidence_``).

    Evidence score ``p_error`` (used by the ``linear`` and ``piecewise`` mappings):

    - votes without ``pred_probs``: disagreement ``1 - max_k n_k / sum_k n_k``;
    - labels without ``pred_probs``: 0 (a single label carries no evidence of error);
    - labels with out-of-sample ``pred_probs``: ``1 - cleanlab.rank.get_label_quality_scores``;
    - an annotator matrix with ``pred_probs``: cleanlab's CROWDLAB,
      ``1 - consensus_quality_score`` of ``get_label_quality_multiannotator``, and
      ``pi="onehot"`` sits at cleanlab's consensus label;
    - multiannotator output: ``1 - consensus_quality_score``, one-hot at ``consensus_label``;
    - with an ``aggregator``: ``1 - max_k P(class k | votes)`` under its model.

    ``pred_probs`` is refused with vote counts (CROWDLAB needs annotator identities;
    pass the annotator matrix instead) and with multiannotator output (already scored).

    Parameters
    ----------
    evidence : {"auto", "counts", "annotators", "labels", "long", "multiannotator"}, default="auto"
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
    aggregator : object with ``fit_predict_proba`` or None, default=None
        A model of annotator reliability with crowd-kit's interface:
        ``fit_predict_proba(DataFrame[task, worker, label])`` returns a DataFrame indexed
        by task with one column per label (e.g. crowd-kit's ``DawidSkene``, or
        :class:`sklearn_cnat.aggregation.DawidSkene`). Cloned and fitted on the votes of
        each call (``fit`` and ``transform`` alike). It sets the nominal: ``pi="votes"``
        is its class posterior, ``pi="onehot"`` one-hot at its most probable class;
        ``counts`` stay the votes. Needs annotator identities (an annotator matrix or
        long format) and no ``pred_probs``. Such a ``pi_i`` depends on every example's
        votes, so tier ``"stochastic"`` refuses the budgets (see Notes).

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

    With an ``aggregator`` the budgets carry ``aggregator=<its class name>`` and
    ``rowwise=False``, and the tiers read as follows (docs/budgets.md, "Aggregators"):
    ``"bounded"`` holds as stated (it is about the declared sets around the declared
    ``pi``); the ridge ``"flip"`` tier counts rows of ``pi``, and one changed vote can move
    many rows through the aggregator's annotator model; ``"stochastic"`` is refused
    (Theorem 4 needs ``pi_i`` fixed by example ``i``'s own votes), and so are the
    whole-model flip certificates of ``PartitionAggregationClassifier`` (row-wise budgets).

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
        "aggregator": [HasMethods(["fit_predict_proba"]), None],
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
        aggregator=None,
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
        self.aggregator = aggregator

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
        kind_fixed = (self.evidence_ in ("counts", "labels", "long")
                      or self.evidence == self.evidence_ == "annotators")
        return (self.mapping != "piecewise" and pred_probs is None and kind_fixed and self.aggregator is None
                and (self.classes is not None or self.evidence_ == "counts")
                and (self.mapping != "posterior" or isinstance(self.random_state, numbers.Integral)))

    def _fit(self, X, pred_probs):
        self._validate_params()
        kind = _resolve_evidence(X, self.evidence)
        if self.random_state is None or isinstance(self.random_state, np.random.RandomState):
            self.seed_ = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        else:
            self.seed_ = int(self.random_state)
        if kind == "multiannotator":
            self.evidence_ = kind
            self.classes_ = self._infer_classes(kind, X, pred_probs)
            self.n_classes_ = len(self.classes_)
            evidence = self._read(X, pred_probs)
        else:
            record = self._record(X, kind, self._declared_classes(kind, X, pred_probs))
            self.evidence_ = record.kind
            self.classes_ = record.classes
            self.n_classes_ = len(self.classes_)
            evidence = self._score(record, pred_probs)
        self.threshold_ = None
        if self.mapping == "piecewise":
            if self.hard_fraction >= 1:
                self.threshold_ = -np.inf
            else:
                self.threshold_ = float(np.quantile(evidence.p_error, 1.0 - self.hard_fraction))
        return evidence

    def _declared_classes(self, kind, X, pred_probs):
        """``classes`` validated; else ``arange(K)`` of ``pred_probs`` for label-valued evidence; else None."""
        if self.classes is not None:
            classes = np.asarray(self.classes)
            if classes.ndim != 1 or classes.size == 0:
                raise NoiseBudgetError(f"classes must be a non-empty 1-D list, got shape {classes.shape}")
            if len(np.unique(classes)) != len(classes):
                raise NoiseBudgetError("classes must not contain duplicates")
            return classes
        if pred_probs is not None and kind not in ("counts", None):
            return np.arange(np.shape(pred_probs)[1]) if np.ndim(pred_probs) == 2 else np.arange(0)
        return None

    def _record(self, X, kind, classes):
        """``X`` read once into a :class:`~sklearn_cnat.evidence.LabelEvidence` (rows in the order of X)."""
        if kind == "counts" and classes is not None and not isinstance(X, LabelEvidence) \
                and not hasattr(X, "columns") and np.ndim(X) == 2 and np.shape(X)[1] != len(classes):
            fitted = hasattr(self, "n_classes_") and classes is self.classes_
            raise NoiseBudgetError(f"vote counts have {np.shape(X)[1]} columns but "
                                   + (f"the transformer was fitted with {len(classes)} classes" if fitted else
                                      f"classes has {len(classes)} entries; they must match"))
        record = read_evidence(X, "auto" if kind is None else kind, classes=classes)
        if record.kind == "long" and not isinstance(X, LabelEvidence):
            record = _positional(record)
        return record

    def _score(self, record, pred_probs):
        """Counts, one-hot indices and ``p_error`` (and an aggregator's posterior) from a record."""
        kind, k, counts = record.kind, record.n_classes, np.array(record.counts)
        if self.aggregator is not None:
            if pred_probs is not None:
                raise NoiseBudgetError("pred_probs cannot be combined with an aggregator (both score the labels): "
                                       "drop one")
            post = _aggregate(self.aggregator, record)
            return _Evidence(counts, np.argmax(post, axis=1), 1.0 - post.max(axis=1), posterior=post)
        if kind == "counts":
            if pred_probs is not None:
                raise NoiseBudgetError("pred_probs cannot be combined with vote counts (cleanlab's CROWDLAB "
                                       "needs annotator identities): pass the annotator matrix instead")
            return _Evidence(counts, _plurality(counts), _disagreement(counts))
        if kind == "labels":
            idx = _plurality(counts)
            if pred_probs is None:
                return _Evidence(counts, idx, np.zeros(len(idx)))
            pred_probs = _check_pred_probs(pred_probs, len(idx), k)
            return _Evidence(counts, idx, 1.0 - _cleanlab_label_quality(idx, pred_probs))
        if pred_probs is None:
            return _Evidence(counts, _plurality(counts), _disagreement(counts))
        idx, missing = record.annotator_matrix()
        pred_probs = _check_pred_probs(pred_probs, len(counts), k)
        consensus, quality = _cleanlab_multiannotator(idx, missing, pred_probs)
        return _Evidence(counts, consensus, 1.0 - quality)

    def _infer_classes(self, kind, X, pred_probs):
        """Classes of cleanlab multiannotator output (declared, or its labels)."""
        declared = self._declared_classes(kind, X, pred_probs)
        if declared is not None:
            return declared
        consensus, _, matrix = _read_multiannotator(X)
        values = [consensus]
        if matrix is not None:
            values.append(_as_label_values(matrix[0][~matrix[1]], "annotator labels"))
        return _tidy_classes(np.concatenate(values))

    def _read(self, X, pred_probs):
        """Parse ``X`` (of kind ``evidence_``) into counts, one-hot indices and ``p_error``."""
        kind, k = self.evidence_, self.n_classes_
        if kind != "multiannotator":
            return self._score(self._record(X, kind, self.classes_), pred_probs)
        if pred_probs is not None:
            raise NoiseBudgetError("pred_probs is not used with cleanlab multiannotator output (it is already "
                                   "scored); drop pred_probs")
        if self.aggregator is not None:
            raise NoiseBudgetError("an aggregator cannot rescore cleanlab multiannotator output; pass the "
                                   "annotator matrix instead")
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
        if ev.posterior is None:
            pi = _nominal(ev.counts, ev.label_idx, self.pi, self.smoothing)
        else:
            pi = ev.posterior if self.pi == "votes" else _onehot_counts(ev.label_idx, ev.counts.shape[1])
            if self.smoothing:
                pi = (1.0 - self.smoothing) * pi + self.smoothing / pi.shape[1]
        if self.mapping == "posterior":
            # The l1 quantile is finite for any pi; the KL one only where pi has full support
            # (KL(p || pi) is infinite for a posterior draw p off pi's support): rho = inf there,
            # which every KL consumer refuses with a message naming smoothing (docs/budgets.md).
            no_support = np.any(pi <= 0, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                r, rho = _posterior_radii(ev.counts, pi, self.prior, self.delta, self.n_draws, self.seed_)
            rho = np.where(no_support, np.inf, rho)
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
        if self.aggregator is not None:
            budget = _with_aggregator(budget, type(self.aggregator).__name__)
        return budget if self.scale == 1 else budget.scaled(self.scale)
