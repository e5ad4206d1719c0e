"""Unit tests of the ridge certificates and of :class:`Certificate` (docs/certificates.md)."""

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog
from sklearn.linear_model import Ridge

from sklearn_cnat.certificates import Certificate, certify_ridge
from sklearn_cnat.certificates._ridge import _kl_gain, _l1_gain, _ridge_fit, _ridge_influence
from sklearn_cnat.exceptions import CertificationError


def _t(value):
    return torch.tensor(value, dtype=torch.float64)


@dataclass
class _Budget:
    pi: np.ndarray
    r: np.ndarray = None
    rho: np.ndarray = None
    counts: np.ndarray = None
    classes_: np.ndarray = None

    def scaled(self, s):
        return replace(self, r=np.minimum(self.r * s, 2.0), rho=None if self.rho is None else self.rho * s)


def _data(seed=0, n=50, d=4, K=3, n_test=40, votes=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d)) * 1.5
    y = rng.integers(K, size=n)
    F = centers[y] + rng.normal(size=(n, d))
    p = np.full((n, K), 0.1 / K)
    p[np.arange(n), y] += 0.9
    counts = np.stack([rng.multinomial(votes, row / row.sum()) for row in p]).astype(float)
    pi = counts / votes
    budget = _Budget(pi=pi, r=rng.uniform(0, 0.3, n), rho=rng.uniform(0, 0.05, n), counts=counts)
    X = centers[rng.integers(K, size=n_test)] + rng.normal(size=(n_test, d))
    return F, budget, X


def _influence_reference(F, X, alpha):
    """h_i(x) from (C1) by a dense formula (independent of the chunked torch code)."""
    n, d = F.shape
    fc = F - F.mean(axis=0)
    A = fc.T @ fc + alpha * np.eye(d)
    return (X - F.mean(axis=0)) @ np.linalg.solve(A, fc.T) + 1.0 / n


# ----------------------------------------------------------------------------- the learner


@pytest.mark.parametrize("n, d, K, alpha", [(50, 4, 3, 1.0), (20, 30, 2, 0.1), (200, 10, 5, 10.0), (7, 3, 4, 1e-3)])
def test_ridge_fit_matches_sklearn(n, d, K, alpha):
    rng = np.random.default_rng(n + d)
    F = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d) * 5
    Q = rng.dirichlet(np.ones(K), size=n)
    coef, intercept = _ridge_fit(F, Q, alpha)
    ref = Ridge(alpha=alpha, fit_intercept=True).fit(F, Q)
    assert coef.shape == (d, K) and intercept.shape == (K,)
    np.testing.assert_allclose(coef, ref.coef_.T, atol=1e-8, rtol=0)
    np.testing.assert_allclose(intercept, ref.intercept_, atol=1e-8, rtol=0)


@pytest.mark.parametrize("chunk_size", [None, 1, 7])
def test_influence_times_labels_is_the_prediction(chunk_size):
    F, budget, X = _data()
    H = np.vstack(list(_ridge_influence(F, X, 0.7, chunk_size=chunk_size)))
    coef, intercept = _ridge_fit(F, budget.pi, 0.7)
    np.testing.assert_allclose(H @ budget.pi, X @ coef + intercept, atol=1e-12)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)  # Lemma 0
    np.testing.assert_allclose(H, _influence_reference(F, X, 0.7), atol=1e-12)


# ----------------------------------------------------------------------------- gains


def _lp_l1_gain(p, a, b, r):
    K = p.size
    c = np.zeros(2 * K)
    c[b], c[a] = -1.0, 1.0
    A = np.zeros((2 * K + 1, 2 * K))
    ub = np.zeros(2 * K + 1)
    for k in range(K):
        A[2 * k, k], A[2 * k, K + k], ub[2 * k] = 1, -1, p[k]
        A[2 * k + 1, k], A[2 * k + 1, K + k], ub[2 * k + 1] = -1, -1, -p[k]
    A[-1, K:], ub[-1] = 1, r
    eq = np.zeros((1, 2 * K))
    eq[0, :K] = 1
    res = linprog(c, A_ub=A, b_ub=ub, A_eq=eq, b_eq=[1], bounds=[(0, None)] * (2 * K), method="highs")
    return -res.fun - (p[b] - p[a])


