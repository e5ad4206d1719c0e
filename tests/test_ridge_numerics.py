"""Floating-point soundness of the ridge certificates (docs/certificates.md, section 5).

* exact power-of-two rescaling ``(F, X, alpha) -> (t F, t X, t^2 alpha)`` leaves the exact
  learner unchanged, so it must leave predictions and certificates unchanged, including
  where the unscaled arithmetic would run in subnormal numbers (issue A);
* edge cases (one training row, huge ``m``, duplicate classes, tiny scales) (issue B);
* a point's certificate does not depend on the other points certified with it, nor on
  the rounding of the batched products, within their proven error bounds (issue C);
* the allowance is component-wise: mixed feature scales and collinear features still
  certify the exactly certifiable points (issue D).

Certificates are compared with exact (mpmath, 50 digits) ridge scores, never with one
machine's float rounding.
"""

from dataclasses import dataclass

import mpmath as mp
import numpy as np
import pytest
import torch

from sklearn_cnat.certificates import certify_ridge
from sklearn_cnat.certificates import _ridge
from sklearn_cnat.exceptions import CertificationError

mp.mp.dps = 50


@dataclass
class _Budget:
    pi: np.ndarray
    r: np.ndarray = None
    rho: np.ndarray = None
    counts: np.ndarray = None

    def take(self, rows):
        return _Budget(self.pi[rows], self.r[rows], self.rho[rows], self.counts[rows])


# ----------------------------------------------------------------------------- exact reference


class _Exact:
    """Exact ridge influence ``h(x)`` (C1) at 50 digits from the float64 data."""

    def __init__(self, F, alpha):
        n, d = F.shape
        self.n, self.d = n, d
        Fm = mp.matrix(F.tolist())
        self.fbar = [mp.fsum(Fm[i, j] for i in range(n)) / n for j in range(d)]
        self.Fc = mp.matrix(n, d)
        for i in range(n):
            for j in range(d):
                self.Fc[i, j] = Fm[i, j] - self.fbar[j]
        A = self.Fc.T * self.Fc + mp.mpf(float(alpha)) * mp.eye(d) if d else None
        self.Ainv = A ** -1 if d else None

    def h(self, x):
        n, d = self.n, self.d
        if not d:
            return [mp.mpf(1) / n] * n
        u = self.Ainv * mp.matrix([mp.mpf(float(x[j])) - self.fbar[j] for j in range(d)])
        return [mp.fsum(u[j] * self.Fc[i, j] for j in range(d)) + mp.mpf(1) / n for i in range(n)]

    def scores(self, x, Q):
        h = self.h(x)
        return [mp.fsum(h[i] * mp.mpf(float(Q[i, k])) for i in range(self.n)) for k in range(Q.shape[1])]

    def l1_worst(self, x, pi, r, c):
        """Exact (C5) with the l1 gains (C6) for predicted class ``c``."""
        h = self.h(x)
        K = pi.shape[1]
        worst = mp.inf
        for b in range(K):
            if b == c:
                continue
            w = mp.mpf(0)
            for i in range(self.n):
                a_, b_ = (c, b) if h[i] >= 0 else (b, c)
                pa, pb = mp.mpf(float(pi[i, a_])), mp.mpf(float(pi[i, b_]))
                ri = mp.mpf(float(r[i]))
                g = min(ri, 2 * pa) + min(max(ri / 2 - pa, 0), 1 - pa - pb)
                w += h[i] * (mp.mpf(float(pi[i, c])) - mp.mpf(float(pi[i, b]))) - abs(h[i]) * g
            worst = min(worst, w)
        return worst


def _exact_argmax(exact, X, Q):
    out = []
    for x in X:
        s = exact.scores(x, Q)
        best = max(range(len(s)), key=lambda k: (s[k], -k))
        out.append(best)
    return np.array(out)


def _problem(seed=0, n=40, d=4, K=3, n_test=30, votes=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d)) * 1.2
    y = rng.integers(K, size=n)
    F = centers[y] + rng.normal(size=(n, d))
    counts = np.stack([rng.multinomial(votes, np.full(K, 0.1 / K) + 0.9 * np.eye(K)[k]) for k in y]).astype(float)
    pi = counts / votes
    X = centers[rng.integers(K, size=n_test)] + 1.2 * rng.normal(size=(n_test, d))
    return F, _Budget(pi=pi, r=rng.uniform(0, 0.15, n), rho=rng.uniform(0, 0.02, n), counts=counts), X


