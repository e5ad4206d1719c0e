"""Tests of sklearn_cnat.metrics: metric functions and scorers."""

import inspect
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    label_ranking_average_precision_score,
    log_loss,
)

from sklearn_cnat._compat import InvalidParameterError
from sklearn_cnat.metrics import (
    ambiguity_accuracy_score,
    brier_score,
    certified_accuracy_score,
    cnr_coverage_score,
    expected_calibration_error,
    get_scorer,
    get_scorer_names,
    log_loss_votes,
    make_cnr_scorer,
    nll_score,
    plausible_label_map,
    plurality_accuracy_score,
)

VOTES = np.array([[3, 0, 0], [1, 2, 0], [1, 1, 1], [0, 1, 2], [2, 0, 1]])
PROBA = np.array(
    [
        [0.8, 0.1, 0.1],
        [0.3, 0.6, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.2, 0.7],
        [0.4, 0.1, 0.5],
    ]
)


@dataclass(frozen=True)
class StandInCertificate:
    """The two attributes of sklearn_cnat.certificates.Certificate we rely on."""

    certified: np.ndarray
    prediction: np.ndarray


def _random_problem(rng, n=40, k=4):
    votes = rng.integers(0, 4, size=(n, k))
    votes[votes.sum(1) == 0, 0] = 1
    proba = rng.dirichlet(np.ones(k), size=n)
    return votes, proba


# --------------------------------------------------------------------------- #
# Accuracy
# --------------------------------------------------------------------------- #


def test_plurality_accuracy_matches_sklearn_on_labels():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 3, 30), rng.integers(0, 3, 30)
    assert plurality_accuracy_score(y, pred) == pytest.approx(accuracy_score(y, pred))
    w = rng.uniform(0, 2, 30)
    assert plurality_accuracy_score(y, pred, sample_weight=w) == pytest.approx(
        accuracy_score(y, pred, sample_weight=w)
    )


def test_plurality_accuracy_on_votes_by_hand():
    # plurality: 0, 1, 0 (three-way tie -> lowest), 2, 0
    assert plurality_accuracy_score(VOTES, [0, 1, 1, 2, 2]) == pytest.approx(3 / 5)
    assert plurality_accuracy_score(VOTES, [0, 1, 0, 2, 0]) == 1.0


def test_plurality_accuracy_maps_columns_with_labels():
    pred = np.array(["cat", "dog", "cat", "fox", "fox"])
    score = plurality_accuracy_score(VOTES, pred, labels=["cat", "dog", "fox"])
    assert score == pytest.approx(4 / 5)


def test_column_vector_is_labels():
    y = np.array([[0], [1], [2]])
    assert plurality_accuracy_score(y, [0, 1, 1]) == pytest.approx(2 / 3)


def test_integer_sample_weight_equals_repeating_rows():
    w = np.array([1, 2, 0, 3, 1])
    rep = np.repeat(np.arange(5), w)
    pred = np.array([0, 2, 1, 2, 2])
    assert plurality_accuracy_score(VOTES, pred, sample_weight=w) == pytest.approx(
        plurality_accuracy_score(VOTES[rep], pred[rep])
    )
    for metric in (brier_score, nll_score, expected_calibration_error):
        assert metric(VOTES, PROBA, sample_weight=w) == pytest.approx(
            metric(VOTES[rep], PROBA[rep])
        )


# --------------------------------------------------------------------------- #
# Log loss and Brier
# --------------------------------------------------------------------------- #


def test_nll_matches_sklearn_log_loss_on_labels():
    rng = np.random.default_rng(1)
    y = np.r_[0, 1, 2, rng.integers(0, 3, 27)]
    proba = rng.dirichlet(np.ones(3), size=30)
    assert nll_score(y, proba) == pytest.approx(log_loss(y, proba))
    strings = np.array(["a", "b", "c"])[y]
    assert nll_score(strings, proba) == pytest.approx(log_loss(strings, proba))
    assert log_loss_votes is nll_score


def test_nll_binary_1d_proba_matches_sklearn():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.2, 0.7, 0.9, 0.4])
    assert nll_score(y, p) == pytest.approx(log_loss(y, p))


