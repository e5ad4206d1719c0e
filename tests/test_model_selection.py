"""Tests of sklearn_cnat.model_selection: drop-ins that accept our scorer names."""

from dataclasses import dataclass

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn import model_selection as skms
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression

from sklearn_cnat.metrics import (
    certified_accuracy_score,
    cnr_coverage_score,
    get_scorer,
    plurality_accuracy_score,
)
from sklearn_cnat.model_selection import (
    GridSearchCV,
    PluralityStratifiedKFold,
    RandomizedSearchCV,
    cross_val_score,
    cross_validate,
)


@dataclass(frozen=True)
class StandInCertificate:
    certified: np.ndarray
    prediction: np.ndarray


class PluralityLogistic(ClassifierMixin, BaseEstimator):
    """Logistic regression fitted on the plurality of a vote y (or on labels)."""

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y):
        y = np.asarray(y)
        labels = y.argmax(1) if y.ndim == 2 else y
        self.model_ = LogisticRegression(C=self.C).fit(X, labels)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


class CertifyingLogistic(PluralityLogistic):
    """Fake certificates: certified where the top probability exceeds 0.8."""

    def certify(self, X, tier="stochastic", m=None, delta=0.05):
        proba = self.predict_proba(X)
        return StandInCertificate(proba.max(1) > 0.8, self.classes_[proba.argmax(1)])


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    n = 60
    centers = np.repeat([[-2.0, 0.0], [0.0, 2.0], [2.0, 0.0]], n // 3, axis=0)
    X = centers + rng.normal(0, 1, (n, 2))
    votes = np.zeros((n, 3), dtype=int)
    votes[np.arange(n), np.repeat([0, 1, 2], n // 3)] = 3
    noisy = rng.choice(n, 15, replace=False)
    votes[noisy] = rng.multinomial(3, [0.4, 0.2, 0.4], size=15)
    return X, votes


def _by_hand(X, votes, metric, C=1.0, cv=None):
    """Per-fold scores computed without sklearn's machinery."""
    cv = PluralityStratifiedKFold(5) if cv is None else cv
    scores = []
    for train, test in cv.split(X, votes):
        clf = CertifyingLogistic(C=C).fit(X[train], votes[train])
        cert = clf.certify(X[test])
        if metric == "coverage":
            scores.append(cnr_coverage_score(cert))
        elif metric == "certified_accuracy":
            scores.append(certified_accuracy_score(votes[test], cert))
        else:
            scores.append(plurality_accuracy_score(votes[test], clf.predict(X[test])))
    return np.array(scores)


# --------------------------------------------------------------------------- #
# PluralityStratifiedKFold
# --------------------------------------------------------------------------- #


def test_plurality_kfold_stratifies_on_plurality(data):
    X, votes = data
    ours = list(PluralityStratifiedKFold(4).split(X, votes))
    ref = list(skms.StratifiedKFold(4).split(X, votes.argmax(1)))
    for (a_train, a_test), (b_train, b_test) in zip(ours, ref):
        assert_array_equal(a_train, b_train)
        assert_array_equal(a_test, b_test)
    labels = list(PluralityStratifiedKFold(4).split(X, votes.argmax(1)))
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(ours, labels))


def test_plurality_kfold_shuffle_and_params(data):
    X, votes = data
    cv = PluralityStratifiedKFold(3, shuffle=True, random_state=0)
    first = [test for _, test in cv.split(X, votes)]
    second = [test for _, test in cv.split(X, votes)]
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert cv.get_n_splits() == 3
    assert repr(cv) == (
        "PluralityStratifiedKFold(n_splits=3, random_state=0, shuffle=True)"
    )


def test_plurality_kfold_rejects_empty_rows(data):
    X, votes = data
    votes = votes.copy()
    votes[0] = 0
    with pytest.raises(ValueError, match="at least one vote"):
        next(PluralityStratifiedKFold(3).split(X, votes))


# --------------------------------------------------------------------------- #
# cross_val_score / cross_validate
# --------------------------------------------------------------------------- #


def test_cross_val_score_cnr_coverage_matches_by_hand(data):
    X, votes = data
    scores = cross_val_score(CertifyingLogistic(), X, votes, scoring="cnr_coverage")
    assert scores.shape == (5,)
    assert_allclose(scores, _by_hand(X, votes, "coverage"))
    assert 0 < scores.mean() < 1


def test_cross_validate_multimetric_on_votes(data):
    X, votes = data
    result = cross_validate(
        CertifyingLogistic(),
        X,
        votes,
        cv=3,
        scoring=["accuracy", "certified_accuracy", "neg_brier_score"],
    )
    cv = PluralityStratifiedKFold(3)
    assert_allclose(result["test_accuracy"], _by_hand(X, votes, "accuracy", cv=cv))
    assert_allclose(
        result["test_certified_accuracy"],
        _by_hand(X, votes, "certified_accuracy", cv=cv),
    )
    assert np.all(result["test_neg_brier_score"] < 0)
    assert np.all(result["test_certified_accuracy"] <= result["test_accuracy"])


def test_each_fold_scorer_gets_the_test_fold_votes(data):
    X, votes = data
    seen = []

    def record(estimator, X_test, y_test):
        seen.append(np.asarray(y_test))
        return 0.0

    cross_val_score(PluralityLogistic(), X, votes, scoring=record, cv=4)
    tests = [votes[test] for _, test in PluralityStratifiedKFold(4).split(X, votes)]
    assert len(seen) == 4
    for got, expected in zip(seen, tests):
        assert_array_equal(got, expected)


def test_explicit_cv_is_kept(data):
    X, votes = data
    cv = skms.KFold(3, shuffle=True, random_state=1)
    scores = cross_val_score(
        CertifyingLogistic(), X, votes, scoring="cnr_coverage", cv=cv
    )
    assert_allclose(scores, _by_hand(X, votes, "coverage", cv=cv))


def test_sklearn_names_still_work():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    y = (X[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(int)
    for name in ("f1_macro", "roc_auc", "balanced_accuracy"):
        assert_allclose(
            cross_val_score(LogisticRegression(), X, y, scoring=name, cv=4),
            skms.cross_val_score(LogisticRegression(), X, y, scoring=name, cv=4),
        )
    ours = cross_validate(
        LogisticRegression(), X, y, cv=4, scoring={"f1": "f1", "ll": "neg_log_loss"}
    )
    ref = skms.cross_validate(
        LogisticRegression(), X, y, cv=4, scoring={"f1": "f1", "ll": "neg_log_loss"}
    )
    assert_allclose(ours["test_f1"], ref["test_f1"])
    assert_allclose(ours["test_ll"], ref["test_ll"])


def test_unknown_name_raises_listing_ours(data):
    X, votes = data
    with pytest.raises(ValueError, match=r"not a valid scoring name.*cnr_coverage"):
        cross_val_score(CertifyingLogistic(), X, votes, scoring="coverage_cnr")
    with pytest.raises(ValueError, match="Did you mean 'neg_ece'"):
        search = GridSearchCV(CertifyingLogistic(), {"C": [1.0]}, scoring=["neg_ec"])
        search.fit(X, votes)


def test_estimator_without_certify_raises_before_fitting(data):
    X, votes = data
    with pytest.raises(TypeError, match="PluralityLogistic has none"):
        cross_val_score(PluralityLogistic(), X, votes, scoring="cnr_coverage")
    search = GridSearchCV(
        PluralityLogistic(),
        {"C": [1.0]},
        scoring={"acc": "accuracy", "cov": "certified_accuracy"},
        refit="acc",
    )
    with pytest.raises(TypeError, match="PluralityLogistic has none"):
        search.fit(X, votes)
    assert not hasattr(search, "cv_results_")


def test_bad_scoring_container_raises(data):
    X, votes = data
    with pytest.raises(ValueError, match="Duplicate scorer names"):
        cross_validate(PluralityLogistic(), X, votes, scoring=["accuracy", "accuracy"])
    with pytest.raises(ValueError, match="non-empty list of unique names"):
        cross_validate(PluralityLogistic(), X, votes, scoring=[])


def test_n_jobs_2(data):
    X, votes = data
    parallel = cross_val_score(
        CertifyingLogistic(), X, votes, scoring="certified_accuracy", n_jobs=2
    )
    assert_allclose(parallel, _by_hand(X, votes, "certified_accuracy"))


# --------------------------------------------------------------------------- #
# Search CVs
# --------------------------------------------------------------------------- #


def test_grid_search_multimetric_refit_on_votes(data):
    X, votes = data
    scoring = {"acc": "accuracy", "cov": "cnr_coverage"}
    search = GridSearchCV(
        CertifyingLogistic(), {"C": [0.01, 1.0]}, scoring=scoring, refit="acc"
    )
    search.fit(X, votes)
    for i, C in enumerate([0.01, 1.0]):
        cov = _by_hand(X, votes, "coverage", C=C)
        acc = _by_hand(X, votes, "accuracy", C=C)
        assert search.cv_results_["split0_test_cov"][i] == pytest.approx(cov[0])
        assert search.cv_results_["mean_test_cov"][i] == pytest.approx(cov.mean())
        assert search.cv_results_["mean_test_acc"][i] == pytest.approx(acc.mean())
    best = int(np.argmax(search.cv_results_["mean_test_acc"]))
    assert search.best_index_ == best
    assert search.score(X, votes) == pytest.approx(
        plurality_accuracy_score(votes, search.predict(X))
    )
    # the stored params are what the user passed
    assert search.get_params()["scoring"] == scoring
    assert search.cv is None
    assert search.n_splits_ == 5


def test_randomized_search_by_hand(data):
    X, votes = data
    search = RandomizedSearchCV(
        CertifyingLogistic(),
        {"C": [0.01, 0.1, 1.0]},
        n_iter=2,
        scoring="certified_accuracy",
        cv=3,
        random_state=0,
    ).fit(X, votes)
    cv = PluralityStratifiedKFold(3)
    for i, params in enumerate(search.cv_results_["params"]):
        expected = _by_hand(X, votes, "certified_accuracy", C=params["C"], cv=cv)
        assert search.cv_results_["split0_test_score"][i] == pytest.approx(expected[0])
        mean = search.cv_results_["mean_test_score"][i]
        assert mean == pytest.approx(expected.mean())
    assert search.scoring == "certified_accuracy"


def test_search_n_jobs_2(data):
    X, votes = data
    kwargs = dict(scoring={"acc": "accuracy", "cov": "cnr_coverage"}, refit="cov", cv=3)
    serial = GridSearchCV(CertifyingLogistic(), {"C": [0.01, 1.0]}, **kwargs)
    parallel = GridSearchCV(
        CertifyingLogistic(), {"C": [0.01, 1.0]}, n_jobs=2, **kwargs
    )
    serial.fit(X, votes)
    parallel.fit(X, votes)
    assert_allclose(
        serial.cv_results_["mean_test_cov"], parallel.cv_results_["mean_test_cov"]
    )


@pytest.mark.parametrize("Search", [GridSearchCV, RandomizedSearchCV])
def test_search_clone_and_get_params_round_trip(Search, data):
    X, votes = data
    scoring = {"acc": "accuracy", "cov": "cnr_coverage", "ll": "neg_log_loss"}
    search = Search(
        CertifyingLogistic(), {"C": [0.1, 1.0]}, scoring=scoring, refit="acc"
    )
    if Search is RandomizedSearchCV:
        search.set_params(n_iter=2, random_state=0)
    params = search.get_params(deep=False)
    twin = clone(search)
    assert twin.get_params(deep=False).keys() == params.keys()
    assert twin.scoring == scoring and twin.refit == "acc"
    assert twin.get_params()["estimator__C"] == 1.0
    twin.fit(X, votes)
    assert twin.get_params(deep=False)["scoring"] == scoring
    assert clone(twin).scoring == scoring
    twin.set_params(scoring="neg_ece", refit=True).fit(X, votes)
    assert twin.scoring == "neg_ece"
    assert np.all(twin.cv_results_["mean_test_score"] <= 0)
    assert repr(twin).startswith(Search.__name__)


def test_search_keeps_sklearn_names_and_defaults():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(40, 2))
    y = (X[:, 0] > 0).astype(int)
    ours = GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, scoring="f1", cv=4)
    ref = skms.GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, scoring="f1", cv=4)
    assert_allclose(
        ours.fit(X, y).cv_results_["mean_test_score"],
        ref.fit(X, y).cv_results_["mean_test_score"],
    )
    default = GridSearchCV(LogisticRegression(), {"C": [1.0]}).fit(X, y)
    assert default.scoring is None and default.n_splits_ == 5


def test_resolved_scorers_are_exposed(data):
    X, votes = data
    search = GridSearchCV(CertifyingLogistic(), {"C": [1.0]}, scoring="neg_ece", cv=3)
    search.fit(X, votes)
    assert repr(search.scorer_) == repr(get_scorer("neg_ece"))
