"""The :class:`Certificate` returned by every certification engine."""

from dataclasses import dataclass, field

import numpy as np

from ..exceptions import CertificationError, TrivialCertificateWarning

__all__ = ["Certificate"]

_TIERS = ("bounded", "flip", "stochastic")
_SCOPES = ("model", "head")


def _warn_trivial_kl(pi, rho, geometry, tier, stacklevel=3):
    """Warn when tier "bounded" meets KL sets around one-hot ``pi`` (single points).

    ``KL(q || pi) <= rho`` with ``pi`` a vertex forces ``q = pi``: those rows' sets hold
    no other distribution, whatever ``rho`` (docs/certificates.md, Lemma 3).
    """
    import warnings

    if tier != "bounded" or geometry not in ("kl", "kl_l1") or rho is None:
        return
    pi = np.asarray(pi)
    rho = np.broadcast_to(np.asarray(rho, dtype=np.float64), (pi.shape[0],))
    vertex = ((pi > 0).sum(axis=1) == 1) & (rho > 0)
    if vertex.any():
        warnings.warn(
            f"{int(vertex.sum())} of {pi.shape[0]} training rows have a one-hot pi with geometry "
            f"{geometry!r}: a KL ball around a vertex holds only that vertex, so these rows are certified "
            "against no change at all and the coverage is not comparable with l1 coverage; use "
            "geometry='l1', or pi from the votes (NoiseBudgetTransformer(pi='votes'))",
            TrivialCertificateWarning, stacklevel=stacklevel)


def _check_nominal(budget, tier):
    """Refuse a tier whose proof needs ``pi_i`` to be a function of example ``i``'s own votes.

    Tier "stochastic" (Theorem 4 of docs/certificates.md) redraws every example's votes
    and needs each nominal row fixed by that example's votes alone; a ``pi`` set by an
    aggregator (``NoiseBudget.aggregator``, e.g. Dawid-Skene) depends on every example's
    votes through its model of the annotators.
    """
    name = getattr(budget, "aggregator", None)
    if tier == "stochastic" and name is not None:
        raise CertificationError(
            f"tier='stochastic' needs each row of pi to be fixed by that example's own votes (vote mean or "
            f"plurality; docs/certificates.md, Theorem 4), and this budget's pi was set by the aggregator {name}, "
            f"whose model of the annotators depends on every example's votes. Use tier='bounded' (about the "
            f"declared sets around this pi) or tier='flip' (about rows of pi), or build the budget without "
            f"aggregator= for tier 'stochastic'")


def _per_point(value, name, n, dtype=None, optional=False):
    if value is None:
        if optional:
            return None
        raise CertificationError(f"Certificate.{name} is required")
    arr = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    if arr.shape != (n,):
        raise CertificationError(f"Certificate.{name} must have shape ({n},), got {arr.shape}")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False, repr=False)
