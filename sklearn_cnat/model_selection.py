"""Drop-ins for scikit-learn's model selection that know sklearn-cnat's scorers.

``cross_val_score``, ``cross_validate``, ``GridSearchCV`` and
``RandomizedSearchCV`` accept every scikit-learn scoring name plus ours
(``"cnr_coverage"``, ``"certified_accuracy"``, ``"neg_ece"``, vote-aware
``"accuracy"``, ...), as a string, a list or a dict of names and callables.
Names are resolved with :func:`sklearn_cnat.metrics.get_scorer`, then the work
is delegated to scikit-learn; its private scorer registry is never modified.

``y`` may be a vote-count matrix ``(n_samples, n_classes)``: it is split with
the rows of ``X``, so each fold's scorer sees the test fold's votes. For a
classifier and a vote matrix, an integer ``cv`` (or the default ``None``, i.e.
5) becomes :class:`PluralityStratifiedKFold`.

scikit-learn's own ``cross_val_score``, ``cross_validate``, ``GridSearchCV`` and
``RandomizedSearchCV`` work too when given scorer *objects* rather than names (its
name ``"accuracy"`` means its own scorer, which cannot read a vote matrix) and an
explicit ``cv``::

    from sklearn.model_selection import cross_val_score
    from sklearn_cnat.metrics import plurality_accuracy_scorer
    cross_val_score(clf, X, votes, scoring=plurality_accuracy_scorer, cv=PluralityStratifiedKFold(5))

The objects are listed in :mod:`sklearn_cnat.metrics` (``plurality_accuracy_scorer``,
``neg_log_loss_votes_scorer``, ``neg_brier_votes_scorer``, ``neg_ece_scorer``,
``cnr_coverage_scorer``, ``certified_accuracy_scorer``, ...; ``make_cnr_scorer`` for
other tiers).
"""

from numbers import Integral

from sklearn import model_selection as _skms
from sklearn.base import is_classifier

from .metrics import get_scorer
from .metrics._classification import _check_y_true, _plurality
from .metrics._scorer import _CertificateScorer, _check_certifies, _is_vote_matrix
from .exceptions import CNATValueError

__all__ = [
    "GridSearchCV",
    "PluralityStratifiedKFold",
    "RandomizedSearchCV",
    "cross_val_score",
    "cross_validate",
]


class PluralityStratifiedKFold(_skms.StratifiedKFold):
    """Stratified K-fold on the plurality vote of a vote-count matrix.

    Behaves as scikit-learn's ``StratifiedKFold`` applied to the plurality
    label of each row (ties to the lowest column) when ``y`` is a vote matrix
    of shape (n_samples, n_classes), and to ``y`` itself when it holds labels.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    shuffle : bool, default=False
        Whether to shuffle each class's samples before splitting.
    random_state : int, RandomState instance or None, default=None
        Seeds the shuffling when ``shuffle=True``.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.model_selection import PluralityStratifiedKFold
    >>> votes = np.array([[3, 0], [2, 1], [0, 3], [1, 2]])
    >>> for train, test in PluralityStratifiedKFold(n_splits=2).split(votes, votes):
    ...     print(test)
    [0 2]
    [1 3]
    """

    def __init__(self, n_splits=5, *, shuffle=False, random_state=None):
        super().__init__(n_splits=n_splits, shuffle=shuffle, random_state=random_state)

    def split(self, X, y, groups=None):
        """Generate train/test indices stratified on the plurality vote.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_classes)
            Labels or vote counts.
        groups : object
            Ignored.

        Yields
        ------
        train, test : ndarray
            Indices of the training and test samples of each fold.
        """
        return super().split(X, _stratification_labels(y), groups)


def _stratification_labels(y):
    kind, values = _check_y_true(y)
    return _plurality(values) if kind == "votes" else values


def _default_cv(cv, estimator, y):
    """An integer or None ``cv`` becomes a plurality-stratified split for votes."""
    if (
        (cv is None or isinstance(cv, Integral))
        and is_classifier(estimator)
        and _is_vote_matrix(y)
    ):
        return PluralityStratifiedKFold(5 if cv is None else cv)
    return cv


