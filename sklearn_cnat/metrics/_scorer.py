"""Scorers: ``scorer(estimator, X, y)``, greater is better, built from the metrics.

scikit-learn has no public way to register a scorer name, and its parameter
validation rejects unknown strings. We do not touch its private registry;
instead :func:`get_scorer` resolves our names and falls back to
``sklearn.metrics.get_scorer`` for every other name, and
:mod:`sklearn_cnat.model_selection` offers drop-ins that resolve names through
it. See ``docs/metrics.md``.

With scikit-learn's *own* tools, pass the scorer objects instead of names:
scikit-learn's scorers behind ``scoring="accuracy"`` cannot read a vote matrix (the
folds fail with "Scoring failed" and the scores are NaN), while ours can::

    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn_cnat.metrics import cnr_coverage_scorer, plurality_accuracy_scorer
    from sklearn_cnat.model_selection import PluralityStratifiedKFold

    cross_val_score(clf, X, votes, scoring=plurality_accuracy_scorer, cv=PluralityStratifiedKFold(5))
    GridSearchCV(clf, {"alpha": [1, 10]}, cv=PluralityStratifiedKFold(5),
                 scoring={"acc": plurality_accuracy_scorer, "cov": cnr_coverage_scorer}, refit="acc")

Each is ``scorer(estimator, X, y, sample_weight=None)``, greater is better;
``get_scorer(name)`` returns the same objects by name. Pass ``cv`` explicitly: for a
vote matrix scikit-learn's default is an unstratified ``KFold``.
"""

import copy
import difflib
from numbers import Integral, Real

import numpy as np
from sklearn.metrics import get_scorer as _sklearn_get_scorer
from sklearn.metrics import get_scorer_names as _sklearn_get_scorer_names

from .._compat import Interval, StrOptions, validate_params
from ._classification import (
    ambiguity_accuracy_score,
    brier_score,
    certified_accuracy_score,
    cnr_coverage_score,
    expected_calibration_error,
    nll_score,
    plausible_label_map,
    plurality_accuracy_score,
)
from ..exceptions import CNATTypeError, CNATValueError

__all__ = [
    "get_scorer",
    "get_scorer_names",
    "make_cnr_scorer",
    "plurality_accuracy_scorer",
    "ambiguity_accuracy_scorer",
    "neg_log_loss_votes_scorer",
    "neg_brier_votes_scorer",
    "neg_ece_scorer",
    "plausible_label_map_scorer",
    "cnr_coverage_scorer",
    "certified_accuracy_scorer",
]


def _is_vote_matrix(y):
    return y is not None and np.ndim(y) == 2 and np.shape(y)[1] > 1


def _align_with_classes(estimator, y_true, y_prob=None):
    """Map the columns of a vote matrix to ``estimator.classes_``.

    Returns ``(labels, y_prob)``: the class of each column to pass to the
    metric, and ``y_prob`` widened to the vote columns when needed.

    * Vote matrix with as many columns as ``classes_``: column ``j`` is
      ``classes_[j]``.
    * Vote matrix over ``0..K-1`` and integer ``classes_`` that are a subset of
      it (a fold missed a class): labels are ``0..K-1`` and the missing
      probability columns are zeros.
    * 1-D labels: probabilities are in the order of ``classes_``.
    """
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        return None, y_prob
    classes = np.asarray(classes)
    if not _is_vote_matrix(y_true):
        return (None if y_prob is None else classes), y_prob
    n_columns = np.shape(y_true)[1]
    if classes.shape[0] == n_columns:
        return classes, y_prob
    if (
        classes.dtype.kind in "iu"
        and classes.shape[0] < n_columns
        and classes.min() >= 0
        and classes.max() < n_columns
    ):
        if y_prob is not None:
            y_prob = np.asarray(y_prob)
            widened = np.zeros((y_prob.shape[0], n_columns), dtype=y_prob.dtype)
            widened[:, classes] = y_prob
            y_prob = widened
        return np.arange(n_columns), y_prob
    raise CNATValueError(
        f"{type(estimator).__name__}.classes_ = {classes[:10].tolist()} cannot be "
        f"matched to the {n_columns} columns of the vote matrix y: expected "
        f"{n_columns} classes (column j is classes_[j]) or integer classes in "
        f"0..{n_columns - 1}."
    )