# ----------------------------------------------------------------------------- A: exact rescaling

_K_SWEEP = [-530, -521, -512, -400, -300, -160, -60, -1, 0, 1, 60, 160, 300, 400, 480, 500]


def _scaled(F, X, alpha, k):
    t = 2.0 ** k if abs(k) < 1000 else None
    Fs, Xs, alphas = np.ldexp(F, k), np.ldexp(X, k), float(np.ldexp(alpha, 2 * k))
    assert t is not None
    # exactly the same problem: every scaled number scales back to the original
    assert np.array_equal(np.ldexp(Fs, -k), F) and np.array_equal(np.ldexp(Xs, -k), X)
    assert np.ldexp(alphas, -2 * k) == alpha and alphas > 0
    return Fs, Xs, alphas


@pytest.fixture(scope="module")
def sweep_problem():
    F, budget, X = _problem(seed=3, n=36, d=4, K=3, n_test=24)
    alpha = 0.5  # a power of two: alpha * 2^(2k) is exact even where it is subnormal
    exact = _Exact(F, alpha)
    truth = _exact_argmax(exact, X, budget.pi)
    return F, budget, X, alpha, exact, truth


@pytest.mark.parametrize("tier", ["bounded", "flip", "stochastic"])
def test_power_of_two_rescaling_changes_nothing(sweep_problem, tier):
    F, budget, X, alpha, exact, truth = sweep_problem
    kwargs = {"bounded": dict(tier="bounded", radius=False), "flip": dict(tier="flip", m=1),
              "stochastic": dict(tier="stochastic", delta=0.2)}[tier]
    base = certify_ridge(F, budget, X, alpha=alpha, **kwargs)
    assert base.certified.sum() >= 3  # not trivial
    assert np.array_equal(base.prediction[base.certified], truth[base.certified])
    for k in _K_SWEEP:
        Fs, Xs, alphas = _scaled(F, X, alpha, k)
        cert = certify_ridge(Fs, budget, Xs, alpha=alphas, **kwargs)
        assert np.all(np.isfinite(cert.worst_case_margin)), k
        # every certified prediction is the exact learner's prediction
        assert np.array_equal(cert.prediction[cert.certified], truth[cert.certified]), k
        # the scaled problem is the same problem: same predictions, same certified set
        np.testing.assert_array_equal(cert.prediction, base.prediction, err_msg=f"k={k}")
        np.testing.assert_array_equal(cert.certified, base.certified, err_msg=f"k={k}")
        np.testing.assert_allclose(cert.worst_case_margin, base.worst_case_margin, rtol=1e-9, atol=1e-12)
        if tier == "flip":
            np.testing.assert_array_equal(cert.max_flips, base.max_flips)


def test_subnormal_gram_does_not_certify_a_wrong_class():
    """The review's counterexample (repro underflow_wrong_certificate.py), step by step.

    Labels aligned with the difference between the influence computed on the 2^-521-scaled
    data and on the original data, and a point whose exact margin is -0.4 tau: the old
    engine (Gram matrix in subnormals) certified the wrong class there. Now the scaled
    computation is the unscaled one scaled (Lemma 5.1): there is no difference to exploit,
    and no wrong class may be certified.
    """
    rng = np.random.default_rng(24)
    n = int(rng.integers(10, 200))
    d = int(rng.integers(2, 12))
    F = rng.normal(size=(n, d)) * rng.uniform(0.3, 3)
    X = F[rng.integers(n, size=20)] + rng.normal(size=(20, d))
    alpha, k = 2.0 ** int(rng.integers(-6, 6)), -521
    Fs, Xs, alphas = _scaled(F, X, alpha, k)
    s0 = _ridge._RidgeSystem(F, alpha, torch.device("cpu"))
    ss = _ridge._RidgeSystem(Fs, alphas, torch.device("cpu"))
    U0 = s0.test_side(torch.as_tensor(X), 2)[0]
    U, tau, _, _ = ss.test_side(torch.as_tensor(Xs), 2)
    err = (ss.influence(U) - s0.influence(U0)).numpy()
    tau = tau.numpy()
    exact = _Exact(F, alpha)
    H = np.vstack(list(_ridge._ridge_influence(Fs, Xs, alphas)))
    for t, x in enumerate(X):  # the scaled influence is accurate
        assert np.abs(np.array([float(v) for v in exact.h(x)]) - H[t]).sum() < 1e-12
    if not np.abs(err).any():
        return  # bit for bit the unscaled computation: nothing to align labels with
    t = int(np.nanargmax(np.where(np.isfinite(tau), np.abs(err).sum(1) / tau, -1)))
    pi = np.eye(2)[np.where(err[t] > 0, 0, 1)]
    x = X[t].copy()
    for _ in range(3):
        s = exact.scores(x, pi)
        m0 = float(s[0] - s[1])
        s2 = exact.scores(x + 1e-6 * np.eye(d)[0], pi)
        x[0] += (-0.4 * tau[t] - m0) / ((float(s2[0] - s2[1]) - m0) / 1e-6)
    s = exact.scores(x, pi)
    exact_pred = 0 if s[0] > s[1] else 1
    xs = np.ldexp(x, k)
    assert np.array_equal(np.ldexp(xs, -k), x)
    cert = certify_ridge(Fs, _Budget(pi=pi, r=np.zeros(n)), xs[None, :], alpha=alphas, tier="bounded",
                         radius=False)
    assert not cert.certified[0] or cert.prediction[0] == exact_pred