def test_l1_gain_closed_form_matches_linprog():
    rng = np.random.default_rng(0)
    for _ in range(300):
        K = int(rng.integers(2, 6))
        if rng.random() < 0.7:
            p = rng.dirichlet(np.ones(K) * rng.choice([0.3, 1.0, 5.0]))
        else:
            p = np.eye(K)[rng.integers(K)]
        a, b = rng.choice(K, 2, replace=False)
        r = float(rng.choice([rng.uniform(0, 2), 0.0, 2.0, rng.uniform(0, 0.1)]))
        ours = float(_l1_gain(_t(p[a]), _t(p[b]), _t(r)))
        assert ours == pytest.approx(_lp_l1_gain(p, a, b, r), abs=1e-9)


def test_kl_gain_dual_is_an_upper_bound_and_tight():
    rng = np.random.default_rng(1)
    pa, pb = rng.dirichlet(np.ones(3), size=500)[:, :2].T
    rho = rng.choice([1e-6, 0.01, 0.3, 2.0, 20.0], size=500) * rng.uniform(0.5, 1.0, 500)
    gain, slope, primal = _kl_gain(_t(pa), _t(pb), _t(rho))
    assert torch.all(gain >= primal) and torch.all(slope >= 0)
    assert float((gain - primal).max()) < 1e-8
    # exact value for a Bernoulli-like case: rest = 0, a -> b with pi = (1/2, 1/2), q = (1-x, x)
    x = 0.8
    kl = x * math.log(2 * x) + (1 - x) * math.log(2 * (1 - x))
    g, _, _ = _kl_gain(_t([0.5]), _t([0.5]), _t([kl]))
    assert float(g) == pytest.approx((x - (1 - x)) - 0.0, abs=1e-9)
    # vertex case: rho >= -log pi_b makes q = e_b feasible
    g, s, _ = _kl_gain(_t([0.3]), _t([0.2]), _t([-math.log(0.2)]))
    assert float(g) == pytest.approx(1.0 - (0.2 - 0.3)) and float(s) == 0.0


# ----------------------------------------------------------------------------- tiers


def test_stochastic_threshold_formula():
    F, budget, X = _data(votes=4)
    alpha, delta, K = 1.0, 0.1, 3
    cert = certify_ridge(F, budget, X, alpha=alpha, tier="stochastic", delta=delta)
    H = _influence_reference(F, X, alpha)
    scores = H @ budget.pi
    c = cert.prediction
    rival = scores.copy()
    rival[np.arange(len(X)), c] = -np.inf
    M = scores[np.arange(len(X)), c] - rival.max(axis=1)
    sigma2 = (H**2 / budget.counts.sum(axis=1)).sum(axis=1)
    t = np.sqrt(2 * sigma2 * np.log((K - 1) / delta))  # (C12)
    np.testing.assert_allclose(cert.worst_case_margin, M - t, atol=1e-9)
    np.testing.assert_allclose(cert.margin, M, atol=1e-12)
    expected_dmin = np.where(M > 0, np.minimum((K - 1) * np.exp(-M**2 / (2 * sigma2)), 1.0), 1.0)
    np.testing.assert_allclose(cert.delta_min, expected_dmin, rtol=1e-6, atol=1e-12)
    assert cert.engine == "ridge-hoeffding-votes" and cert.delta == delta
    assert np.array_equal(cert.certified, cert.worst_case_margin > 0)
    # certified at delta iff delta > delta_min (away from the boundary)
    for j in np.flatnonzero((cert.delta_min > 1e-6) & (cert.delta_min < 0.9))[:5]:
        above = certify_ridge(F, budget, X[j:j + 1], alpha=alpha, tier="stochastic", delta=cert.delta_min[j] * 1.01)
        below = certify_ridge(F, budget, X[j:j + 1], alpha=alpha, tier="stochastic", delta=cert.delta_min[j] * 0.99)
        assert above.certified[0] and not below.certified[0]


