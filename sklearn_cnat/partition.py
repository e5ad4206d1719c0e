"""Whole-network certificates by deterministic partition aggregation (DPA).

In the spirit of Levine & Feizi (2021), "Deep Partition Aggregation": ``k``
base models are trained on disjoint parts of the training set, assigned by a
hash of a canonical encoding of each example's *input* (never its label), and
the prediction is the plurality vote of the base models, ties to the lowest
class index. A change of ``m`` training label rows changes at most ``m`` base
models when the learner is deterministic, the classes are fixed independently
of the labels and each row's budget depends on that row's evidence only; the
certificate then covers the whole model (scope "model") for any backbone.
Statements, conditions and proofs: docs/partition.md.
"""

import hashlib
import numbers
import struct

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.utils.validation import check_is_fitted

from .budgets import NoiseBudget, NoiseBudgetTransformer
from .exceptions import CNATValueError, CertificationError

__all__ = ["PartitionAggregationClassifier"]

_NUMBER, _STRING, _BYTES = b"\x01", b"\x02", b"\x03"
_NAN_BITS = np.uint64(0x7FF8000000000000)
_NAN_ENCODING = _NUMBER + struct.pack("<Q", int(_NAN_BITS))
_CHUNK_VALUES = 1 << 22


def _numeric_values(arr):
    """``arr`` as float64 if its dtype holds numbers (bool, int, float; datetime64 in ns), else None."""
    if arr.dtype.kind in "biuf":
        return arr.astype(np.float64)
    if arr.dtype.kind in "mM":
        ns = arr.astype(arr.dtype.kind + "8[ns]")
        return np.where(np.isnat(ns), np.nan, ns.view(np.int64).astype(np.float64))
    if arr.dtype.kind == "c":
        raise CNATValueError("X holds complex numbers, which have no canonical encoding for the partition "
                             "hash; pass real-valued inputs")
    return None


def _tagged_numbers(values):
    """(rows, d) float64 -> (rows, 9 d) uint8: per value a number tag and its canonical float64 bytes.

    Canonical: ``-0.0`` becomes ``0.0`` and every NaN one bit pattern, so equal values
    (whatever their dtype: bool, int, float32, float64) get equal bytes.
    """
    f = np.asarray(values, dtype=np.float64).reshape(len(values), -1) + 0.0
    bits = f.view(np.uint64).copy()
    bits[np.isnan(f)] = _NAN_BITS
    out = np.empty(bits.shape + (9,), dtype=np.uint8)
    out[..., 0] = _NUMBER[0]
    out[..., 1:] = bits.astype("<u8").view(np.uint8).reshape(bits.shape + (8,))
    return out.reshape(len(values), -1)


def _tagged_value(v):
    """Canonical bytes of one object entry; the same bytes as :func:`_tagged_numbers` for numbers."""
    if isinstance(v, str):
        b = v.encode("utf-8")
        return _STRING + len(b).to_bytes(8, "little") + b
    if isinstance(v, bytes):
        return _BYTES + len(v).to_bytes(8, "little") + v
    if v is None or type(v).__name__ in ("NAType", "NaTType"):
        return _NAN_ENCODING
    if isinstance(v, (bool, np.bool_, numbers.Real)):
        try:
            f = float(v) + 0.0
        except OverflowError:
            raise CNATValueError(f"X holds the number {v!r}, too large for the partition hash's float64 "
                                 "encoding; rescale it") from None
        return _NAN_ENCODING if f != f else _NUMBER + struct.pack("<d", f)
    raise CNATValueError(
        f"X holds a value of type {type(v).__name__} ({v!r:.40}), which has no canonical encoding for the "
        "partition hash (the same row must always land in the same part); convert X to numbers or strings"
    )


def _column_encodings(col):
    """Canonical bytes of each entry of a 1-D column, as a (n, 9) uint8 array or a list of bytes."""
    col = np.asarray(col)
    values = _numeric_values(col)
    if values is not None:
        return _tagged_numbers(values[:, None])
    return [_tagged_value(v) for v in col.astype(object).tolist()]