@pytest.mark.parametrize("tier", ["bounded", "flip", "stochastic"])
def test_tiny_features_and_alpha_give_no_nan(tier):
    F, budget, X = _problem(seed=5)
    Fs, Xs, alpha = F * 1e-160, X * 1e-160, 1e-320  # inexact scaling: a different (tiny) problem
    kwargs = {"bounded": dict(tier="bounded"), "flip": dict(tier="flip", m=1), "stochastic": dict(tier="stochastic")}
    cert = certify_ridge(Fs, budget, Xs, alpha=alpha, **kwargs[tier])
    assert np.all(np.isfinite(cert.worst_case_margin))
    assert cert.certified.sum() > 0
    truth = _exact_argmax(_Exact(Fs, alpha), Xs, budget.pi)
    assert np.array_equal(cert.prediction[cert.certified], truth[cert.certified])


def test_unresolvable_scales_raise():
    F, budget, X = _problem(seed=1)
    F2 = F.copy()
    F2[:, 0] = np.where(np.arange(len(F)) % 2, 1e300, 1e-300)  # one column spans 2^2000
    with pytest.raises(CertificationError, match="exponent range"):
        certify_ridge(F2, budget, X, alpha=1.0, tier="bounded")
    with pytest.raises(CertificationError, match="overflow"):
        certify_ridge(F * 1e-300, budget, X * 1e300, alpha=1e-300, tier="bounded")


def test_alpha_negligible_against_collinear_features_raises_or_is_sound():
    rng = np.random.default_rng(2)
    F = rng.normal(size=(30, 2))
    F = np.hstack([F, F[:, :1]])  # an exactly duplicated column: Fc^T Fc singular
    pi = np.eye(2)[rng.integers(2, size=30)]
    X = rng.normal(size=(10, 3))
    try:
        cert = certify_ridge(F, _Budget(pi=pi, r=np.zeros(30)), X, alpha=1e-300, tier="bounded")
    except CertificationError as exc:
        assert "singular" in str(exc)
    else:
        assert np.all(~np.isnan(cert.worst_case_margin))
        truth = _exact_argmax(_Exact(F, 1e-300), X, pi)
        assert np.array_equal(cert.prediction[cert.certified], truth[cert.certified])


# ----------------------------------------------------------------------------- B: edge cases


def test_flip_with_one_training_row():
    F, budget, X = _problem(seed=0)
    one = _Budget(pi=np.eye(3)[[1]])
    for m in (0, 1, 5):
        cert = certify_ridge(F[:1], one, X, alpha=1.0, tier="flip", m=m)
        # h = 1 for the only row: margin pi_c - pi_b = 1, and changing it flips (Theorem 3)
        assert np.all(cert.prediction == 1)
        np.testing.assert_array_equal(cert.max_flips, 0)
        np.testing.assert_array_equal(cert.certified, m == 0)