def test_nll_on_votes_by_hand():
    votes = [[2, 1], [0, 3]]
    proba = [[0.5, 0.5], [0.25, 0.75]]
    expected = -(2 / 3 * np.log(0.5) + 1 / 3 * np.log(0.5) + np.log(0.75)) / 2
    assert nll_score(votes, proba) == pytest.approx(expected)


def test_nll_clips_zero_probabilities():
    assert np.isfinite(nll_score([[1, 1]], [[1.0, 0.0]]))
    assert nll_score([[1, 1]], [[1.0, 0.0]], eps=1e-3) == pytest.approx(
        -0.5 * (np.log(1 - 1e-3) + np.log(1e-3))
    )


def test_brier_matches_sklearn_binary():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.1, 0.8, 0.4, 0.3, 0.9])
    # ours is the multiclass sum; scikit-learn halves the binary score
    assert brier_score(y, p) == pytest.approx(2 * brier_score_loss(y, p))
    assert brier_score(y, np.c_[1 - p, p]) == pytest.approx(2 * brier_score_loss(y, p))


@pytest.mark.skipif(
    "scale_by_half" not in inspect.signature(brier_score_loss).parameters,
    reason="multiclass brier_score_loss needs scikit-learn >= 1.7",
)
def test_brier_matches_sklearn_multiclass():
    rng = np.random.default_rng(2)
    y = np.r_[0, 1, 2, rng.integers(0, 3, 17)]
    proba = rng.dirichlet(np.ones(3), size=20)
    assert brier_score(y, proba) == pytest.approx(brier_score_loss(y, proba))


def test_brier_on_votes_by_hand():
    votes = [[2, 1], [0, 3]]
    proba = [[1.0, 0.0], [0.5, 0.5]]
    expected = ((1 / 3) ** 2 * 2 + 0.25 * 2) / 2
    assert brier_score(votes, proba) == pytest.approx(expected)
    assert brier_score(votes, [[2 / 3, 1 / 3], [0, 1]]) == pytest.approx(0.0)


# --------------------------------------------------------------------------- #
# Calibration
# --------------------------------------------------------------------------- #


def test_ece_by_hand_uniform_bins():
    # bin (0.5, 0.6]: conf .55,.55 with 1 correct -> |0.5-0.55| ; bin (0.9, 1]:
    # conf .95,.95 both correct -> |1-0.95|
    y = [0, 1, 0, 0]
    proba = [[0.55, 0.45], [0.55, 0.45], [0.95, 0.05], [0.95, 0.05]]
    ece = expected_calibration_error(y, proba, n_bins=10)
    assert ece == pytest.approx(0.5 * 0.05 + 0.5 * 0.05)


def test_ece_one_bin_is_accuracy_gap():
    votes, proba = _random_problem(np.random.default_rng(3))
    acc = plurality_accuracy_score(votes, proba.argmax(1))
    assert expected_calibration_error(votes, proba, n_bins=1) == pytest.approx(
        abs(acc - proba.max(1).mean())
    )


def test_ece_quantile_bins_hold_equal_counts():
    y = [0, 0, 1, 0]
    proba = [[0.6, 0.4], [0.7, 0.3], [0.8, 0.2], [0.9, 0.1]]
    # two bins {0.6, 0.7} (both right) and {0.8, 0.9} (one right)
    ece = expected_calibration_error(y, proba, n_bins=2, strategy="quantile")
    assert ece == pytest.approx(0.5 * abs(1 - 0.65) + 0.5 * abs(0.5 - 0.85))


def test_ece_soft_uses_vote_share_of_prediction():
    votes = [[2, 1], [1, 2]]
    proba = [[0.9, 0.1], [0.9, 0.1]]
    # hard: correct 1, 0; soft: 2/3, 1/3 -- both mean 0.5 in the single bin
    assert expected_calibration_error(votes, proba, n_bins=1) == pytest.approx(0.4)
    soft = expected_calibration_error(votes, proba, n_bins=1, soft=True)
    assert soft == pytest.approx(0.4)
    # with separate bins they differ
    proba = [[0.9, 0.1], [0.6, 0.4]]
    hard = expected_calibration_error(votes, proba, n_bins=10)
    soft = expected_calibration_error(votes, proba, n_bins=10, soft=True)
    assert hard == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    assert soft == pytest.approx(0.5 * abs(2 / 3 - 0.9) + 0.5 * abs(1 / 3 - 0.6))