def test_stochastic_smoothed_and_plurality_nominals():
    F, budget, X = _data(votes=5)
    K = 3
    smoothed = replace(budget, pi=0.9 * budget.pi + 0.1 / K)
    plain = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic")
    smooth = certify_ridge(F, smoothed, X, alpha=1.0, tier="stochastic")
    assert smooth.engine == "ridge-hoeffding-votes"
    np.testing.assert_array_equal(plain.prediction, smooth.prediction)  # sum_i h_i = 1
    # margins scale by 0.9 and so does sigma: same certificates
    np.testing.assert_allclose(smooth.worst_case_margin, 0.9 * plain.worst_case_margin, atol=1e-9)
    plural = replace(budget, pi=np.eye(K)[np.argmax(budget.counts, axis=1)])
    assert certify_ridge(F, plural, X, alpha=1.0, tier="stochastic").engine == "ridge-hoeffding-plurality"
    wrong = np.eye(K)[(np.argmax(budget.counts, 1) + 1) % K]  # not a function of the votes we know
    other = replace(budget, pi=0.5 / K + 0.5 * wrong)
    with pytest.raises(CertificationError, match="vote mean"):
        certify_ridge(F, other, X, alpha=1.0, tier="stochastic")


def test_radius_scale_brackets_the_certified_scales():
    F, budget, X = _data(n=60, n_test=60)
    rtol = 1e-2
    cert = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", geometry="l1", radius_rtol=rtol)
    rs = cert.radius_scale
    assert np.all(rs >= 0)
    np.testing.assert_array_equal(cert.certified, rs >= 1.0)
    finite = np.isfinite(rs) & (rs > 0)
    assert finite.sum() > 10
    for s_factor, expect in ((1.0, True), (1.0 + 3 * rtol, False)):
        for j in np.flatnonzero(finite)[:15]:
            scaled = budget.scaled(rs[j] * s_factor)
            got = certify_ridge(F, scaled, X[j:j + 1], alpha=1.0, tier="bounded", radius=False).certified[0]
            # the reported radius is certified (rounded down) and within rtol of the exact one
            if expect or rs[j] * s_factor * budget.r.max() < 2.0:
                assert got == expect, (j, rs[j], s_factor)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), s=st.floats(0.05, 4.0))
def test_bounded_certificates_shrink_as_budgets_grow(seed, s):
    F, budget, X = _data(seed=seed, n=30, n_test=30)
    small = certify_ridge(F, budget.scaled(s), X, alpha=1.0, tier="bounded", radius=False)
    large = certify_ridge(F, budget.scaled(2 * s), X, alpha=1.0, tier="bounded", radius=False)
    assert np.all(small.certified | ~large.certified)
    assert np.all(large.worst_case_margin <= small.worst_case_margin + 1e-12)


@pytest.mark.parametrize("geometry", ["kl", "kl_l1"])
def test_radius_scale_kl_geometries(geometry):
    F, budget, X = _data(n=30, n_test=20)
    budget = replace(budget, pi=0.8 * budget.pi + 0.2 / 3)
    cert = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", geometry=geometry)
    assert cert.engine == {"kl": "ridge-kl-exact", "kl_l1": "ridge-kl_l1-bound"}[geometry]
    np.testing.assert_array_equal(cert.certified, cert.radius_scale >= 1.0)
    for j in np.flatnonzero(np.isfinite(cert.radius_scale) & (cert.radius_scale > 0))[:5]:
        scaled = budget.scaled(cert.radius_scale[j])
        assert certify_ridge(F, scaled, X[j:j + 1], alpha=1.0, tier="bounded", geometry=geometry,
                             radius=False).certified[0]


def test_zero_budget_radius_is_infinite_and_matches_nominal():
    F, budget, X = _data()
    zero = replace(budget, r=np.zeros_like(budget.r))
    cert = certify_ridge(F, zero, X, alpha=1.0, tier="bounded")
    assert np.all(cert.certified == (cert.margin > 1e-9)) or np.all(cert.certified)
    assert np.all(np.isinf(cert.radius_scale[cert.certified]))
    np.testing.assert_allclose(cert.worst_case_margin, cert.margin, atol=1e-12)


