"""Certified peers (sklearn_cnat.peers, SS-DPA through PartitionAggregationClassifier) against brute force."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression, RidgeClassifier

from sklearn_cnat.exceptions import CertificationError
from sklearn_cnat.partition import PartitionAggregationClassifier, _max_flips, _plurality
from sklearn_cnat.peers import (
    _chernoff_log_failure,
    _log_flip_thresholds,
    certify_knn,
    certify_label_flip_smoothing,
    certify_rnn,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _labelings(n, K):
    return np.array(list(itertools.product(range(K), repeat=n)), dtype=np.int64)


def _flips_to_change(pred_all, y_index, labelings, y):
    """Smallest Hamming distance from y to a labeling whose prediction differs (brute force)."""
    hamming = (labelings != y[None, :]).sum(axis=1)
    changed = pred_all != pred_all[y_index]
    return int(hamming[changed].min()) if changed.any() else len(y) + 1


# --------------------------------------------------------------------------- kNN / rNN


def _brute_neighbours(F, X, k=None, radius=None):
    d = np.sqrt(((X[:, None, :] - F[None, :, :]) ** 2).sum(-1))
    if radius is not None:
        return d <= radius
    order = np.argsort(d, axis=1, kind="stable")[:, :k]  # ties: lowest index first
    mask = np.zeros_like(d, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_knn_max_flips_is_exact_by_brute_force(k):
    rng = np.random.RandomState(k)
    n, K = 7, 3
    F = np.round(rng.randn(n, 2), 1)
    F[3] = F[1]  # duplicate point: a distance tie broken by the index
    X = np.vstack([np.round(rng.randn(5, 2), 1), F[1]])
    y = rng.randint(0, K, n)
    labelings = _labelings(n, K)
    y_index = int(np.flatnonzero((labelings == y).all(axis=1))[0])
    mask = _brute_neighbours(F, X, k=k)
    cert = certify_knn(F, y, X, n_neighbors=k, m=1, classes=np.arange(K))
    for j in range(len(X)):
        counts = np.stack([np.bincount(lab[mask[j]], minlength=K) for lab in labelings])
        pred_all = _plurality(counts)
        assert cert.prediction[j] == pred_all[y_index]
        assert cert.max_flips[j] == _flips_to_change(pred_all, y_index, labelings, y) - 1
    assert np.array_equal(cert.certified, cert.max_flips >= 1)


def test_rnn_max_flips_is_exact_and_empty_neighbourhoods_abstain():
    rng = np.random.RandomState(0)
    n, K = 6, 3
    F = rng.randn(n, 2)
    X = np.vstack([rng.randn(4, 2) * 0.5, [[50.0, 50.0]]])  # the last point has no neighbour
    y = rng.randint(0, K, n)
    radius = 1.2
    labelings = _labelings(n, K)
    y_index = int(np.flatnonzero((labelings == y).all(axis=1))[0])
    mask = _brute_neighbours(F, X, radius=radius)
    cert = certify_rnn(F, y, X, radius=radius, m=0, classes=np.arange(K))
    for j in range(len(X) - 1):
        counts = np.stack([np.bincount(lab[mask[j]], minlength=K) for lab in labelings])
        pred_all = _plurality(counts)
        assert cert.max_flips[j] == _flips_to_change(pred_all, y_index, labelings, y) - 1
    assert cert.prediction[-1] == -1 and cert.max_flips[-1] == -1 and not cert.certified[-1]


def test_knn_cosine_and_labels_by_value():
    F = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.1, 3.0], [0.0, 2.0]])
    cert = certify_knn(F, np.array(["a", "a", "b", "b", "b"]), np.array([[0.1, 5.0]]), n_neighbors=3, m=1,
                       metric="cosine")
    assert cert.prediction.tolist() == ["b"] and cert.max_flips.tolist() == [1]
    assert cert.classes.tolist() == ["a", "b"]


# --------------------------------------------------------------------------- SS-DPA


def test_ss_dpa_flips_match_the_paper_formula():
    """P1 equals Levine & Feizi's floor((n_c - max_{b != c}(n_b + [b < c])) / 2)."""
    rng = np.random.RandomState(0)
    counts = rng.randint(0, 8, size=(500, 4))
    pred = _plurality(counts)
    paper = []
    for row, c in zip(counts, pred):
        rival = max(row[b] + (b < c) for b in range(4) if b != c)
        paper.append(math.floor((row[c] - rival) / 2))
    assert np.array_equal(_max_flips(counts, pred), paper)


@pytest.mark.parametrize("base, n, K", [(RidgeClassifier(alpha=1.0), 6, 3),
                                        (LogisticRegression(C=10.0, max_iter=500), 6, 2)])