def test_ece_perfect_when_confident_and_right():
    assert expected_calibration_error([0, 1, 2], np.eye(3)) == 0.0


# --------------------------------------------------------------------------- #
# Ambiguity-aware evaluation
# --------------------------------------------------------------------------- #


def test_ambiguity_accuracy_by_hand():
    pred = [1, 0, 2, 1, 1]
    # shares > 0: row0 {0}, row1 {0,1}, row2 {0,1,2}, row3 {1,2}, row4 {0,2}
    assert ambiguity_accuracy_score(VOTES, pred) == pytest.approx(3 / 5)
    # share >= 0.5: {0}, {1}, {}, {2}, {0}; row 2 is left out
    assert ambiguity_accuracy_score(VOTES, pred, threshold=0.5) == pytest.approx(0.0)
    pred = [0, 1, 2, 2, 0]
    assert ambiguity_accuracy_score(VOTES, pred, threshold=0.5) == 1.0


def test_ambiguity_accuracy_at_least_plurality_accuracy():
    votes, proba = _random_problem(np.random.default_rng(4))
    pred = proba.argmax(1)
    ambiguous = ambiguity_accuracy_score(votes, pred)
    assert ambiguous >= plurality_accuracy_score(votes, pred)


def test_ambiguity_accuracy_on_labels_is_accuracy():
    assert ambiguity_accuracy_score([0, 1, 2], [0, 1, 1]) == pytest.approx(2 / 3)


def test_no_plausible_label_raises():
    with pytest.raises(ValueError, match="No example has a label with vote share"):
        ambiguity_accuracy_score([[1, 1, 1]], [0], threshold=0.5)
    with pytest.raises(ValueError, match="No example has a label with vote share"):
        plausible_label_map([[1, 1, 1]], [[0.2, 0.3, 0.5]], threshold=0.5)


def test_plausible_label_map_by_hand():
    # row 0: plausible {0}, ranked first -> 1; row 1: plausible {0, 1},
    # ranking 1 (rel), 2, 0 (rel) -> (1/1 + 2/3) / 2
    votes = [[3, 0, 0], [1, 2, 0]]
    proba = [[0.8, 0.1, 0.1], [0.1, 0.6, 0.3]]
    assert plausible_label_map(votes, proba) == pytest.approx((1 + 5 / 6) / 2)
    # single plausible label ranked third: reciprocal rank
    assert plausible_label_map([[0, 0, 1]], [[0.5, 0.3, 0.2]]) == pytest.approx(1 / 3)


def test_plausible_label_map_matches_sklearn_lrap():
    votes, proba = _random_problem(np.random.default_rng(5))
    relevant = (votes / votes.sum(1, keepdims=True) >= 0.3).astype(int)
    keep = relevant.any(1)
    assert plausible_label_map(votes, proba, threshold=0.3) == pytest.approx(
        label_ranking_average_precision_score(relevant[keep], proba[keep])
    )


# --------------------------------------------------------------------------- #
# Certificates
# --------------------------------------------------------------------------- #


def test_coverage_and_certified_accuracy_by_hand():
    cert = StandInCertificate(
        certified=np.array([True, True, False, True, False]),
        prediction=np.array([0, 2, 0, 2, 0]),
    )
    assert cnr_coverage_score(cert) == pytest.approx(3 / 5)
    # plurality 0, 1, 0, 2, 0: certified and right -> rows 0 and 3
    assert certified_accuracy_score(VOTES, cert) == pytest.approx(2 / 5)
    assert certified_accuracy_score(
        np.array(["a", "c", "a", "c", "b"]),
        StandInCertificate(cert.certified, np.array(["a", "c", "b", "b", "b"])),
    ) == pytest.approx(2 / 5)