class Certificate:
    """Per-point certificates of a classifier's predictions against label changes.

    What each tier promises, with proofs, is in ``docs/certificates.md``.

    Parameters
    ----------
    tier : {"bounded", "flip", "stochastic"}
        Which statement is certified (Theorem 1, 3, or 4 and 5 of docs/certificates.md).
    scope : {"model", "head"}
        ``"model"``: the feature map does not depend on the training labels, so the
        statement covers the whole model; ``"head"``: the head only, features fixed.
    engine : str
        The engine that produced the certificate (e.g. ``"ridge-l1-exact"``).
    prediction : array-like of shape (n_points,)
        Predicted class labels.
    certified : array-like of bool of shape (n_points,)
        Whether the prediction is certified.
    margin : array-like of shape (n_points,)
        Nominal score margin to the best rival class.
    worst_case_margin : array-like of shape (n_points,)
        Margin in the tier's worst case (bounded, flip) or the nominal margin minus
        the concentration threshold (stochastic).
    radius_scale : array-like of shape (n_points,) or None
        Tier "bounded": largest budget scale still certified (rounded down; ``inf``
        when certified at every scale).
    max_flips : array-like of int of shape (n_points,) or None
        Tier "flip": largest number of changed training rows still certified
        (``-1`` when not certified even with no change).
    delta : float or None
        Tier "stochastic": failure probability used.
    delta_min : array-like of shape (n_points,) or None
        Tier "stochastic": certified for every ``delta > delta_min`` (rounded up).
    m : int or None
        Tier "flip": number of changed rows certified against.
    reference : {"expected", "reannotation"} or None
        Tier "stochastic": what the prediction is compared with, the learner trained on
        the expected nominal (Theorem 4) or on a fresh re-annotation (Theorem 5);
        ``None`` for the other tiers (and, for tier "stochastic", read as ``"expected"``).
    classes : array-like of shape (n_classes,) or None, default=None
        Class labels in column order; used to read vote matrices in
        :meth:`certified_accuracy`. ``None`` means ``arange(n_classes)``.
    covers : array-like of bool of shape (n_train,) or None, default=None
        Which training rows' labels the statement is about: the tiers let exactly
        these rows' labels change (the others are held as trained, e.g. the rows a
        frozen backbone learned from). ``None`` means every training row.

    Examples
    --------
    >>> import numpy as np
    >>> cert = Certificate(tier="flip", scope="model", engine="ridge-flip-exact",
    ...                    prediction=np.array([0, 1]), certified=np.array([True, False]),
    ...                    margin=np.array([0.5, 0.1]), worst_case_margin=np.array([0.2, -0.1]),
    ...                    max_flips=np.array([3, 0]), m=1)
    >>> cert.coverage
    0.5
    >>> cert.certified_accuracy([0, 1])
    0.5
    >>> cert
    Certificate(tier='flip', m=1, engine='ridge-flip-exact', scope='model', n_points=2, certified=1, \
coverage=0.500, covers='all training rows'; per point: .to_frame())
    """

    tier: str
    scope: str
    engine: str
    prediction: np.ndarray
    certified: np.ndarray
    margin: np.ndarray
    worst_case_margin: np.ndarray
    radius_scale: np.ndarray = None
    max_flips: np.ndarray = None
    delta: float = None
    delta_min: np.ndarray = None
    m: int = None
    reference: str = None
    classes: np.ndarray = field(default=None, repr=False)
    covers: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        if self.tier not in _TIERS:
            raise CertificationError(f"Certificate.tier must be one of {_TIERS}, got {self.tier!r}")
        if self.scope not in _SCOPES:
            raise CertificationError(f"Certificate.scope must be one of {_SCOPES}, got {self.scope!r}")
        if not isinstance(self.engine, str) or not self.engine:
            raise CertificationError("Certificate.engine must be a non-empty string")
        prediction = np.asarray(self.prediction)
        if prediction.ndim != 1:
            raise CertificationError(f"Certificate.prediction must be 1-D, got shape {prediction.shape}")
        n = prediction.shape[0]
        set_ = object.__setattr__
        set_(self, "prediction", _per_point(prediction, "prediction", n))
        certified = np.asarray(self.certified)
        if certified.dtype != bool:
            raise CertificationError(f"Certificate.certified must be boolean, got dtype {certified.dtype}")
        set_(self, "certified", _per_point(certified, "certified", n))
        set_(self, "margin", _per_point(self.margin, "margin", n, np.float64))
        set_(self, "worst_case_margin", _per_point(self.worst_case_margin, "worst_case_margin", n, np.float64))
        set_(self, "radius_scale", _per_point(self.radius_scale, "radius_scale", n, np.float64, optional=True))
        if self.max_flips is not None:
            flips = np.asarray(self.max_flips)
            if flips.size and not np.issubdtype(flips.dtype, np.integer):
                raise CertificationError(f"Certificate.max_flips must be integers, got dtype {flips.dtype}")
            set_(self, "max_flips", _per_point(flips.astype(np.int64), "max_flips", n))
        set_(self, "delta_min", _per_point(self.delta_min, "delta_min", n, np.float64, optional=True))
        if self.delta is not None:
            delta = float(self.delta)
            if not 0.0 < delta < 1.0:
                raise CertificationError(f"Certificate.delta must be in (0, 1), got {self.delta}")
            set_(self, "delta", delta)
        if self.reference is not None:
            if self.tier != "stochastic":
                raise CertificationError(f"Certificate.reference is only for tier 'stochastic', got tier {self.tier!r}")
            if self.reference not in ("expected", "reannotation"):
                raise CertificationError(f"Certificate.reference must be 'expected' or 'reannotation', got "
                                         f"{self.reference!r}")
        elif self.tier == "stochastic":
            set_(self, "reference", "expected")
        if self.m is not None:
            if isinstance(self.m, bool) or not float(self.m).is_integer() or self.m < 0:
                raise CertificationError(f"Certificate.m must be a non-negative integer, got {self.m!r}")
            set_(self, "m", int(self.m))
        if self.classes is not None:
            classes = np.asarray(self.classes)
            if classes.ndim != 1:
                raise CertificationError(f"Certificate.classes must be 1-D, got shape {classes.shape}")
            set_(self, "classes", classes)
        if self.covers is not None:
            covers = np.asarray(self.covers)
            if covers.ndim != 1 or covers.dtype != bool:
                raise CertificationError(f"Certificate.covers must be a 1-D boolean array, got dtype "
                                         f"{covers.dtype} and shape {covers.shape}")
            covers = covers.copy()
            covers.setflags(write=False)
            set_(self, "covers", covers)

    def __len__(self):
        return self.prediction.shape[0]

    def __repr__(self):
        n = len(self)
        extra = {"stochastic": f", delta={self.delta!r}, reference={self.reference!r}", "flip": f", m={self.m!r}"}.get(self.tier, "")
        if self.covers is None:
            covers = "all training rows"
        else:
            covers = (f"all {self.covers.size} training rows" if self.covers.all()
                      else f"{int(self.covers.sum())} of {self.covers.size} training rows")
        return (f"Certificate(tier={self.tier!r}{extra}, engine={self.engine!r}, scope={self.scope!r}, "
                f"n_points={n}, certified={int(self.certified.sum())}, coverage={self.coverage:.3f}, "
                f"covers={covers!r}; per point: .to_frame())")

    @property
    def coverage(self):
        """Fraction of points whose prediction is certified (0.0 for no points)."""
        return float(self.certified.mean()) if len(self) else 0.0

    def certified_accuracy(self, y_true):
        """Fraction of points that are certified *and* correctly predicted.

        Parameters
        ----------
        y_true : array-like of shape (n_points,) or (n_points, n_classes)
            True class labels, or a vote matrix whose plurality (ties to the lowest
            column) is the true class; column ``k`` is ``classes[k]``.

        Returns
        -------
        float
        """
        y = np.asarray(y_true)
        if y.ndim == 2:
            if y.shape[0] != len(self):
                raise CertificationError(f"y_true has {y.shape[0]} rows, the certificate has {len(self)} points")
            if self.classes is not None and y.shape[1] != len(self.classes):
                raise CertificationError(f"vote matrix has {y.shape[1]} columns, expected {len(self.classes)} classes")
            idx = np.argmax(y, axis=1)
            y = idx if self.classes is None else self.classes[idx]
        elif y.ndim != 1 or y.shape[0] != len(self):
            raise CertificationError(f"y_true must have shape ({len(self)},) or ({len(self)}, n_classes), "
                                     f"got {y.shape}")
        if not len(self):
            return 0.0
        return float(np.mean(self.certified & (self.prediction == y)))

    def to_frame(self):
        """Per-point fields as a :class:`pandas.DataFrame` (one row per point)."""
        import pandas as pd

        columns = {"prediction": self.prediction, "certified": self.certified, "margin": self.margin,
                   "worst_case_margin": self.worst_case_margin}
        for name in ("radius_scale", "max_flips", "delta_min"):
            value = getattr(self, name)
            if value is not None:
                columns[name] = value
        return pd.DataFrame(columns)