def test_ss_dpa_is_sound_under_every_label_change(base, n, K):
    """Refit on every labeling within the certified number of flips: the vote never changes."""
    rng = np.random.RandomState(1)
    F = rng.randn(n, 2)
    X = rng.randn(4, 2)
    y = rng.randint(0, K, n)
    model = PartitionAggregationClassifier(base, n_partitions=3, classes=np.arange(K)).fit(F, y)
    cert = model.certify(X, tier="flip", m=1)
    flips = cert.max_flips
    for lab in _labelings(n, K):
        changed = int((lab != y).sum())
        if changed == 0 or changed > flips.max():
            continue
        pred = PartitionAggregationClassifier(base, n_partitions=3, classes=np.arange(K)).fit(F, lab).predict(X)
        covered = flips >= changed
        assert np.array_equal(pred[covered], cert.prediction[covered])


# --------------------------------------------------------------------------- Rosenfeld et al. 2020


def _ridge_h(F, X, alpha):
    from sklearn_cnat.certificates._ridge import _ridge_influence

    return np.concatenate(list(_ridge_influence(F, X, alpha)))


def _noise_matrix(labelings, q, K):
    """P[y~ = row b | y = row a] for all pairs of labelings (keep 1 - q, else each other class q / (K - 1))."""
    same = labelings[:, None, :] == labelings[None, :, :]
    return np.where(same, 1.0 - q, q / (K - 1)).prod(axis=-1)


def test_chernoff_bound_is_below_monte_carlo():
    rng = np.random.RandomState(0)
    n, K, q, alpha = 60, 3, 0.2, 1.0
    F = rng.randn(n, 3)
    y = np.argmax(F[:, :K] + 0.3 * rng.randn(n, K), axis=1)
    X = rng.randn(8, 3)
    H = _ridge_h(F, X, alpha)
    pred = np.argmax(H @ np.eye(K)[y], axis=1)
    log_fail = _chernoff_log_failure(torch.as_tensor(H), torch.as_tensor(y), torch.as_tensor(pred), q, K).numpy()
    p_lower = 1.0 - np.exp(log_fail)
    draws = 20000
    keep = rng.rand(draws, n) >= q
    shift = rng.randint(1, K, size=(draws, n))
    noisy = np.where(keep, y[None, :], (y[None, :] + shift) % K)  # another class, uniformly
    scores = np.einsum("tn,dnk->dtk", H, np.eye(K)[noisy])
    p_mc = (scores.argmax(-1) == pred[None, :]).mean(axis=0)
    assert np.all(p_mc >= p_lower - 4 * np.sqrt(0.25 / draws))
    assert np.any(p_lower > 0.6)  # not vacuous


def _law_of_s(r, q, K):
    """P[S = s] around y, s = -r..r, by enumerating the multinomial of (A, B, rest)."""
    keep, u = 1.0 - q, q / (K - 1)
    other = 1.0 - keep - u
    law = np.zeros(2 * r + 1)
    for a in range(r + 1):
        for b in range(r - a + 1):
            coef = math.factorial(r) / (math.factorial(a) * math.factorial(b) * math.factorial(r - a - b))
            law[b - a + r] += coef * keep**a * u**b * other ** (r - a - b)
    return law


@pytest.mark.parametrize("q, K", [(0.1, 10), (0.3, 3), (0.25, 2)])
def test_flip_thresholds_match_neyman_pearson_by_enumeration(q, K):
    L = _log_flip_thresholds(q, K, -50.0, 6)
    rho = (1.0 - q) / (q / (K - 1))
    for r in range(1, len(L)):
        mu = _law_of_s(r, q, K)
        nu = mu * rho ** np.arange(-r, r + 1)
        # smallest p whose Neyman-Pearson lower bound on nu(f = c) reaches 1/2, by bisection
        def nu_lower(p):
            out, left = 0.0, p
            for s in range(2 * r + 1):  # ascending ratio
                take = min(mu[s], left)
                out += take * rho ** (s - r)
                left -= take
            return out

        lo, hi = 0.0, 1.0
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if nu_lower(mid) <= 0.5 else (lo, mid)
        expected = min(math.log(1.0 - hi), *(L[:r]))  # L is a running minimum
        assert L[r] == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("n, K, q, alpha, least", [(10, 2, 0.01, 1.0, 1), (7, 3, 0.03, 1.0, 0)])
