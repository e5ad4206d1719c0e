"""Whole-network certificates by deterministic partition aggregation (DPA).

In the spirit of Levine & Feizi (2021), "Deep Partition Aggregation": ``k``
base models are trained on disjoint parts of the training set, assigned by a
hash of each example's *input* (never its label), and the prediction is the
plurality vote of the base models, ties to the lowest class index. A change of
training labels can only change the base models whose part holds a changed
example, whatever the base learner is, so the certificate covers the whole
model (scope "model") for any backbone. Statements and proofs:
docs/certificates.md, section "Partition aggregation".
"""

import hashlib
import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .budgets import NoiseBudget, NoiseBudgetTransformer
from .exceptions import CNATValueError, CertificationError

__all__ = ["PartitionAggregationClassifier"]


def _hash_partition(X, n_partitions, seed, index=None):
    """Part of each example from a hash of its input bytes (label-independent)."""
    arr = np.ascontiguousarray(np.asarray(X))
    salt = int(seed).to_bytes(8, "little", signed=True)
    out = np.empty(len(arr), dtype=np.int64)
    for i in range(len(arr)):
        digest = hashlib.sha256(salt + arr[i].tobytes()).digest()
        out[i] = int.from_bytes(digest[:8], "little") % n_partitions
    return out


def _vote_counts(base_predictions, n_classes):
    """(n_test, n_classes) counts from (n_models, n_test) class indices."""
    n_test = base_predictions.shape[1]
    counts = np.zeros((n_test, n_classes), dtype=np.int64)
    for row in base_predictions:
        counts[np.arange(n_test), row] += 1
    return counts


def _plurality(counts):
    return np.argmax(counts, axis=1)  # first maximum = lowest class index on ties


def _max_flips(counts, pred):
    """Largest m such that moving m votes cannot change the plurality (eq. (P1) in the docs).

    c stays the winner against rival b after m votes move from c to b iff
    n_c - m > n_b + m, or n_c - m == n_b + m and c < b (tie rule). So
    m <= floor((n_c - n_b - [b < c]) / 2) for every rival b.
    """
    n, k = counts.shape
    n_c = counts[np.arange(n), pred][:, None]
    lower = (np.arange(k)[None, :] < pred[:, None]).astype(np.int64)
    bound = np.floor_divide(n_c - counts - lower, 2)
    bound[np.arange(n), pred] = np.iinfo(np.int64).max
    return bound.min(axis=1)


def _survives_free_votes(fixed_counts, pred, n_free):
    """Whether ``pred`` wins whatever ``n_free`` extra votes do (eq. (P2) in the docs).

    The worst case gives every free vote to one rival b: c survives iff
    n_c^fixed > n_b^fixed + u, or equality with c < b.
    """
    n, k = fixed_counts.shape
    n_c = fixed_counts[np.arange(n), pred][:, None]
    gap = n_c - fixed_counts - n_free[:, None]
    lower = np.arange(k)[None, :] < pred[:, None]
    ok = (gap > 0) | ((gap == 0) & ~lower)
    ok[np.arange(n), pred] = True
    worst = np.where(np.arange(k)[None, :] == pred[:, None], np.iinfo(np.int64).max, gap).min(axis=1)
    return ok.all(axis=1), worst