@settings(max_examples=50, deadline=None)
@given(
    certified=arrays(bool, 12),
    prediction=arrays(np.int64, 12, elements=st.integers(0, 2)),
    votes=arrays(np.int64, (12, 3), elements=st.integers(1, 4)),
)
def test_certified_accuracy_bounded_by_coverage_and_accuracy(
    certified, prediction, votes
):
    cert = StandInCertificate(certified, prediction)
    cert_acc = certified_accuracy_score(votes, cert)
    assert cert_acc <= cnr_coverage_score(cert) + 1e-12
    assert cert_acc <= plurality_accuracy_score(votes, prediction) + 1e-12


def test_certificate_without_certified_raises():
    with pytest.raises(TypeError, match="Expected a Certificate"):
        cnr_coverage_score(object())
    with pytest.raises(TypeError, match="must be boolean"):
        cnr_coverage_score(StandInCertificate(np.array([0.5]), np.array([0])))


# --------------------------------------------------------------------------- #
# Properties
# --------------------------------------------------------------------------- #


@st.composite
def vote_problems(draw):
    n = draw(st.integers(1, 25))
    k = draw(st.integers(2, 5))
    votes = draw(arrays(np.int64, (n, k), elements=st.integers(0, 5)))
    votes[votes.sum(1) == 0, 0] = 1
    raw = draw(
        arrays(np.float64, (n, k), elements=st.floats(0.01, 1.0, allow_subnormal=False))
    )
    return votes, raw / raw.sum(1, keepdims=True)


@settings(max_examples=60, deadline=None)
@given(problem=vote_problems(), n_bins=st.integers(1, 20))
def test_metric_ranges(problem, n_bins):
    votes, proba = problem
    for strategy in ("uniform", "quantile"):
        for soft in (False, True):
            ece = expected_calibration_error(
                votes, proba, n_bins=n_bins, strategy=strategy, soft=soft
            )
            assert 0.0 <= ece <= 1.0
    assert 0.0 <= brier_score(votes, proba) <= 2.0
    assert 0.0 < plausible_label_map(votes, proba) <= 1.0
    # cross-entropy >= entropy of the vote distribution (Gibbs)
    t = votes / votes.sum(1, keepdims=True)
    entropy = -np.mean(np.sum(np.where(t > 0, t * np.log(np.where(t > 0, t, 1)), 0), 1))
    assert nll_score(votes, proba) >= entropy - 1e-9


@settings(max_examples=60, deadline=None)
@given(problem=vote_problems(), n_bins=st.integers(1, 20))
def test_predicting_vote_distribution_is_perfectly_calibrated(problem, n_bins):
    votes, _ = problem
    t = votes / votes.sum(1, keepdims=True)
    assert expected_calibration_error(votes, t, n_bins=n_bins, soft=True) == (
        pytest.approx(0.0, abs=1e-12)
    )
    assert brier_score(votes, t) == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(problem=vote_problems())
def test_ece_at_most_mean_absolute_gap(problem):
    votes, proba = problem
    correct = proba.argmax(1) == votes.argmax(1)
    bound = np.mean(np.abs(correct - proba.max(1)))
    assert expected_calibration_error(votes, proba) <= bound + 1e-12