def test_flip_m_beyond_n_is_never_certified():
    F, budget, X = _problem(seed=0)
    ref = certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=1)
    for m in (len(F) - 1, len(F), len(F) + 1, 10**18):
        cert = certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=m)
        np.testing.assert_array_equal(cert.max_flips, ref.max_flips)
        np.testing.assert_array_equal(cert.certified, ref.max_flips >= m)
        assert cert.m == m
    assert not certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=10**18).certified.any()
    # all n rows changed: the worst case margin is M - sum_i d_i < 0 (C10)
    assert np.all(certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=len(F)).worst_case_margin < 0)


def test_duplicate_classes_are_refused():
    F, budget, X = _problem(seed=0)
    with pytest.raises(CertificationError, match="distinct"):
        certify_ridge(F, budget, X, alpha=1.0, tier="bounded", classes=[0, 0, 1])


def test_all_constant_features():
    F, budget, X = _problem(seed=0)
    F = np.ones_like(F) * 3.0
    for tier, kw in (("bounded", {}), ("flip", dict(m=0)), ("stochastic", {})):
        cert = certify_ridge(F, budget, X, alpha=1.0, tier=tier, **kw)
        assert np.all(np.isfinite(cert.worst_case_margin))
        # h = 1/n: every point predicts the class of the mean label
        assert len(set(cert.prediction.tolist())) == 1


# ----------------------------------------------------------------------------- C: per point


def _boundary_points(F, budget, alpha, kwargs, rng, count=6):
    """Pairs of points, a few ulps apart, between which a single-point certificate flips."""
    n, d = F.shape
    out = []
    tries = 0
    while len(out) < 2 * count and tries < 100:
        tries += 1
        a, b = F[rng.integers(n)] + rng.normal(size=d), F[rng.integers(n)] + rng.normal(size=d)
        first = certify_ridge(F, budget, a[None, :], alpha=alpha, **kwargs)
        if not first.certified[0]:
            continue
        c = first.prediction[0]

        def flag(t):
            cert = certify_ridge(F, budget, (a + t * (b - a))[None, :], alpha=alpha, **kwargs)
            return bool(cert.certified[0]) and cert.prediction[0] == c

        if flag(1.0):
            continue
        lo, hi = 0.0, 1.0
        for _ in range(70):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if flag(mid):
                lo = mid
            else:
                hi = mid
        out.extend([a + lo * (b - a), a + hi * (b - a)])
    return np.array(out)


def _perturbed_influence(seed):
    """Fast-path influence rows perturbed within their proven rounding bound (another BLAS)."""
    rng = np.random.default_rng(seed)
    orig = _ridge._RidgeSystem.influence

    def influence(system, U):
        H = orig(system, U)
        noise = torch.as_tensor(rng.uniform(-1, 1, size=tuple(H.shape)), dtype=H.dtype, device=H.device)
        return H * (1 + 2.0**-51 * noise)  # |relative change| <= 4.4e-16 < gamma_{d+1}

    return influence


@pytest.mark.parametrize("tier", ["bounded", "flip"])
def test_certified_is_a_function_of_the_point_alone(tier, monkeypatch):
    F, budget, X = _problem(seed=11, n=50, d=8, K=3, n_test=40)
    budget.r = np.zeros(len(F)) if tier == "bounded" else None  # r = 0: W is the nominal margin
    kwargs = dict(tier="bounded", radius=False) if tier == "bounded" else dict(tier="flip", m=0)
    rng = np.random.default_rng(0)
    edge = _boundary_points(F, budget, 1.0, kwargs, rng)
    assert len(edge) >= 4
    P = np.vstack([edge, X])
    alone = [certify_ridge(F, budget, p[None, :], alpha=1.0, **kwargs) for p in P]
    flags = np.array([c.certified[0] for c in alone])
    assert flags[:len(edge)].any() and not flags[:len(edge)].all()
    variants = [dict(), dict(chunk_size=1), dict(chunk_size=3), dict(chunk_size=17)]
    for seed, extra in enumerate(variants):
        order = np.random.default_rng(seed).permutation(len(P))
        with monkeypatch.context() as mpatch:
            if seed:  # batched products rounded differently, within their error bound
                mpatch.setattr(_ridge._RidgeSystem, "influence", _perturbed_influence(seed))
            cert = certify_ridge(F, budget, P[order], alpha=1.0, **kwargs, **extra)
        np.testing.assert_array_equal(cert.certified, flags[order], err_msg=str(extra))
        if tier == "flip":
            np.testing.assert_array_equal(cert.max_flips, np.array([c.max_flips[0] for c in alone])[order])