def test_max_flips_consistent_with_certifying_at_m():
    F, budget, X = _data(n=60, n_test=50)
    base = certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=0)
    assert base.engine == "ridge-flip-exact" and base.m == 0
    mf = base.max_flips
    assert mf.min() >= -1 and mf.max() <= len(F) - 1 and mf.max() > 0
    for m in sorted({0, 1, 2, int(np.median(mf)), int(mf.max()), int(mf.max()) + 1, 10_000}):
        cert = certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=m)
        np.testing.assert_array_equal(cert.max_flips, mf)
        np.testing.assert_array_equal(cert.certified, mf >= m)
        assert np.all(cert.certified == (cert.worst_case_margin > 0))


def test_flip_max_flips_beyond_the_first_topk_block():
    """Points with hundreds of tolerated flips exercise the growing top-k search."""
    rng = np.random.default_rng(5)
    n, d = 3000, 2
    F = rng.normal(size=(n, d))
    pi = np.eye(2)[(F[:, 0] > 0).astype(int)]
    X = np.array([[3.0, 0.0], [-3.0, 0.0], [0.5, 0.0]])
    cert = certify_ridge(F, _Budget(pi=pi), X, alpha=1.0, tier="flip", m=1)
    H = _influence_reference(F, X, 1.0)
    for t in range(len(X)):  # brute recomputation of (C9)-(C11) with a full sort
        c = int(cert.prediction[t])
        b = 1 - c
        d_ = np.sort(H[t] * (pi[:, c] - pi[:, b]) + np.abs(H[t]))[::-1]
        margin = H[t] @ (pi[:, c] - pi[:, b])
        expected = int(np.sum(margin - np.cumsum(d_) > 0))
        assert cert.max_flips[t] == expected
    assert cert.max_flips.max() > 64


def test_classes_and_prediction_match_the_served_predictor():
    F, budget, X = _data()
    classes = np.array(["cat", "dog", "eel"])
    cert = certify_ridge(F, replace(budget, classes_=classes), X, alpha=2.0, tier="flip", m=1, scope="head")
    coef, intercept = _ridge_fit(F, budget.pi, 2.0)
    np.testing.assert_array_equal(cert.prediction, classes[np.argmax(X @ coef + intercept, axis=1)])
    assert cert.scope == "head"
    assert set(cert.to_frame().columns) == {"prediction", "certified", "margin", "worst_case_margin", "max_flips"}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, match", [
    (dict(tier="robust"), "unknown tier"),
    (dict(tier="bounded", geometry="l2"), "unknown geometry"),
    (dict(scope="everything"), "unknown scope"),
    (dict(tier="flip"), "needs m"),
    (dict(tier="flip", m=-1), "integer >= 0"),
    (dict(tier="flip", m=1.5), "integer >= 0"),
    (dict(tier="bounded", m=2), "only used by tier='flip'"),
    (dict(delta=0.0), r"delta must lie in \(0, 1\)"),
    (dict(delta=1.5), r"delta must lie in \(0, 1\)"),
    (dict(alpha=0.0), "alpha must be"),
    (dict(radius_rtol=0.0), "radius_rtol"),
    (dict(chunk_size=0), "chunk_size"),
])
def test_parameter_errors(kwargs, match):
    F, budget, X = _data()
    kwargs = {"alpha": 1.0, **kwargs}
    with pytest.raises(CertificationError, match=match):
        certify_ridge(F, budget, X, **kwargs)