# --------------------------------------------------------------------------- #
# Input validation: one match= test per error
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: brier_score([[1, -1]], [[0.5, 0.5]]), ValueError, "negative"),
        (lambda: brier_score([[0, 0]], [[0.5, 0.5]]), ValueError, "at least one vote"),
        (lambda: brier_score([[1, 0, 0]], [[0.5, 0.5]]), ValueError, "3 columns but"),
        (
            lambda: brier_score([0, 1], [[0.5, 1.5], [0.5, 0.5]]),
            ValueError,
            r"\[0, 1\]",
        ),
        (
            lambda: brier_score([3, 4, 5], [[0.5, 0.5]] * 3),
            ValueError,
            "distinct labels",
        ),
        (
            lambda: brier_score([0, 7], [[0.5, 0.5]] * 2, labels=[0, 1]),
            ValueError,
            r"contains values \[7\]",
        ),
        (
            lambda: plurality_accuracy_score([[1, 0]], [0], labels=[0, 1, 2]),
            ValueError,
            "labels has 3 entries",
        ),
        (
            lambda: plurality_accuracy_score([[1, 0]], [0], labels=[1, 1]),
            ValueError,
            "duplicates",
        ),
        (
            lambda: plurality_accuracy_score([[1, 0]], ["cat"]),
            ValueError,
            "incomparable|not in labels",
        ),
        (lambda: plurality_accuracy_score([0, 1], [0]), ValueError, "inconsistent"),
        (
            lambda: plurality_accuracy_score([0, 1], [0, 1], sample_weight=[-1, 1]),
            ValueError,
            "non-negative",
        ),
        (lambda: brier_score([], []), ValueError, "empty|0 sample"),
        (
            lambda: expected_calibration_error([0], [[1, 0]], n_bins=0),
            InvalidParameterError,
            "n_bins",
        ),
        (
            lambda: expected_calibration_error([0], [[1, 0]], strategy="equal"),
            InvalidParameterError,
            "strategy",
        ),
        (
            lambda: ambiguity_accuracy_score([[1, 0]], [0], threshold=0),
            InvalidParameterError,
            "threshold",
        ),
        (lambda: nll_score([0], [[1, 0]], eps=0), InvalidParameterError, "eps"),
    ],
)
def test_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- #
# Scorers
# --------------------------------------------------------------------------- #


class PluralityLogistic(ClassifierMixin, BaseEstimator):
    """Logistic regression on the plurality of a vote y (or on labels)."""

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


class Certifying(PluralityLogistic):
    def certify(self, X, tier="stochastic", m=None, delta=0.05):
        self.last_call_ = {"tier": tier, "m": m, "delta": delta}
        proba = self.predict_proba(X)
        return StandInCertificate(proba.max(1) > 0.7, self.predict(X))


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-1, 1, (30, 2)), rng.normal(1, 1, (30, 2))]
    votes = np.zeros((60, 2), dtype=int)
    votes[:30, 0], votes[30:, 1] = 3, 3
    votes[::7] = [1, 2]
    return X, votes


def test_scorer_names():
    names = get_scorer_names()
    ours = {
        "accuracy",
        "ambiguity_accuracy",
        "certified_accuracy",
        "cnr_coverage",
        "neg_brier_score",
        "neg_ece",
        "neg_log_loss",
        "plausible_label_map",
    }
    assert ours <= set(names)
    assert {"roc_auc", "f1_macro", "neg_mean_squared_error"} <= set(names)
    assert names == sorted(names)


def test_vote_scorers_compute_metrics(blobs):
    X, votes = blobs
    clf = Certifying().fit(X, votes)
    proba, pred = clf.predict_proba(X), clf.predict(X)
    accuracy = plurality_accuracy_score(votes, pred)
    assert get_scorer("accuracy")(clf, X, votes) == accuracy
    assert get_scorer("neg_log_loss")(clf, X, votes) == -nll_score(votes, proba)
    assert get_scorer("neg_brier_score")(clf, X, votes) == -brier_score(votes, proba)
    assert get_scorer("neg_ece")(clf, X, votes) == -expected_calibration_error(
        votes, proba
    )
    assert get_scorer("ambiguity_accuracy")(clf, X, votes) == ambiguity_accuracy_score(
        votes, pred
    )
    assert get_scorer("plausible_label_map")(clf, X, votes) == plausible_label_map(
        votes, proba
    )
    # 1-D labels give scikit-learn's numbers
    y = votes.argmax(1)
    assert get_scorer("accuracy")(clf, X, y) == pytest.approx(accuracy_score(y, pred))
    assert get_scorer("neg_log_loss")(clf, X, y) == pytest.approx(-log_loss(y, proba))