def test_radius_and_stochastic_do_not_depend_on_the_batch(monkeypatch):
    F, budget, X = _problem(seed=4, n=60, d=5, K=3, n_test=50)
    rtol = 0.1
    alone_b = [certify_ridge(F, budget, x[None, :], alpha=1.0, tier="bounded", radius_rtol=rtol) for x in X]
    alone_s = [certify_ridge(F, budget, x[None, :], alpha=1.0, tier="stochastic") for x in X]
    with monkeypatch.context() as mpatch:
        mpatch.setattr(_ridge._RidgeSystem, "influence", _perturbed_influence(3))
        batch_b = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", radius_rtol=rtol, chunk_size=7)
    batch_s = certify_ridge(F, budget, X, alpha=1.0, tier="stochastic", chunk_size=7)
    np.testing.assert_array_equal(batch_b.certified, [c.certified[0] for c in alone_b])
    np.testing.assert_array_equal(batch_s.certified, [c.certified[0] for c in alone_s])
    np.testing.assert_allclose(batch_s.delta_min, [c.delta_min[0] for c in alone_s], rtol=1e-9)
    r_alone = np.array([c.radius_scale[0] for c in alone_b])
    r_batch = batch_b.radius_scale
    finite = np.isfinite(r_alone)
    np.testing.assert_array_equal(finite, np.isfinite(r_batch))
    np.testing.assert_array_equal(r_alone[finite] > 0, r_batch[finite] > 0)
    # the documented tolerance: both are within a factor 1 + rtol of the exact radius
    pos = finite & (r_alone > 0)
    assert np.all(r_batch[pos] <= r_alone[pos] * (1 + rtol)) and np.all(r_alone[pos] <= r_batch[pos] * (1 + rtol))


# ----------------------------------------------------------------------------- D: tightness


def _exact_l1_certifiable(F, alpha, X, pi, r, pred):
    exact = _Exact(F, alpha)
    return np.array([exact.l1_worst(x, pi, r, int(c)) > 0 for x, c in zip(X, pred)])


def test_mixed_feature_scales_certify_what_is_certifiable():
    rng = np.random.default_rng(3)
    n, d, K = 120, 6, 3
    C = rng.normal(size=(K, d)) * 1.5
    y = rng.integers(K, size=n)
    scales = 10.0 ** np.array([-4, -2, 0, 0, 2, 4])
    F = (C[y] + rng.normal(size=(n, d))) * scales
    X = (C[rng.integers(K, size=40)] + rng.normal(size=(40, d))) * scales
    pi = np.eye(K)[y]
    r = np.full(n, 0.05)
    cert = certify_ridge(F, _Budget(pi=pi, r=r), X, alpha=1.0, tier="bounded", radius=False)
    ok = _exact_l1_certifiable(F, 1.0, X, pi, r, cert.prediction)
    assert ok.sum() >= 20
    assert not np.any(cert.certified & ~ok)  # sound
    assert cert.certified.sum() >= 0.9 * ok.sum()  # and nearly exact


@pytest.mark.parametrize("seed, n, dup, noise, offset, alpha", [(0, 300, 8, 0.0, 5.0, 1e-6),
                                                            (3, 200, 5, 1e-8, 0.0, 1e-4)])
def test_collinear_features_certify_what_is_certifiable(seed, n, dup, noise, offset, alpha):
    """Duplicated (or nearly) feature columns of scale 30 with a small alpha: the old
    norm-wise allowance certified 0 of 31 (resp. 17 of 30) exactly certifiable points."""
    rng = np.random.default_rng(seed)
    K = 3
    base = rng.normal(size=(n + 31, 3))
    W = rng.normal(size=(3, dup))
    full = 30.0 * (np.hstack([base, base @ W + noise * rng.normal(size=(n + 31, dup))]) + offset)
    y = np.argmax(base[:n] @ rng.normal(size=(3, K)), axis=1)
    F, X, pi = full[:n], full[n:], np.eye(K)[y]
    r = np.full(n, 0.02)
    cert = certify_ridge(F, _Budget(pi=pi, r=r), X, alpha=alpha, tier="bounded", radius=False)
    ok = _exact_l1_certifiable(F, alpha, X, pi, r, cert.prediction)
    assert ok.sum() >= 20
    assert not np.any(cert.certified & ~ok)  # sound
    assert cert.certified.sum() >= 0.9 * ok.sum(), (cert.certified.sum(), ok.sum())
