from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("matplotlib")
import matplotlib  # noqa: E402

matplotlib.use("Agg")

from sklearn_cnat.display import CoverageDisplay, ReliabilityDisplay  # noqa: E402
from sklearn_cnat.metrics import expected_calibration_error  # noqa: E402


def _cert(tier, **kw):
    base = dict(tier=tier, prediction=np.array([0, 1, 1, 2]), radius_scale=None, max_flips=None, delta_min=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_coverage_curve_bounded_is_decreasing_and_exact(close_figures):
    cert = _cert("bounded", radius_scale=np.array([0.0, 0.5, 1.5, np.inf]))
    disp = CoverageDisplay.from_certificate(cert, np.array([0, 1, 0, 2]), grid=[0.0, 0.5, 1.0, 2.0])
    np.testing.assert_allclose(disp.coverage, [1.0, 0.75, 0.5, 0.25])
    # correct: points 0, 1, 3 (point 2 predicts 1, truth 0)
    np.testing.assert_allclose(disp.certified_accuracy, [0.75, 0.5, 0.25, 0.25])
    assert np.all(disp.certified_accuracy <= disp.coverage)
    assert disp.ax_.get_xlabel().startswith("budget scale")
    assert len(disp.ax_.get_lines()) == 2


def test_coverage_curve_flip_and_stochastic(close_figures):
    flip = CoverageDisplay.from_certificate(_cert("flip", max_flips=np.array([0, 3, 10, 1])), grid=[0, 1, 3, 11])
    np.testing.assert_allclose(flip.coverage, [1.0, 0.75, 0.5, 0.0])
    assert flip.certified_accuracy is None
    sto = CoverageDisplay.from_certificate(_cert("stochastic", delta_min=np.array([1e-4, 0.01, 0.2, 1.0])),
                                           grid=[1e-3, 0.05, 0.5])
    np.testing.assert_allclose(sto.coverage, [0.25, 0.5, 0.75])
    assert sto.ax_.get_xscale() == "log"


def test_several_estimators_on_one_axes(close_figures):
    a = CoverageDisplay.from_certificate(_cert("flip", max_flips=np.array([0, 3, 10, 1])), name="a")
    CoverageDisplay.from_certificate(_cert("flip", max_flips=np.array([1, 1, 1, 1])), name="b", ax=a.ax_)
    labels = [line.get_label() for line in a.ax_.get_lines()]
    assert "a: coverage" in labels and "b: coverage" in labels


def test_missing_tier_data_raises():
    with pytest.raises(ValueError, match="radius_scale"):
        CoverageDisplay.from_certificate(_cert("bounded"))


def test_reliability_matches_ece(close_figures):
    rng = np.random.RandomState(0)
    proba = rng.dirichlet(np.ones(4), size=300)
    y = rng.randint(0, 4, 300)
    disp = ReliabilityDisplay.from_predictions(y, proba, n_bins=10)
    assert disp.ece == pytest.approx(expected_calibration_error(y, proba, n_bins=10))
    assert disp.counts.sum() == 300
    assert np.all((disp.accuracy >= 0) & (disp.accuracy <= 1))
    votes = np.eye(4, dtype=int)[y] * 3
    disp2 = ReliabilityDisplay.from_predictions(votes, proba, n_bins=10)
    assert disp2.ece == pytest.approx(disp.ece)


def test_from_estimator_with_string_classes_and_votes(close_figures):
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer

    rng = np.random.RandomState(0)
    y = rng.randint(0, 3, 90)
    X = np.eye(3)[y] * 3 + rng.normal(size=(90, 3))
    names = np.array(["a", "b", "c"])[y]
    clf = CNATClassifier(head="ridge", budget=NoiseBudgetTransformer(mapping="flat", radius=0.05)).fit(X, names)
    disp = CoverageDisplay.from_estimator(clf, X, np.eye(3, dtype=int)[y], tier="flip", m=1, grid=[0, 1, 2])
    cert = clf.certify(X, tier="flip", m=1)
    assert disp.coverage[1] == pytest.approx(cert.coverage)
    assert disp.certified_accuracy[1] == pytest.approx(np.mean(cert.certified & (cert.prediction == names)))