def test_vote_scorers_map_columns_to_string_classes(blobs):
    X, votes = blobs
    names = np.array(["cat", "dog"])
    clf = PluralityLogistic().fit(X, names[votes.argmax(1)])
    int_clf = PluralityLogistic().fit(X, votes)
    for name in ("accuracy", "neg_log_loss", "neg_ece", "ambiguity_accuracy"):
        assert get_scorer(name)(clf, X, votes) == pytest.approx(
            get_scorer(name)(int_clf, X, votes)
        )


def test_vote_scorers_widen_missing_classes():
    # trained on classes {0, 2} only; votes have 3 columns
    X = np.array([[0.0], [0.1], [1.0], [1.1]])
    votes = np.array([[3, 0, 0], [2, 1, 0], [0, 0, 3], [0, 1, 2]])
    clf = PluralityLogistic().fit(X, votes)
    assert list(clf.classes_) == [0, 2]
    full = np.zeros((4, 3))
    full[:, [0, 2]] = clf.predict_proba(X)
    assert get_scorer("neg_brier_score")(clf, X, votes) == pytest.approx(
        -brier_score(votes, full)
    )
    assert get_scorer("accuracy")(clf, X, votes) == 1.0


def test_vote_scorer_rejects_unmatched_classes(blobs):
    X, votes = blobs
    clf = PluralityLogistic().fit(X, np.array(["a", "b"])[votes.argmax(1)])
    with pytest.raises(ValueError, match="cannot be matched to the 3 columns"):
        get_scorer("neg_log_loss")(clf, X, np.c_[votes, votes[:, :1]])


def test_certificate_scorers(blobs):
    X, votes = blobs
    clf = Certifying().fit(X, votes)
    cert = clf.certify(X)
    assert get_scorer("cnr_coverage")(clf, X, votes) == cnr_coverage_score(cert)
    assert clf.last_call_ == {"tier": "bounded", "m": None, "delta": 0.05}
    get_scorer("cnr_coverage_stochastic")(clf, X, votes)
    assert clf.last_call_ == {"tier": "stochastic", "m": None, "delta": 0.05}
    get_scorer("cnr_coverage_flip_10")(clf, X, votes)
    assert clf.last_call_ == {"tier": "flip", "m": 10, "delta": 0.05}
    assert get_scorer("certified_accuracy")(clf, X, votes) == certified_accuracy_score(
        votes, cert
    )
    scorer = make_cnr_scorer(
        "certified_accuracy", tier="deterministic", delta=None, m=8
    )
    scorer(clf, X, votes)
    assert clf.last_call_ == {"tier": "deterministic", "m": 8, "delta": None}


def test_certificate_scorer_needs_certify(blobs):
    X, votes = blobs
    clf = PluralityLogistic().fit(X, votes)
    with pytest.raises(TypeError, match="PluralityLogistic has none"):
        get_scorer("cnr_coverage")(clf, X, votes)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"metric": "precision"}, "metric"),
        ({"delta": 1.5}, "delta"),
        ({"m": 0}, "'m'"),
        ({"tier": 3}, "tier"),
    ],
)
def test_make_cnr_scorer_validates(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        make_cnr_scorer(**kwargs)


def test_get_scorer_falls_back_to_sklearn(blobs):
    X, votes = blobs
    y = votes.argmax(1)
    clf = PluralityLogistic().fit(X, y)
    assert get_scorer("f1_macro")(clf, X, y) > 0.5
    assert get_scorer(None) is None
    scorer = get_scorer("neg_ece")
    assert get_scorer(scorer) is scorer
    assert get_scorer("neg_ece") is not get_scorer("neg_ece")


def test_get_scorer_unknown_name_lists_ours():
    with pytest.raises(ValueError, match=r"Did you mean 'cnr_coverage'.*neg_ece"):
        get_scorer("cnr_coverag")
    with pytest.raises(ValueError, match="is not a valid scoring name"):
        get_scorer("nonsense_metric_xyz")
    with pytest.raises(TypeError, match="must be a str"):
        get_scorer(3)


def test_scorer_repr():
    assert repr(get_scorer("neg_ece")) == "get_scorer('neg_ece')"
    assert repr(get_scorer("cnr_coverage")) == (
        "make_cnr_scorer(metric='coverage', tier='bounded', delta=0.05, m=None)"
    )