def _check_certifies(estimator, scorer_name):
    """Raise a TypeError naming ``estimator`` if it has no ``certify`` method."""
    if not callable(getattr(estimator, "certify", None)):
        raise CNATTypeError(
            f"The {scorer_name!r} scorer needs an estimator with a "
            f"certify(X, tier=..., m=..., delta=...) method, and "
            f"{type(estimator).__name__} has none. Use an estimator that issues "
            "CNR certificates (e.g. sklearn_cnat.CNATClassifier)."
        )


class _BaseCNATScorer:
    """Common parts: sign, sample-weight support, repr."""

    def _accept_sample_weight(self):
        # scikit-learn's multimetric scorer asks each scorer whether to pass
        # sample_weight; all of ours accept it.
        return True

    def __repr__(self):
        return self._repr


class _VoteScorer(_BaseCNATScorer):
    """Score ``response_method(X)`` against the test fold's labels or votes.

    Parameters
    ----------
    score_func : callable
        ``score_func(y_true, response, labels=..., sample_weight=..., **kwargs)``.
    response_method : {"predict", "predict_proba"}
    sign : {1, -1}
        -1 for losses, so that greater is better.
    name : str
        Name in reprs and errors.
    kwargs : dict, default=None
        Extra keyword arguments of ``score_func``.
    """

    def __init__(self, score_func, *, response_method, sign, name, kwargs=None):
        self._score_func = score_func
        self._response_method = response_method
        self._sign = sign
        self._kwargs = {} if kwargs is None else dict(kwargs)
        self._name = name
        self._repr = f"get_scorer({name!r})"

    def __call__(self, estimator, X, y_true, sample_weight=None):
        """Score ``estimator`` on ``X`` against ``y_true`` (labels or votes)."""
        method = getattr(estimator, self._response_method, None)
        if method is None:
            raise CNATTypeError(
                f"The {self._name!r} scorer needs "
                f"{type(estimator).__name__}.{self._response_method}(X), which it "
                "lacks."
            )
        response = method(X)
        if self._response_method == "predict":
            labels, _ = _align_with_classes(estimator, y_true)
        else:
            labels, response = _align_with_classes(estimator, y_true, response)
        score = self._score_func(
            y_true, response, labels=labels, sample_weight=sample_weight, **self._kwargs
        )
        return self._sign * score


class _CertificateScorer(_BaseCNATScorer):
    """Score ``estimator.certify(X, tier, m, delta)``; see :func:`make_cnr_scorer`."""

    def __init__(self, metric, *, tier, delta, m, reference=None, name=None):
        self._metric = metric
        self._tier = tier
        self._delta = delta
        self._m = m
        self._reference = reference
        self._sign = 1
        self._name = name or ("cnr_coverage" if metric == "coverage" else "certified_accuracy")
        self._repr = (
            f"make_cnr_scorer(metric={metric!r}, tier={tier!r}, delta={delta!r}, "
            f"m={m!r}" + ("" if reference is None else f", reference={reference!r}") + ")"
        )

    def __call__(self, estimator, X, y_true=None, sample_weight=None):
        """Certify ``X`` and return the coverage or certified accuracy."""
        _check_certifies(estimator, self._name)
        extra = {} if self._reference is None else {"reference": self._reference}
        certificate = estimator.certify(
            X, tier=self._tier, m=self._m, delta=self._delta, **extra
        )
        if self._metric == "coverage":
            return cnr_coverage_score(certificate, sample_weight=sample_weight)
        if y_true is None:
            raise CNATValueError("The 'certified_accuracy' scorer needs y.")
        labels, _ = _align_with_classes(estimator, y_true)
        return certified_accuracy_score(
            y_true, certificate, labels=labels, sample_weight=sample_weight
        )