def test_smoothing_certificate_is_sound_by_exact_enumeration(n, K, q, alpha, least):
    """Exact smoothed classifier g_{y'} for every labeling y' (all noise outcomes enumerated)."""
    rng = np.random.RandomState(3)
    centres = np.array([[3.0, 0.0], [0.0, 3.0], [-3.0, -3.0]])[:K]
    y = np.arange(n) % K
    F = centres[y] + 0.3 * rng.randn(n, 2)
    X = centres + 0.2 * rng.randn(K, 2)
    cert = certify_label_flip_smoothing(F, y, X, alpha=alpha, q=q, m=1, classes=np.arange(K))
    assert cert.max_flips.min() >= least  # something non-trivial to check
    labelings = _labelings(n, K)
    W = _noise_matrix(labelings, q, K)  # (y', y~)
    H = _ridge_h(F, X, alpha)
    base = np.argmax(np.einsum("tn,lnk->ltk", H, np.eye(K)[labelings]), axis=-1)  # f(y~)(x), (labelings, T)
    hamming = (labelings != y[None, :]).sum(axis=1)
    y_index = int(np.flatnonzero(hamming == 0)[0])
    log_fail = _chernoff_log_failure(torch.as_tensor(H), torch.as_tensor(y), torch.as_tensor(np.array(cert.prediction)), q,
                                     K).numpy()
    for j in range(len(X)):
        prob = W @ np.eye(K)[base[:, j]]  # P_{y'}[f = k], (labelings, K)
        c = cert.prediction[j]
        assert 1.0 - math.exp(log_fail[j]) <= prob[y_index, c] + 1e-12  # the Chernoff bound is a lower bound
        g = np.argmax(prob, axis=1)
        covered = hamming <= cert.max_flips[j]
        assert np.all(g[covered] == c)


def test_smoothing_certificate_fields_and_monotonicity():
    rng = np.random.RandomState(0)
    F = rng.randn(200, 4)
    y = (F[:, 0] > 0).astype(int) + (F[:, 1] > 0)
    X = rng.randn(30, 4)
    low = certify_label_flip_smoothing(F, y, X, alpha=1.0, q=0.1, m=0, classes=[0, 1, 2])
    high = certify_label_flip_smoothing(F, y, X, alpha=1.0, q=0.1, m=3, classes=[0, 1, 2])
    assert np.array_equal(low.max_flips, high.max_flips)
    assert np.array_equal(high.certified, high.max_flips >= 3)
    assert np.array_equal(high.certified, high.worst_case_margin > 0)
    assert low.engine == "rosenfeld-smoothed-ridge" and low.tier == "flip"


# --------------------------------------------------------------------------- validation


def test_errors():
    F, y = np.zeros((3, 2)), np.array([0, 1, 0])
    with pytest.raises(CertificationError, match="m .* is required"):
        certify_knn(F, y, F, n_neighbors=1, m=None)
    with pytest.raises(CertificationError, match="n_neighbors must be a positive integer"):
        certify_knn(F, y, F, n_neighbors=0, m=1)
    with pytest.raises(CertificationError, match="radius must be a finite number"):
        certify_rnn(F, y, F, radius=-1.0, m=1)
    with pytest.raises(CertificationError, match="metric must be one of"):
        certify_knn(F, y, F, n_neighbors=1, m=1, metric="manhattan")
    with pytest.raises(CertificationError, match="not one of the classes"):
        certify_knn(F, np.array([0, 1, 5]), F, n_neighbors=1, m=1, classes=[0, 1])
    with pytest.raises(CertificationError, match="q must lie in"):
        certify_label_flip_smoothing(F, y, F, alpha=1.0, q=0.6, m=1)
    with pytest.raises(CertificationError, match="F_test has 3 features"):
        certify_knn(F, y, np.zeros((2, 3)), n_neighbors=1, m=1)


# --------------------------------------------------------------------------- display


def test_certified_accuracy_display(close_figures):
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    from sklearn_cnat.display import CertifiedAccuracyDisplay

    F = np.array([[0.0], [0.1], [0.2], [1.0], [1.1], [1.2]])
    y = np.array([0, 0, 0, 1, 1, 1])
    X = np.array([[0.05], [1.05], [0.6]])
    certs = {"kNN k=3": certify_knn(F, y, X, n_neighbors=3, m=1),
             "kNN k=5": certify_knn(F, y, X, n_neighbors=5, m=1)}
    disp = CertifiedAccuracyDisplay.from_certificates(certs, np.array([0, 1, 1]))
    assert set(disp.lines_) == set(certs)
    for values in disp.certified_accuracy.values():
        assert np.all(np.diff(values) <= 0)
    assert disp.certified_accuracy["kNN k=3"][0] == pytest.approx(disp.clean_accuracy["kNN k=3"])
    assert disp.ax_.get_xlabel() == "flipped training labels m"


def test_api_page_lists_the_peers():
    from pathlib import Path

    import sklearn_cnat.peers as peers

    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    assert all(name in text for name in peers.__all__)