def _resolve_scoring(scoring):
    """Replace every scorer name with a callable; keep the shape of ``scoring``."""
    if scoring is None or callable(scoring) or isinstance(scoring, str):
        return get_scorer(scoring)
    if isinstance(scoring, (list, tuple, set)):
        names = list(scoring)
        if not names or not all(isinstance(name, str) for name in names):
            raise CNATValueError(
                "A list of scorers must be a non-empty list of unique names; use a "
                f"dict to name callables. Got {scoring!r}."
            )
        if len(set(names)) != len(names):
            raise CNATValueError(f"Duplicate scorer names in {scoring!r}.")
        return {name: get_scorer(name) for name in names}
    if isinstance(scoring, dict):
        return {key: get_scorer(value) for key, value in scoring.items()}
    raise CNATValueError(
        "scoring must be None, a name, a callable, a list of names or a dict of "
        f"names/callables; got {type(scoring).__name__}."
    )


def _check_scoring_support(estimator, scoring):
    """Fail before fitting when a certificate scorer meets a non-certifier."""
    scorers = scoring.values() if isinstance(scoring, dict) else [scoring]
    for scorer in scorers:
        if isinstance(scorer, _CertificateScorer):
            _check_certifies(estimator, scorer._name)


_SHARED_DOC = """
    Differences from scikit-learn's function of the same name:

    * ``scoring`` may also be any sklearn-cnat name (``"cnr_coverage"``,
      ``"certified_accuracy"``, ``"neg_ece"``, vote-aware ``"accuracy"``,
      ``"neg_log_loss"``, ``"neg_brier_score"``, ``"ambiguity_accuracy"``,
      ``"plausible_label_map"``), alone, in a list, or as values of a dict;
      see :func:`sklearn_cnat.metrics.get_scorer`.
    * ``cv=None`` or an integer, with a classifier and a vote matrix ``y``,
      means :class:`PluralityStratifiedKFold` with that many folds (5 for None).
    * A certificate scorer with an estimator that has no ``certify`` raises a
      ``TypeError`` before anything is fitted.
"""


def cross_val_score(
    estimator, X, y=None, *, groups=None, scoring=None, cv=None, **kwargs
):
    """Evaluate a score by cross-validation; accepts sklearn-cnat scorer names.

    Parameters
    ----------
    estimator : estimator object
        The object to fit.
    X : array-like of shape (n_samples, n_features)
        The data to fit.
    y : array-like of shape (n_samples,) or (n_samples, n_classes), default=None
        Labels or vote counts.
    groups : array-like of shape (n_samples,), default=None
        Group labels for group splitters.
    scoring : str, callable or None, default=None
        A scorer name (ours or scikit-learn's) or a callable
        ``scorer(estimator, X, y)``. None uses ``estimator.score``.
    cv : int, cross-validation generator, iterable or None, default=None
        Splitting strategy; see the differences below.
    **kwargs
        Passed unchanged to ``sklearn.model_selection.cross_val_score``
        (``n_jobs``, ``verbose``, ``params``, ``pre_dispatch``, ``error_score``).

    Returns
    -------
    scores : ndarray of shape (n_splits,)
    {shared}
    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_cnat.model_selection import cross_val_score
    >>> X = [[0.0], [0.1], [0.2], [0.9], [1.0], [1.1]]
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> cross_val_score(LogisticRegression(), X, y, cv=3, scoring="neg_ece").shape
    (3,)
    """
    scoring = _resolve_scoring(scoring)
    _check_scoring_support(estimator, scoring)
    return _skms.cross_val_score(
        estimator,
        X,
        y,
        groups=groups,
        scoring=scoring,
        cv=_default_cv(cv, estimator, y),
        **kwargs,
    )