@validate_params(
    {
        "metric": [StrOptions({"coverage", "certified_accuracy"})],
        "tier": [str],
        "delta": [Interval(Real, 0, 1, closed="neither"), None],
        "m": [Interval(Integral, 1, None, closed="left"), None],
        "reference": [StrOptions({"expected", "reannotation"}), None],
    },
    prefer_skip_nested_validation=True,
)
def make_cnr_scorer(metric="coverage", *, tier="bounded", delta=0.05, m=None, reference=None):
    """Make a scorer from CNR certificates.

    The scorer calls ``estimator.certify(X, tier=tier, m=m, delta=delta)`` (and
    ``reference=reference`` when given) and
    returns :func:`cnr_coverage_score` or :func:`certified_accuracy_score`
    (against the plurality vote of the test fold's ``y``). An estimator without
    ``certify`` raises a ``TypeError`` naming it; the scorer never makes up a
    value.

    Parameters
    ----------
    metric : {"coverage", "certified_accuracy"}, default="coverage"
        What to score.
    tier : str, default="bounded"
        Certificate tier passed to ``certify`` (see ``docs/certificates.md``). The
        default reads the declared budgets, so a search over ``budget__*`` changes
        the score (tier "stochastic" depends on the votes only, not on the radii).
    delta : float in (0, 1) or None, default=0.05
        Failure probability of tier "stochastic", passed to ``certify``.
    m : int or None, default=None
        Number of changed training rows of tier "flip" (required there), passed to
        ``certify``.
    reference : {"expected", "reannotation"} or None, default=None
        Tier "stochastic": passed to ``certify`` when given (Theorems 4 and 5 of
        ``docs/certificates.md``); ``None`` passes nothing (the estimator's default).

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y=None, sample_weight=None) -> float``; greater
        is better.

    Examples
    --------
    >>> from sklearn_cnat.metrics import make_cnr_scorer
    >>> make_cnr_scorer("certified_accuracy", delta=0.01)
    make_cnr_scorer(metric='certified_accuracy', tier='bounded', delta=0.01, m=None)
    """
    return _CertificateScorer(metric, tier=tier, delta=delta, m=m, reference=reference)


_SCORERS = {
    "accuracy": _VoteScorer(
        plurality_accuracy_score, response_method="predict", sign=1, name="accuracy"
    ),
    "ambiguity_accuracy": _VoteScorer(
        ambiguity_accuracy_score,
        response_method="predict",
        sign=1,
        name="ambiguity_accuracy",
    ),
    "neg_log_loss": _VoteScorer(
        nll_score, response_method="predict_proba", sign=-1, name="neg_log_loss"
    ),
    "neg_brier_score": _VoteScorer(
        brier_score, response_method="predict_proba", sign=-1, name="neg_brier_score"
    ),
    "neg_ece": _VoteScorer(
        expected_calibration_error,
        response_method="predict_proba",
        sign=-1,
        name="neg_ece",
    ),
    "plausible_label_map": _VoteScorer(
        plausible_label_map,
        response_method="predict_proba",
        sign=1,
        name="plausible_label_map",
    ),
    "cnr_coverage": make_cnr_scorer("coverage"),
    "certified_accuracy": make_cnr_scorer("certified_accuracy"),
}
for _metric, _prefix in (("coverage", "cnr_coverage"), ("certified_accuracy", "certified_accuracy")):
    _SCORERS[f"{_prefix}_bounded"] = make_cnr_scorer(_metric, tier="bounded")
    _SCORERS[f"{_prefix}_stochastic"] = make_cnr_scorer(_metric, tier="stochastic", delta=0.05)
    _SCORERS[f"{_prefix}_reannotation"] = make_cnr_scorer(_metric, tier="stochastic", delta=0.05,
                                                          reference="reannotation")
    for _m in (1, 10, 100):
        _SCORERS[f"{_prefix}_flip_{_m}"] = make_cnr_scorer(_metric, tier="flip", m=_m)
for _key, _scorer in _SCORERS.items():
    if isinstance(_scorer, _CertificateScorer):
        _scorer._name = _key


