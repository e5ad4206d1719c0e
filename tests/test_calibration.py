"""Temperature calibration of the ridge head: leave-one-out and noise-corrected."""

import numpy as np
import pytest
from scipy.special import softmax

from sklearn_cnat import CNATClassifier
from sklearn_cnat._calibration import _fit_noise_corrected_temperature, _noise_channel
from sklearn_cnat.budgets import NoiseBudgetTransformer
from sklearn_cnat.datasets import load_digits_votes
from sklearn_cnat.exceptions import CNATValueError


def _simulated(n=20000, k=4, t_true=0.5, seed=0):
    """Scores, true classes drawn from softmax(s / t_true), votes through a known channel."""
    rng = np.random.RandomState(seed)
    scores = rng.normal(size=(n, k))
    p_true = softmax(scores / t_true, axis=1)
    y = (p_true.cumsum(1) > rng.rand(n, 1)).argmax(1)
    channel = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))  # N[a, b], columns sum to 1
    counts = np.zeros((n, k))
    for _ in range(3):
        obs = (channel[:, y].T.cumsum(1) > rng.rand(n, 1)).argmax(1)
        counts[np.arange(n), obs] += 1
    return scores, counts, channel


def test_noise_corrected_temperature_recovers_the_true_temperature():
    scores, counts, channel = _simulated(t_true=0.5)
    t = _fit_noise_corrected_temperature(scores, counts, channel)
    assert t == pytest.approx(0.5, rel=0.05)
    # plain temperature scaling against the vote histograms is under-confident (larger T)
    from sklearn_cnat._calibration import _fit_temperature

    assert _fit_temperature(scores, counts / 3) > 0.6


def test_noise_corrected_temperature_is_the_likelihood_minimiser():
    scores, counts, channel = _simulated(n=3000, t_true=1.3, seed=1)
    t = _fit_noise_corrected_temperature(scores, counts, channel)

    def nll(tt):
        q = softmax(scores / tt, axis=1) @ channel.T
        return -np.sum(counts * np.log(q)) / len(scores)

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([nll(g) for g in grid])]
    assert t == pytest.approx(best, rel=2e-3)
    assert nll(t) <= min(nll(g) for g in grid) + 1e-9


def test_channel_estimate_is_column_stochastic_and_close_to_the_truth():
    # the channel is identifiable when x nearly determines the true class (small temperature);
    # with aleatoric classes cleanlab's confident joint counts part of that randomness as noise
    scores, counts, channel = _simulated(n=20000, t_true=0.05, seed=2)
    est = _noise_channel(counts, softmax(scores / 0.05, axis=1))
    np.testing.assert_allclose(est.sum(0), 1.0, atol=1e-9)
    assert np.abs(est - channel).max() < 0.05


def test_classifier_noise_corrected_calibration_keeps_predictions():
    d = load_digits_votes(random_state=0)
    kw = dict(head="ridge", alpha=30.0, budget=NoiseBudgetTransformer(pi="votes"))
    loo = CNATClassifier(**kw).fit(d.data, d.votes)
    nc = CNATClassifier(calibration="noise_corrected", **kw).fit(d.data, d.votes)
    np.testing.assert_array_equal(loo.predict(d.data), nc.predict(d.data))
    np.testing.assert_allclose(loo.decision_function(d.data), nc.decision_function(d.data))
    assert nc.temperature_ < loo.temperature_  # votes are flatter than the truth: less smoothing
    p = nc.predict_proba(d.data)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    cert_loo = loo.certify(d.data[:50], tier="stochastic")
    cert_nc = nc.certify(d.data[:50], tier="stochastic")
    np.testing.assert_array_equal(cert_loo.certified, cert_nc.certified)  # certificates do not move


@pytest.mark.parametrize("kwargs, match", [
    (dict(calibration="isotonic", head="ridge"), "calibration"),
    (dict(calibration="noise_corrected", head="softmax"), "head='ridge'"),
])
def test_bad_calibration(kwargs, match):
    X = np.random.RandomState(0).rand(20, 3)
    with pytest.raises(CNATValueError, match=match):
        CNATClassifier(**kwargs).fit(X, np.arange(20) % 2)