class PartitionAggregationClassifier(ClassifierMixin, BaseEstimator):
    """Plurality vote of base models trained on a label-independent hash partition.

    Parameters
    ----------
    estimator : estimator or None, default=None
        Base learner, cloned per part. ``None`` means ``CNATClassifier()``.
        Estimators with a ``budget`` parameter (CNATClassifier) receive the part's
        :class:`~sklearn_cnat.budgets.NoiseBudget`; others receive its plurality labels.
        A part whose labels hold a single class yields a constant base model.
    n_partitions : int, default=10
        Number of parts ``k``.
    budget : NoiseBudgetTransformer or None, default=None
        Declares the per-example budgets certified by tier "bounded" (and passed to the
        base models). ``None``: the base estimator's ``budget`` when it has one, else
        ``NoiseBudgetTransformer()``.
    geometry : {"l1", "kl", "kl_l1"} or None, default=None
        Which budget defines the sets; ``None``: the base estimator's ``geometry`` or "l1".
    budgeted_partitions : int or None, default=None
        If set, examples whose declared set is not a single point are hashed into parts
        ``0 .. budgeted_partitions - 1`` only (others into all parts), so that few base
        models can be affected by the bounded adversary. The assignment depends on the
        declared budgets but not otherwise on the labels.
    hash_seed : int, default=0
        Salt of the input hash.

    Attributes
    ----------
    estimators_ : list
        The base models (or ``("constant", class_index)`` for single-class parts).
    partition_ : ndarray of shape (n_samples,)
        Part of each training example.
    classes_ : ndarray of shape (n_classes,)
    budget_ : NoiseBudget
    """

    def __init__(self, estimator=None, n_partitions=10, *, budget=None, geometry=None,
                 budgeted_partitions=None, hash_seed=0):
        self.estimator = estimator
        self.n_partitions = n_partitions
        self.budget = budget
        self.geometry = geometry
        self.budgeted_partitions = budgeted_partitions
        self.hash_seed = hash_seed

    def _base(self):
        if self.estimator is None:
            from .classifier import CNATClassifier

            return CNATClassifier()
        return self.estimator

    def _geometry(self):
        if self.geometry is not None:
            return self.geometry
        return getattr(self._base(), "geometry", "l1")

    def _nonsingleton(self, budget):
        """Examples whose declared set holds more than one distribution."""
        geometry = self._geometry()
        multi_support = (budget.pi > 0).sum(axis=1) >= 2
        if geometry == "l1":
            return budget.r > 0
        if geometry == "kl":
            return (budget.rho > 0) & multi_support
        if geometry == "kl_l1":
            return (budget.r > 0) & (budget.rho > 0) & multi_support
        raise CNATValueError(f"geometry must be 'l1', 'kl' or 'kl_l1', got {geometry!r}")

    def fit(self, X, y):
        """Fit one base model per part.

        Parameters
        ----------
        X : array-like of shape (n_samples, ...)
            Inputs (features or images); hashed to assign parts.
        y : array-like or NoiseBudget
            Label evidence, as for :class:`~sklearn_cnat.CNATClassifier`.
        """
        k = self.n_partitions
        if not isinstance(k, numbers.Integral) or k < 1:
            raise CNATValueError(f"n_partitions must be a positive integer, got {k!r}")
        bp = self.budgeted_partitions
        if bp is not None and not (isinstance(bp, numbers.Integral) and 1 <= bp <= k):
            raise CNATValueError(f"budgeted_partitions must be an integer in [1, n_partitions], got {bp!r}")
        X_arr = X.detach().cpu().numpy() if hasattr(X, "detach") else np.asarray(X)
        self.budget_transformer_ = None
        if isinstance(y, NoiseBudget):
            budget = y
        else:
            transformer = self.budget
            if transformer is None:
                transformer = getattr(self._base(), "budget", None) or NoiseBudgetTransformer()
            self.budget_transformer_ = clone(transformer)
            budget = self.budget_transformer_.fit_transform(y)
        if len(budget) != len(X_arr):
            raise CNATValueError(f"X has {len(X_arr)} samples but y has {len(budget)}; they must match")
        self.budget_ = budget
        self.classes_ = np.asarray(budget.classes_)
        part = _hash_partition(X_arr, k, self.hash_seed)
        if bp is not None:
            budgeted = self._nonsingleton(budget)
            part[budgeted] = _hash_partition(X_arr[budgeted], bp, self.hash_seed) if budgeted.any() else part[budgeted]
        self.partition_ = part
        base = self._base()
        takes_budget = "budget" in base.get_params()
        self.estimators_ = []
        for p in range(k):
            idx = np.flatnonzero(part == p)
            sub = budget[idx]
            labels = sub.labels
            if len(idx) == 0 or np.unique(labels).size < 2:
                # Deterministic rule of the learner: a part with one class (or none) votes for it
                # (class 0 for an empty part).
                self.estimators_.append(("constant", int(labels[0]) if len(idx) else 0))
                continue
            est = clone(base)
            est.fit(X_arr[idx], sub if takes_budget else self.classes_[labels])
            self.estimators_.append(est)
        return self

    def _base_predictions(self, X):
        X_arr = X.detach().cpu().numpy() if hasattr(X, "detach") else np.asarray(X)
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        rows = []
        for est in self.estimators_:
            if isinstance(est, tuple):
                rows.append(np.full(len(X_arr), est[1], dtype=np.int64))
            else:
                rows.append(np.array([lookup[c] for c in est.predict(X_arr).tolist()], dtype=np.int64))
        return np.stack(rows)

    def vote_counts(self, X):
        """Base-model votes per class, shape (n_samples, n_classes)."""
        check_is_fitted(self, "estimators_")
        return _vote_counts(self._base_predictions(X), len(self.classes_))

    def predict(self, X):
        """Plurality of the base models' predictions (ties to the lowest class index)."""
        return self.classes_[_plurality(self.vote_counts(X))]

    def _check_flip_assumptions(self):
        # The flip proof needs each training row to reach exactly one base model: a row's
        # label may only influence its own part's data. Budgets that depend on all labels
        # (a quantile threshold) or a partition that depends on the budgets break that.
        if self.budgeted_partitions is not None:
            raise CertificationError(
                "tier 'flip' is not sound with budgeted_partitions set: flipping a label can change "
                "its budget and so move the example to another part"
            )
        if getattr(self.budget_transformer_, "mapping", None) == "piecewise":
            raise CertificationError(
                "tier 'flip' is not sound with mapping='piecewise': its threshold is learned from all "
                "labels, so one flipped label can change every part's budgets; use a row-wise mapping "
                "('flat', 'linear' or 'posterior')"
            )

    def certify(self, X, tier="flip", m=None, delta=0.05):
        """Certify predictions (see docs/certificates.md, "Partition aggregation").

        Parameters
        ----------
        X : array-like
        tier : {"flip", "bounded"}, default="flip"
            "flip": any ``m`` training labels changed arbitrarily (``m`` required, as for
            the other engines: the number of rows an adversary may change is a declaration).
            "bounded": every declared set moved adversarially at once; the parts holding an
            example with a non-singleton set may vote anything. Tier "stochastic" raises
            :class:`~sklearn_cnat.exceptions.CertificationError`: a re-drawn vote can change
            any part, so no sound statement better than "bounded" is available here.
        m : int or None
        delta : float
            Unused (tier "stochastic" is not supported).

        Returns
        -------
        Certificate
        """
        from .certificates import Certificate

        check_is_fitted(self, "estimators_")
        base_pred = self._base_predictions(X)
        k = len(self.classes_)
        counts = _vote_counts(base_pred, k)
        pred = _plurality(counts)
        n = len(pred)
        top2 = np.sort(counts, axis=1)[:, -2:] if k >= 2 else np.zeros((n, 2))
        margin = (top2[:, 1] - top2[:, 0]).astype(np.float64)
        max_flips = _max_flips(counts, pred)
        common = dict(scope="model", engine="partition", prediction=self.classes_[pred], margin=margin,
                      max_flips=max_flips, delta=None, delta_min=None)
        if tier == "flip":
            self._check_flip_assumptions()
            if m is None:
                raise CNATValueError("tier 'flip' needs m, the number of training labels that may change")
            if not isinstance(m, numbers.Integral) or m < 0:
                raise CNATValueError(f"m must be a non-negative integer, got {m!r}")
            certified = max_flips >= m
            return Certificate(tier="flip", certified=certified,
                               worst_case_margin=(margin - 2 * m).astype(np.float64),
                               radius_scale=None, m=int(m), **common)
        if tier == "bounded":
            affected_parts = np.unique(self.partition_[self._nonsingleton(self.budget_)])
            affected = np.isin(np.arange(self.n_partitions), affected_parts)
            fixed = _vote_counts(base_pred[~affected], k) if (~affected).any() else np.zeros((n, k), np.int64)
            ok, worst = _survives_free_votes(fixed, pred, np.full(n, affected.sum()))
            # The set of affected parts does not change when all budgets are scaled by s > 0.
            radius_scale = np.where(ok, np.inf, 0.0)
            return Certificate(tier="bounded", certified=ok, worst_case_margin=worst.astype(np.float64),
                               radius_scale=radius_scale, m=None, **common)
        if tier == "stochastic":
            raise CertificationError(
                "PartitionAggregationClassifier cannot certify tier 'stochastic' soundly: re-drawing "
                "the votes may change every part's training labels; use tier 'bounded' or 'flip', or "
                "CNATClassifier(head='ridge') for the stochastic tier"
            )
        raise CNATValueError(f"tier must be 'stochastic', 'bounded' or 'flip', got {tier!r}")