# Scorer objects for scikit-learn's own cross_val_score, GridSearchCV, ... (module docstring).
#: ``get_scorer("accuracy")``: accuracy against the plurality vote of ``y``.
plurality_accuracy_scorer = _SCORERS["accuracy"]
#: ``get_scorer("ambiguity_accuracy")``: a prediction counts if it is among the most-voted classes.
ambiguity_accuracy_scorer = _SCORERS["ambiguity_accuracy"]
#: ``get_scorer("neg_log_loss")``: minus the log loss against the vote distributions.
neg_log_loss_votes_scorer = _SCORERS["neg_log_loss"]
#: ``get_scorer("neg_brier_score")``: minus the Brier score against the vote distributions.
neg_brier_votes_scorer = _SCORERS["neg_brier_score"]
#: ``get_scorer("neg_ece")``: minus the expected calibration error against the plurality vote.
neg_ece_scorer = _SCORERS["neg_ece"]
#: ``get_scorer("plausible_label_map")``: mean average precision of the plausible labels.
plausible_label_map_scorer = _SCORERS["plausible_label_map"]
#: ``get_scorer("cnr_coverage")``: fraction certified, tier "bounded" (``cnr_coverage_stochastic``,
#: ``cnr_coverage_flip_10`` etc. name the other tiers).
cnr_coverage_scorer = _SCORERS["cnr_coverage"]
#: ``get_scorer("certified_accuracy")``: certified and right, tier "bounded".
certified_accuracy_scorer = _SCORERS["certified_accuracy"]


def get_scorer_names():
    """All scorer names :func:`get_scorer` accepts.

    Returns
    -------
    names : list of str
        Sorted; sklearn-cnat's names and every name of
        ``sklearn.metrics.get_scorer_names()``.

    Examples
    --------
    >>> from sklearn_cnat.metrics import get_scorer_names
    >>> "cnr_coverage" in get_scorer_names() and "roc_auc" in get_scorer_names()
    True
    """
    return sorted(set(_SCORERS) | set(_sklearn_get_scorer_names()))


def get_scorer(scoring):
    """Resolve a scorer name; our names first, then scikit-learn's.

    sklearn-cnat's names (see ``docs/metrics.md``): ``"accuracy"`` (against
    the plurality vote), ``"ambiguity_accuracy"``, ``"neg_log_loss"``,
    ``"neg_brier_score"`` (against vote distributions), ``"neg_ece"``,
    ``"plausible_label_map"``, ``"cnr_coverage"`` and ``"certified_accuracy"``
    (``make_cnr_scorer`` with tier ``"stochastic"``, ``delta=0.05``). Any other
    name goes to ``sklearn.metrics.get_scorer``.

    Parameters
    ----------
    scoring : str, callable or None
        A name; a callable or None is returned unchanged.

    Returns
    -------
    scorer : callable or None
        A fresh copy for names.

    Raises
    ------
    ValueError
        For an unknown name; the message lists our names and close matches.

    Examples
    --------
    >>> from sklearn_cnat.metrics import get_scorer
    >>> get_scorer("cnr_coverage")
    make_cnr_scorer(metric='coverage', tier='stochastic', delta=0.05, m=None)
    >>> callable(get_scorer("f1_macro"))  # a scikit-learn name
    True
    """
    if scoring is None or callable(scoring):
        return scoring
    if not isinstance(scoring, str):
        raise CNATTypeError(
            f"scoring must be a str, a callable or None; got {type(scoring).__name__}."
        )
    if scoring in _SCORERS:
        return copy.deepcopy(_SCORERS[scoring])
    try:
        return _sklearn_get_scorer(scoring)
    except ValueError:
        pass
    close = difflib.get_close_matches(scoring, get_scorer_names(), n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise CNATValueError(
        f"{scoring!r} is not a valid scoring name.{hint} sklearn-cnat names: "
        f"{sorted(_SCORERS)}; every name in sklearn.metrics.get_scorer_names() "
        "is accepted as well (sklearn_cnat.metrics.get_scorer_names() lists all)."
    ) from None