def test_input_errors():
    F, budget, X = _data()
    with pytest.raises(ValueError, match="NaN"):
        certify_ridge(np.where(F > 2, np.nan, F), budget, X, alpha=1.0)
    with pytest.raises(CertificationError, match="columns, expected 4"):
        certify_ridge(F, budget, X[:, :3], alpha=1.0)
    with pytest.raises(CertificationError, match="rows but F_train has"):
        certify_ridge(F[:-1], budget, X, alpha=1.0)
    with pytest.raises(CertificationError, match="simplex"):
        certify_ridge(F, replace(budget, pi=budget.pi * 1.1), X, alpha=1.0)
    with pytest.raises(CertificationError, match=r"r \(l1 radius\)"):
        certify_ridge(F, replace(budget, r=budget.r + 3), X, alpha=1.0, tier="bounded")
    with pytest.raises(CertificationError, match="rho"):
        certify_ridge(F, replace(budget, rho=-budget.rho - 1), X, alpha=1.0, tier="bounded", geometry="kl")
    with pytest.raises(CertificationError, match="budget.r is needed"):
        certify_ridge(F, replace(budget, r=None), X, alpha=1.0, tier="bounded")
    with pytest.raises(CertificationError, match="needs budget.counts"):
        certify_ridge(F, replace(budget, counts=None), X, alpha=1.0, tier="stochastic")
    with pytest.raises(CertificationError, match="integer vote counts"):
        certify_ridge(F, replace(budget, counts=budget.counts + 0.5), X, alpha=1.0, tier="stochastic")
    with pytest.raises(CertificationError, match="at least one vote"):
        certify_ridge(F, replace(budget, counts=budget.counts * 0), X, alpha=1.0, tier="stochastic")
    with pytest.raises(CertificationError, match="at least 2 classes"):
        certify_ridge(F, _Budget(pi=np.ones((len(F), 1))), X, alpha=1.0, tier="flip", m=1)
    with pytest.raises(CertificationError, match="classes must have shape"):
        certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=1, classes=[0, 1])
    with pytest.raises(CertificationError, match="`pi` attribute"):
        certify_ridge(F, object(), X, alpha=1.0)


# ----------------------------------------------------------------------------- Certificate


def _cert(**overrides):
    fields = dict(tier="flip", scope="model", engine="ridge-flip-exact", prediction=np.array([0, 1, 2, 1]),
                  certified=np.array([True, True, False, False]), margin=np.ones(4),
                  worst_case_margin=np.array([0.5, 0.2, -0.1, -0.3]), max_flips=np.array([2, 1, 0, -1]), m=1,
                  classes=np.array([0, 1, 2]))
    fields.update(overrides)
    return Certificate(**fields)


def test_certificate_fields_and_metrics():
    cert = _cert()
    assert len(cert) == 4 and cert.coverage == 0.5
    assert cert.certified_accuracy([0, 2, 2, 1]) == 0.25
    votes = np.array([[3, 0, 0], [0, 2, 2], [1, 1, 1], [0, 5, 0]])  # plurality 0, 1 (tie -> lowest), 0, 1
    assert cert.certified_accuracy(votes) == 0.5
    frame = cert.to_frame()
    assert list(frame.columns) == ["prediction", "certified", "margin", "worst_case_margin", "max_flips"]
    assert frame.shape == (4, 5)
    with pytest.raises(AttributeError):
        cert.tier = "bounded"
    with pytest.raises(ValueError, match="read-only"):
        cert.certified[0] = False
    assert _cert(prediction=np.array([], dtype=int), certified=np.array([], dtype=bool), margin=[],
                 worst_case_margin=[], max_flips=np.array([], dtype=int)).coverage == 0.0


@pytest.mark.parametrize("overrides, match", [
    (dict(tier="magic"), "tier must be"),
    (dict(scope="world"), "scope must be"),
    (dict(engine=""), "engine"),
    (dict(certified=np.array([1, 0, 1, 0])), "boolean"),
    (dict(margin=np.ones(3)), r"margin must have shape \(4,\)"),
    (dict(max_flips=np.array([1.5, 0, 0, 0])), "integers"),
    (dict(delta=1.0), r"delta must be in \(0, 1\)"),
    (dict(m=-2), "non-negative integer"),
    (dict(prediction=np.zeros((2, 2))), "1-D"),
])
def test_certificate_validation(overrides, match):
    with pytest.raises(CertificationError, match=match):
        _cert(**overrides)


def test_certified_accuracy_shape_errors():
    cert = _cert()
    with pytest.raises(CertificationError, match="rows"):
        cert.certified_accuracy(np.zeros((3, 3)))
    with pytest.raises(CertificationError, match="columns"):
        cert.certified_accuracy(np.zeros((4, 2)))
    with pytest.raises(CertificationError, match="shape"):
        cert.certified_accuracy([0, 1])