def _row_digests(X, seed):
    """First 8 bytes (little-endian uint64) of SHA-256(seed, canonical encoding of each row of ``X``).

    The encoding is a function of the row's values only: each entry, in C order (for a
    DataFrame, in column order), is a number (tag and canonical float64) or a string or
    bytes (tag, length, content); missing values (None, NaN, NA, NaT) are NaN.
    """
    salt = int(seed).to_bytes(8, "little", signed=True)
    base = hashlib.sha256(salt)
    digests = []

    def digest(row):
        h = base.copy()
        h.update(row)
        digests.append(h.digest()[:8])

    if hasattr(X, "iloc"):
        frame = X if X.ndim == 2 else X.to_frame()
        columns = [frame.iloc[:, j].to_numpy() for j in range(frame.shape[1])]
        numeric = [_numeric_values(np.asarray(c)) for c in columns]
        if all(v is not None for v in numeric):
            X = np.column_stack(numeric) if numeric else np.zeros((len(frame), 0))
        else:
            encoded = [_column_encodings(c) for c in columns]
            for i in range(len(frame)):
                digest(b"".join(e[i] if isinstance(e, list) else e[i].tobytes() for e in encoded))
            return np.frombuffer(b"".join(digests), dtype="<u8")
    arr = np.asarray(X)
    if arr.ndim == 0:
        raise CNATValueError("X must be an array-like of samples (sparse matrices: convert with X.toarray())")
    if arr.dtype.fields is not None:
        raise CNATValueError("X is a structured array; pass a plain array or a DataFrame")
    n = len(arr)
    flat = arr.reshape(n, -1)
    if _numeric_values(flat[:0]) is None:
        for row in flat.astype(object).tolist():
            digest(b"".join(_tagged_value(v) for v in row))
    else:
        step = max(1, _CHUNK_VALUES // max(1, flat.shape[1]))
        for lo in range(0, n, step):
            for row in _tagged_numbers(_numeric_values(flat[lo:lo + step])):
                digest(row)
    return np.frombuffer(b"".join(digests), dtype="<u8")


def _hash_partition(X, n_partitions, seed):
    """Part of each example from a hash of its input's canonical encoding (label-independent)."""
    return (_row_digests(X, seed) % np.uint64(n_partitions)).astype(np.int64)


def _declared_nondeterministic(est):
    """Whether ``est`` declares itself non-deterministic in its scikit-learn tags."""
    try:
        from sklearn.utils import get_tags
    except ImportError:
        return bool(getattr(est, "_get_tags", dict)().get("non_deterministic", False))
    try:
        return bool(get_tags(est).non_deterministic)
    except (AttributeError, TypeError):
        return False


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

    The flip and bounded certificates (Theorems P1 and P2 of ``docs/partition.md``) hold
    under conditions the estimator enforces or refuses to certify without:

    - *deterministic learner*: every base model whose ``random_state`` (at any nesting
      level) is ``None`` or a ``RandomState`` instance is seeded from ``random_state``
      and its part index; :meth:`certify` raises
      :class:`~sklearn_cnat.exceptions.CertificationError` if a seeded base model still
      declares itself non-deterministic (scikit-learn tag ``non_deterministic``);
    - *partition from the inputs only*: SHA-256 of a canonical encoding of each row
      (equal values give equal bytes whatever the dtype; -0.0 is 0.0, one NaN; a
      DataFrame column by column); values without a canonical encoding raise;
    - *classes fixed independently of the labels* and *row-wise budgets* (tier flip
      only): the budget must carry ``rowwise=True``
      (:class:`~sklearn_cnat.budgets.NoiseBudget`), so classes must be declared
      (``classes``) unless the evidence is vote counts, whose columns fix them.

    Parameters
    ----------
    estimator : estimator or None, default=None
        Base learner, cloned per part. ``None`` means ``CNATClassifier()``.
        Estimators with a ``budget`` parameter (CNATClassifier) receive the part's
        :class:`~sklearn_cnat.budgets.NoiseBudget`, with all ``K`` classes as columns
        even where the part lacks a class; others receive its plurality labels (class
        values) and may see fewer classes, their predictions are mapped back by value.
        A part whose labels hold a single class yields a constant base model.
    n_partitions : int, default=10
        Number of parts ``k``.
    classes : array-like of shape (n_classes,) or None, default=None
        The class labels, in column order, declared independently of the labels. Passed
        to the budget transformer (which must declare the same classes or none); with a
        precomputed NoiseBudget it must equal the budget's ``classes_``. ``None``: the
        transformer's classes, else the columns of vote counts (label-independent) or
        the labels seen (label-dependent: tier flip is then refused).
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
        declared budgets but not otherwise on the labels; tier flip is refused with it.
    hash_seed : int, default=0
        Salt of the input hash.
    random_state : int, default=0
        Non-negative seed of the base models: part ``p`` gets the first 31 bits of
        ``SeedSequence(random_state, spawn_key=(p,))`` where its ``random_state`` is
        ``None`` or a ``RandomState`` instance. Integer seeds of the base estimator are
        kept (then every part shares that seed).

    Attributes
    ----------
    estimators_ : list
        The base models (or ``("constant", class_index)`` for single-class parts).
    partition_ : ndarray of shape (n_samples,)
        Part of each training example.
    classes_ : ndarray of shape (n_classes,)
    budget_ : NoiseBudget
    budget_transformer_ : NoiseBudgetTransformer or None
        The fitted transformer (``None`` when ``y`` was a NoiseBudget).
    budgeted_partitions_ : int or None
        ``budgeted_partitions`` as used in ``fit``.
    deterministic_ : bool
        Whether no seeded base model declares itself non-deterministic.
    """

    def __init__(self, estimator=None, n_partitions=10, *, classes=None, budget=None, geometry=None,
                 budgeted_partitions=None, hash_seed=0, random_state=0):
        self.estimator = estimator
        self.n_partitions = n_partitions
        self.classes = classes
        self.budget = budget
        self.geometry = geometry
        self.budgeted_partitions = budgeted_partitions
        self.hash_seed = hash_seed
        self.random_state = random_state

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

    @staticmethod
    def _inputs(X):
        if hasattr(X, "detach"):
            return X.detach().cpu().numpy()
        if hasattr(X, "iloc"):
            return X
        if hasattr(X, "toarray") or hasattr(X, "tocsr"):
            raise CNATValueError("sparse X is not supported by PartitionAggregationClassifier; convert it with "
                                 "X.toarray()")
        return np.asarray(X)

    def _declared_classes(self):
        if self.classes is None:
            return None
        classes = np.asarray(self.classes)
        if classes.ndim != 1 or classes.size == 0:
            raise CNATValueError(f"classes must be a non-empty 1-D list of class labels, got shape {classes.shape}")
        if len(np.unique(classes)) != len(classes):
            raise CNATValueError(f"classes must not contain duplicates, got {classes.tolist()}")
        return classes

    def _fit_budget(self, y):
        classes = self._declared_classes()
        if isinstance(y, NoiseBudget):
            if classes is not None and not (len(classes) == y.n_classes
                                            and np.array_equal(classes, np.asarray(y.classes_))):
                raise CNATValueError(f"classes={classes.tolist()} but the NoiseBudget has classes "
                                     f"{np.asarray(y.classes_).tolist()}; they must be equal (same order)")
            self.budget_transformer_ = None
            return y
        transformer = self.budget
        if transformer is None:
            transformer = getattr(self._base(), "budget", None) or NoiseBudgetTransformer()
        transformer = clone(transformer)
        if classes is not None:
            own = transformer.get_params().get("classes")
            if own is None:
                transformer.set_params(classes=classes)
            elif not (len(own) == len(classes) and np.array_equal(np.asarray(own), classes)):
                raise CNATValueError(f"classes={classes.tolist()} but the budget transformer declares classes "
                                     f"{np.asarray(own).tolist()}; declare them in one place or make them equal")
        self.budget_transformer_ = transformer
        return transformer.fit_transform(y)

    def _seeded(self, base, part):
        """Clone of ``base`` whose unset random states are seeded from ``random_state`` and ``part``."""
        est = clone(base)
        seed = int(np.random.SeedSequence(int(self.random_state), spawn_key=(part,)).generate_state(1)[0])
        seed &= 0x7FFFFFFF
        updates = {key: seed for key, value in est.get_params(deep=True).items()
                   if (key == "random_state" or key.endswith("__random_state"))
                   and not isinstance(value, numbers.Integral)}
        if updates:
            est.set_params(**updates)
        return est

    def fit(self, X, y, sample_weight=None):
        """Fit one base model per part.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, ...)
            Inputs (features or images); hashed to assign parts, and passed to the base
            models (a DataFrame stays one).
        y : array-like or NoiseBudget
            Label evidence, as for :class:`~sklearn_cnat.CNATClassifier`.
        sample_weight : array-like of shape (n_samples,), float or None, default=None
            Row weights ``>= 0`` (finite, not all zero), passed part by part to the base
            estimator's ``fit`` (which must accept ``sample_weight``, else
            ``CNATValueError``). The partition does not read them. A part whose rows all
            have weight 0 is a constant base model (class 0, as an empty part), and the
            one-class rule reads the labels of the part's rows of positive weight. The
            certificates hold with the weights fixed (each row still reaches one part).

        Returns
        -------
        self
        """
        k = self.n_partitions
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise CNATValueError(f"n_partitions must be a positive integer, got {k!r}")
        bp = self.budgeted_partitions
        if bp is not None and not (isinstance(bp, numbers.Integral) and 1 <= bp <= k):
            raise CNATValueError(f"budgeted_partitions must be an integer in [1, n_partitions], got {bp!r}")
        if not isinstance(self.hash_seed, numbers.Integral) or not -2**63 <= self.hash_seed < 2**63:
            raise CNATValueError(f"hash_seed must be a 64-bit integer, got {self.hash_seed!r}")
        rs = self.random_state
        if not isinstance(rs, numbers.Integral) or isinstance(rs, bool) or rs < 0:
            raise CNATValueError(
                f"random_state must be a non-negative integer, got {rs!r}: the certificates need base models "
                "that a refit reproduces exactly, so their seeds are fixed"
            )
        X_in = self._inputs(X)
        budget = self._fit_budget(y)
        if len(budget) != len(X_in):
            raise CNATValueError(f"X has {len(X_in)} samples but y has {len(budget)}; they must match")
        from .classifier import _validate_sample_weight

        sample_weight = _validate_sample_weight(sample_weight, len(X_in))
        if sample_weight is not None:
            from sklearn.utils.validation import has_fit_parameter

            if not has_fit_parameter(self._base(), "sample_weight"):
                raise CNATValueError(f"the base estimator {type(self._base()).__name__} does not accept "
                                     "sample_weight in fit, so the weights cannot reach the base models")
        self.budget_ = budget
        self.classes_ = np.asarray(budget.classes_)
        digests = _row_digests(X_in, self.hash_seed)
        part = (digests % np.uint64(k)).astype(np.int64)
        if bp is not None:
            budgeted = self._nonsingleton(budget)
            part[budgeted] = (digests[budgeted] % np.uint64(bp)).astype(np.int64)
        self.partition_ = part
        self.budgeted_partitions_ = bp
        base = self._base()
        takes_budget = "budget" in base.get_params()
        self.estimators_ = []
        self.deterministic_ = True
        for p in range(k):
            idx = np.flatnonzero(part == p)
            sub = budget[idx]
            labels = sub.labels
            seen = labels if sample_weight is None else labels[sample_weight[idx] > 0]
            if len(seen) == 0 or np.unique(seen).size < 2:
                # Deterministic rule of the learner: a part with one class (or none) votes for it
                # (class 0 for an empty part, or one whose weights are all 0).
                self.estimators_.append(("constant", int(seen[0]) if len(seen) else 0))
                continue
            est = self._seeded(base, p)
            self.deterministic_ &= not _declared_nondeterministic(est)
            X_part = X_in.iloc[idx] if hasattr(X_in, "iloc") else X_in[idx]
            fit_params = {} if sample_weight is None else {"sample_weight": sample_weight[idx]}
            est.fit(X_part, sub if takes_budget else self.classes_[labels], **fit_params)
            self.estimators_.append(est)
        return self

    def _base_predictions(self, X):
        X_in = self._inputs(X)
        lookup = {c: i for i, c in enumerate(self.classes_.tolist())}
        rows = []
        for est in self.estimators_:
            if isinstance(est, tuple):
                rows.append(np.full(len(X_in), est[1], dtype=np.int64))
                continue
            pred = est.predict(X_in).tolist()
            idx = [lookup.get(c, -1) for c in pred]
            if -1 in idx:
                bad = pred[idx.index(-1)]
                raise CNATValueError(f"a base model predicted {bad!r}, which is not one of the classes "
                                     f"{self.classes_.tolist()}; the base estimator must be a classifier "
                                     "predicting class labels")
            rows.append(np.array(idx, dtype=np.int64))
        return np.stack(rows)

    def vote_counts(self, X):
        """Base-model votes per class, shape (n_samples, n_classes)."""
        check_is_fitted(self, "estimators_")
        return _vote_counts(self._base_predictions(X), len(self.classes_))

    def predict(self, X):
        """Plurality of the base models' predictions (ties to the lowest class index)."""
        return self.classes_[_plurality(self.vote_counts(X))]

    def _check_deterministic(self):
        if not self.deterministic_:
            raise CertificationError(
                f"a base model ({type(self._base()).__name__}) declares itself non-deterministic (scikit-learn "
                "tag non_deterministic) even after seeding its random_state, so a refit on the same labels may "
                "change every base model; Theorems P1/P2 need a deterministic learner: use a base estimator "
                "that is deterministic given its random_state"
            )

    def _check_flip_assumptions(self):
        """Conditions 2-4 of Theorem P1: a row's evidence reaches its own part's data only."""
        if self.budgeted_partitions_ is not None:
            raise CertificationError(
                "tier 'flip' is not sound with budgeted_partitions set: flipping a label can change "
                "its budget and so move the example to another part"
            )
        tf = self.budget_transformer_
        if self.budget_.rowwise:
            return
        if not isinstance(tf, NoiseBudgetTransformer):
            raise CertificationError(
                "tier 'flip' needs every row's budget to be a function of that row's evidence alone, with the "
                "classes fixed before the labels are seen, and this NoiseBudget does not record that "
                "(rowwise=False: built by hand, by mapping='piecewise', with pred_probs, from multiannotator "
                "output, or with classes inferred from the labels); pass the label evidence to fit with "
                "classes=..., or build the budget with NoiseBudgetTransformer(classes=..., mapping='flat', "
                "'linear' or 'posterior')"
            )
        if tf.classes is None and tf.evidence_ != "counts":
            raise CertificationError(
                f"tier 'flip' is not sound with classes inferred from the labels ({self.classes_.tolist()}): "
                "relabelling the only example of a class changes K, hence every base model; pass "
                "classes=[...] (all class labels) to PartitionAggregationClassifier"
            )
        if tf.mapping == "piecewise":
            raise CertificationError(
                "tier 'flip' is not sound with mapping='piecewise': its threshold is learned from all "
                "labels, so one flipped label can change every part's budgets; use a row-wise mapping "
                "('flat', 'linear' or 'posterior')"
            )
        raise CertificationError(
            f"tier 'flip' needs every row's budget to be a function of that row's evidence alone, and the "
            f"budget transformer ({tf!r}, evidence read as {tf.evidence_!r}) does not guarantee it: use vote "
            "counts, labels or evidence='annotators' (not multiannotator output), and an integer "
            "random_state for mapping='posterior'"
        )

    def certify(self, X, tier="flip", m=None, delta=0.05):
        """Certify predictions (see docs/partition.md).

        Parameters
        ----------
        X : array-like
        tier : {"flip", "bounded"}, default="flip"
            "flip": any ``m`` rows of the label evidence changed arbitrarily and the model
            refitted (``m`` required, as for the other engines: the number of rows an
            adversary may change is a declaration). Needs a row-wise budget
            (``budget_.rowwise``; classes declared unless the evidence is vote counts).
            "bounded": every declared set moved adversarially at once, the declaration
            (classes, sets) held fixed; the parts holding an example with a non-singleton
            set may vote anything. Tier "stochastic" raises
            :class:`~sklearn_cnat.exceptions.CertificationError`: a re-drawn vote can change
            any part, so no sound statement better than "bounded" is available here.
        m : int or None
        delta : float
            Unused (tier "stochastic" is not supported).

        Returns
        -------
        Certificate

        Raises
        ------
        CertificationError
            When a condition of the tier's theorem does not hold (see the class docstring).
        """
        from .certificates import Certificate

        check_is_fitted(self, "estimators_")
        if tier == "stochastic":
            raise CertificationError(
                "PartitionAggregationClassifier cannot certify tier 'stochastic' soundly: re-drawing "
                "the votes may change every part's training labels; use tier 'bounded' or 'flip', or "
                "CNATClassifier(head='ridge') for the stochastic tier"
            )
        if tier not in ("bounded", "flip"):
            raise CNATValueError(f"tier must be 'stochastic', 'bounded' or 'flip', got {tier!r}")
        self._check_deterministic()
        if tier == "flip":
            self._check_flip_assumptions()
            if m is None:
                raise CNATValueError("tier 'flip' needs m, the number of training labels that may change")
            if not isinstance(m, numbers.Integral) or m < 0:
                raise CNATValueError(f"m must be a non-negative integer, got {m!r}")
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
            certified = max_flips >= m
            return Certificate(tier="flip", certified=certified,
                               worst_case_margin=(margin - 2 * m).astype(np.float64),
                               radius_scale=None, m=int(m), **common)
        affected_parts = np.unique(self.partition_[self._nonsingleton(self.budget_)])
        affected = np.isin(np.arange(len(self.estimators_)), affected_parts)
        fixed = _vote_counts(base_pred[~affected], k) if (~affected).any() else np.zeros((n, k), np.int64)
        ok, worst = _survives_free_votes(fixed, pred, np.full(n, affected.sum()))
        # The set of affected parts does not change when all budgets are scaled by s > 0.
        radius_scale = np.where(ok, np.inf, 0.0)
        return Certificate(tier="bounded", certified=ok, worst_case_margin=worst.astype(np.float64),
                           radius_scale=radius_scale, m=None, **common)