def cross_validate(
    estimator, X, y=None, *, groups=None, scoring=None, cv=None, **kwargs
):
    """Evaluate metrics by cross-validation; accepts sklearn-cnat scorer names.

    Parameters
    ----------
    estimator : estimator object
        The object to fit.
    X : array-like of shape (n_samples, n_features)
        The data to fit.
    y : array-like of shape (n_samples,) or (n_samples, n_classes), default=None
        Labels or vote counts.
    groups : array-like of shape (n_samples,), default=None
        Group labels for group splitters.
    scoring : str, callable, list, tuple, dict or None, default=None
        Names (ours or scikit-learn's) and callables; results are keyed
        ``test_<name>`` for lists and dicts, ``test_score`` otherwise.
    cv : int, cross-validation generator, iterable or None, default=None
        Splitting strategy; see the differences below.
    **kwargs
        Passed unchanged to ``sklearn.model_selection.cross_validate``
        (``n_jobs``, ``return_train_score``, ``return_estimator``,
        ``error_score``, ...).

    Returns
    -------
    scores : dict of ndarray of shape (n_splits,)
    {shared}
    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_cnat.model_selection import cross_validate
    >>> X = [[0.0], [0.1], [0.2], [0.9], [1.0], [1.1]]
    >>> votes = [[3, 0], [2, 1], [3, 0], [0, 3], [1, 2], [0, 3]]
    >>> class PluralityLR(LogisticRegression):
    ...     def fit(self, X, y):
    ...         return super().fit(X, [max(range(2), key=r.__getitem__) for r in y])
    >>> res = cross_validate(PluralityLR(), X, votes, cv=3,
    ...                      scoring=["accuracy", "neg_brier_score"])
    >>> sorted(k for k in res if k.startswith("test_"))
    ['test_accuracy', 'test_neg_brier_score']
    """
    scoring = _resolve_scoring(scoring)
    _check_scoring_support(estimator, scoring)
    return _skms.cross_validate(
        estimator,
        X,
        y,
        groups=groups,
        scoring=scoring,
        cv=_default_cv(cv, estimator, y),
        **kwargs,
    )


cross_val_score.__doc__ = cross_val_score.__doc__.replace("{shared}", _SHARED_DOC)
cross_validate.__doc__ = cross_validate.__doc__.replace("{shared}", _SHARED_DOC)


class _ResolveScoringMixin:
    """Resolve ``scoring`` and the vote-aware default ``cv`` during ``fit``.

    The stored parameters are restored afterwards, so ``get_params``,
    ``set_params`` and ``clone`` see exactly what the user passed; the resolved
    scorers are kept by scikit-learn in ``scorer_``.
    """

    def fit(self, X, y=None, **params):
        """Run fit with all sets of parameters; see scikit-learn's ``fit``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training data.
        y : array-like of shape (n_samples,) or (n_samples, n_classes), default=None
            Labels or vote counts.
        **params
            Passed to scikit-learn's ``fit`` (``groups``, fit parameters).

        Returns
        -------
        self : object
            The fitted search.
        """
        scoring, cv = self.scoring, self.cv
        resolved = _resolve_scoring(scoring)
        _check_scoring_support(self.estimator, resolved)
        self.scoring, self.cv = resolved, _default_cv(cv, self.estimator, y)
        try:
            return super().fit(X, y, **params)
        finally:
            self.scoring, self.cv = scoring, cv


class GridSearchCV(_ResolveScoringMixin, _skms.GridSearchCV):
    __doc__ = (
        "Exhaustive search over a parameter grid; accepts sklearn-cnat scorer "
        "names.\n\n    Same parameters, attributes and methods as "
        "``sklearn.model_selection.GridSearchCV``.\n"
        + _SHARED_DOC.replace("function", "class")
        + """
    With a dict ``scoring``, ``refit`` names the key to refit on, e.g.
    ``scoring={"acc": "accuracy", "cov": "cnr_coverage"}, refit="acc"``.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_cnat.model_selection import GridSearchCV
    >>> X = [[0.0], [0.1], [0.2], [0.9], [1.0], [1.1]]
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> search = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=3,
    ...                       scoring={"acc": "accuracy", "ece": "neg_ece"},
    ...                       refit="acc").fit(X, y)
    >>> search.scoring
    {'acc': 'accuracy', 'ece': 'neg_ece'}
    """
    )


class RandomizedSearchCV(_ResolveScoringMixin, _skms.RandomizedSearchCV):
    __doc__ = (
        "Randomized search over parameters; accepts sklearn-cnat scorer names."
        "\n\n    Same parameters, attributes and methods as "
        "``sklearn.model_selection.RandomizedSearchCV``.\n"
        + _SHARED_DOC.replace("function", "class")
        + """
    Examples
    --------
    >>> from scipy.stats import loguniform
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn_cnat.model_selection import RandomizedSearchCV
    >>> X = [[0.0], [0.1], [0.2], [0.9], [1.0], [1.1]]
    >>> y = [0, 0, 0, 1, 1, 1]
    >>> search = RandomizedSearchCV(LogisticRegression(), {"C": loguniform(0.1, 10)},
    ...                             n_iter=2, cv=3, scoring="neg_log_loss",
    ...                             random_state=0).fit(X, y)
    >>> bool(search.best_score_ <= 0)
    True
    """
    )
