"""Tests of the softmax sensitivity engine (docs/certificates_softmax.md).

The fitted head is checked against independent solvers; the parameter radii of
Theorems 1-2 and the certificates are attacked by retraining on adversarial labels.
Run ``python tests/test_certificates_softmax.py`` for the looseness table of
docs/certificates_softmax.md, section 7.
"""

import warnings

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from sklearn_cnat.budgets import NoiseBudget
from sklearn_cnat.certificates import Certificate
from sklearn_cnat.certificates._softmax import (
    _Bounds,
    _augment,
    _feasible_maximisers,
    _kl_rows,
    _kl_upper,
    _l1_upper,
    _singleton,
    _test_side,
    certify_softmax_head,
    fit_robust_softmax_head,
)
from sklearn_cnat.exceptions import CertificationError
from sklearn_cnat.sets import worst_case_expectation

MEANS = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]])


# --------------------------------------------------------------------------- helpers


def _budget(pi, r, rho, y):
    n, k = pi.shape
    return NoiseBudget(pi=pi, r=np.broadcast_to(r, (n,)), rho=np.broadcast_to(rho, (n,)), classes_=np.arange(k),
                       counts=np.eye(k)[y], p_error=np.zeros(n))


def make_problem(seed, *, n=60, geometry="l1", smooth=0.0, r=0.05, rho=0.0, alpha_over_n=1.0, n_test=250,
                 spread=1.8):
    """Three Gaussian blobs in 2-D, a fitted head and test points around them."""
    rng = np.random.default_rng(seed)
    k = 3
    y = rng.integers(0, k, n)
    F = MEANS[y] + rng.normal(size=(n, 2))
    pi = (1.0 - smooth) * np.eye(k)[y] + smooth / k
    budget = _budget(pi, r, rho, y)
    alpha = alpha_over_n * n
    coef, intercept, gn = fit_robust_softmax_head(F, budget, alpha=alpha, geometry=geometry, tol=1e-10)
    F_test = rng.normal(size=(n_test, 2)) * spread
    return dict(F=F, budget=budget, F_test=F_test, alpha=alpha, coef=coef, intercept=intercept, grad_norm=gn,
                geometry=geometry, W=np.vstack([coef, intercept]), X=_augment(F), lam=alpha / n)


def certify(p, tier="bounded", m=None, budget=None, **kw):
    return certify_softmax_head(p["F"], p["budget"] if budget is None else budget, p["F_test"], coef=p["coef"],
                                intercept=p["intercept"], grad_norm=p["grad_norm"], alpha=p["alpha"],
                                geometry=p["geometry"], tier=tier, m=m, **kw)


def bounds(p, budget=None):
    b = p["budget"] if budget is None else budget
    pi = b.pi / b.pi.sum(axis=1, keepdims=True)
    return _Bounds(p["X"], pi, np.minimum(b.r, 2.0), b.rho, p["geometry"], p["W"], p["grad_norm"], p["lam"])


def _radii(geometry, r, rho):
    return (r if geometry != "kl" else None), (rho if geometry != "l1" else None)


def _l1_worst(v, pi, r):
    """Independent closed form of the l1 worst case (mass r/2 to the largest v, greedy removal)."""
    n, _ = v.shape
    rows = np.arange(n)
    top = np.argmax(v, axis=1)
    m = np.minimum(r / 2.0, 1.0 - pi[rows, top])
    key = v.copy()
    key[rows, top] = np.inf
    order = np.argsort(key, axis=1, kind="stable")
    ps = np.take_along_axis(pi, order, axis=1)
    taken = np.clip(m[:, None] - (np.cumsum(ps, axis=1) - ps), 0.0, ps)
    q = pi.copy()
    np.put_along_axis(q, order, ps - taken, axis=1)
    q[rows, top] += m
    return q


def ref_objective(w, X, pi, r, rho, lam, geometry):
    """J of (H2) and a subgradient, in numpy, independent of the torch fitter."""
    k = pi.shape[1]
    W = w.reshape(X.shape[1], k)
    z = X @ W
    v = logsumexp(z, axis=1)[:, None] - z
    if geometry == "l1":
        q = _l1_worst(v, pi, r)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            q = worst_case_expectation(v, pi, *_radii(geometry, r, rho))[1]
    J = (q * v).sum(axis=1).mean() + 0.5 * lam * (w @ w)
    return J, (X.T @ (softmax(z, axis=1) - q) / X.shape[0] + lam * W).ravel()


def refit(p, pi, r=None, rho=None, W0=None, method="L-BFGS-B"):
    """Exact learner (tight tolerance) on nominal labels pi with the given radii (default: the budget's)."""
    b = p["budget"]
    r = b.r if r is None else r
    rho = b.rho if rho is None else rho
    k = pi.shape[1]
    w0 = (p["W"] if W0 is None else W0).ravel()
    opts = {"maxiter": 5000, "gtol": 1e-11}
    if method == "L-BFGS-B":
        opts.update(ftol=0.0, maxcor=30)
    res = minimize(ref_objective, w0, args=(p["X"], pi, r, rho, p["lam"], p["geometry"]), jac=True,
                   method=method, options=opts)
    return res.x.reshape(p["X"].shape[1], k)


def hessian(X, W, lam):
    """Hessian of the smooth part of (H2) (labels held fixed), for vec(W) in row-major order."""
    n, d1 = X.shape
    s = softmax(X @ W, axis=1)
    k = W.shape[1]
    H = lam * np.eye(d1 * k)
    for i in range(n):
        A = np.diag(s[i]) - np.outer(s[i], s[i])
        H += np.kron(np.outer(X[i], X[i]), A) / n
    return H


def influence(p, H, x_aug, c, b):
    """g (n, K): first-order change of score_b - score_c at x per unit of label mass q_ik."""
    k = p["W"].shape[1]
    e = np.outer(x_aug, np.eye(k)[b] - np.eye(k)[c]).ravel()
    U = np.linalg.solve(H, e).reshape(-1, k)
    return p["X"] @ U / p["X"].shape[0]


def point_in_set(g, pi, r, rho, geometry):
    """The point of each U_i maximising <pi', g_i> (a vertex/boundary point pushing along g)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return worst_case_expectation(g, pi, *_radii(geometry, r, rho))[1]


def most_threatened(p):
    scores = p["F_test"] @ p["coef"] + p["intercept"]
    pred = np.argmax(scores, axis=1)
    rival = scores.copy()
    rival[np.arange(len(pred)), pred] = -np.inf
    return pred, np.argmax(rival, axis=1), scores


def predict(W, F):
    return np.argmax(F @ W[:-1] + W[-1], axis=1)


# --------------------------------------------------------------------------- fitting


def test_fit_matches_sklearn_logistic_regression_for_zero_budgets():
    # Zero radii: (H2) is multinomial logistic regression on soft labels with the bias penalised,
    # i.e. sklearn's objective (1/sw) sum_i sw_i l_i + ||W||^2 / (2 C sw) with C = 1/alpha,
    # fit_intercept=False on [F, 1], soft labels as K weighted copies of each row (sw = n).
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    n, k = 80, 3
    y = rng.integers(0, k, n)
    F = MEANS[y] + rng.normal(size=(n, 2))
    pi = rng.dirichlet(np.ones(k) * 0.5, size=n) * 0.5 + 0.5 * np.eye(k)[y]
    budget = _budget(pi, 0.0, 0.0, y)
    alpha = 3.0
    coef, intercept, gn = fit_robust_softmax_head(F, budget, alpha=alpha, tol=1e-10)
    X = _augment(F)
    lr = LogisticRegression(C=1.0 / alpha, fit_intercept=False, tol=1e-12, max_iter=10000)
    lr.fit(np.repeat(X, k, axis=0), np.tile(np.arange(k), n), sample_weight=pi.ravel())
    np.testing.assert_allclose(np.vstack([coef, intercept]), lr.coef_.T, atol=1e-6)
    assert gn < 1e-8


@pytest.mark.parametrize("geometry, smooth, r, rho", [("l1", 0.0, 0.2, 0.0), ("kl", 0.1, 0.0, 0.01),
                                                       ("kl_l1", 0.1, 0.1, 0.01)])
def test_fit_matches_independent_solver(geometry, smooth, r, rho):
    p = make_problem(5, n=50, geometry=geometry, smooth=smooth, r=r, rho=rho, alpha_over_n=0.05)
    b = p["budget"]
    # torch/CNATLoss gradient equals the independent numpy subgradient at the same point
    from sklearn_cnat.certificates._softmax import _cnat_objective_torch

    rng = np.random.default_rng(0)
    w = rng.normal(size=p["W"].size)
    J_t, g_t = _cnat_objective_torch(w, p["X"], b.pi, b.r, b.rho, p["lam"], geometry, p["W"].shape)
    J_n, g_n = ref_objective(w, p["X"], b.pi, b.r, b.rho, p["lam"], geometry)
    assert J_t == pytest.approx(J_n, rel=1e-12)
    np.testing.assert_allclose(g_t, g_n, atol=1e-12)
    # a different algorithm from a different start reaches the same minimiser
    method = "L-BFGS-B" if geometry == "l1" else "BFGS"  # BFGS needs the smooth (KL) objectives
    W_ref = refit(p, b.pi, W0=np.full_like(p["W"], 0.3), method=method)
    J_fit = ref_objective(p["W"].ravel(), p["X"], b.pi, b.r, b.rho, p["lam"], geometry)[0]
    J_ref = ref_objective(W_ref.ravel(), p["X"], b.pi, b.r, b.rho, p["lam"], geometry)[0]
    assert J_fit <= J_ref + 1e-9
    np.testing.assert_allclose(p["W"], W_ref, atol=1e-4)
    if geometry != "l1":  # smooth objective: the measured gradient is small
        assert p["grad_norm"] < 1e-7


def test_fit_reports_recomputed_gradient_norm_even_when_large():
    p = make_problem(0, n=40)
    coef, intercept, gn = fit_robust_softmax_head(p["F"], p["budget"], alpha=p["alpha"], max_iter=1)
    W = np.vstack([coef, intercept])
    b = p["budget"]
    _, g = ref_objective(W.ravel(), p["X"], b.pi, b.r, b.rho, p["lam"], "l1")
    assert gn == pytest.approx(np.linalg.norm(g), rel=1e-9)
    assert gn > 1e-3
    # the certificate folds it in: never more certified than with the converged head
    loose = certify_softmax_head(p["F"], b, p["F_test"], coef=coef, intercept=intercept, grad_norm=gn,
                                 alpha=p["alpha"])
    assert loose.coverage <= certify(p).coverage


# --------------------------------------------------------------------------- certificate fields


@pytest.mark.parametrize("geometry, smooth, r, rho", [("l1", 0.0, 0.05, 0.0), ("kl", 0.1, 0.0, 0.002),
                                                       ("kl_l1", 0.1, 0.05, 0.002)])
def test_certificate_fields_and_consistency(geometry, smooth, r, rho):
    p = make_problem(1, geometry=geometry, smooth=smooth, r=r, rho=rho, alpha_over_n=2.0)
    pred = np.argmax(p["F_test"] @ p["coef"] + p["intercept"], axis=1)
    cb = certify(p, scope="head")
    assert isinstance(cb, Certificate)
    assert (cb.tier, cb.scope, cb.engine, cb.m, cb.delta, cb.delta_min) == (
        "bounded", "head", "softmax_sensitivity", None, None, None)
    np.testing.assert_array_equal(cb.prediction, pred)
    np.testing.assert_array_equal(cb.certified, cb.radius_scale >= 1.0)
    np.testing.assert_array_equal(cb.certified, cb.worst_case_margin > 0)
    assert 0.05 < cb.coverage < 1.0
    assert np.all(cb.worst_case_margin <= cb.margin)
    for m in (0, 1, 2, 5, 1000):
        cf = certify(p, tier="flip", m=m)
        assert cf.m == m and cf.tier == "flip"
        np.testing.assert_array_equal(cf.certified, cf.max_flips >= m)
        np.testing.assert_array_equal(cf.certified, cf.worst_case_margin > 0)
        np.testing.assert_array_equal(cf.max_flips, cb.max_flips)
    # more flips or larger budgets never certify more
    c1, c3 = certify(p, tier="flip", m=1), certify(p, tier="flip", m=3)
    assert np.all(c3.certified <= c1.certified)
    big = certify(p, budget=p["budget"].scaled(3.0))
    assert np.all(big.certified <= cb.certified)


def test_radius_scale_and_max_flips_are_the_bisection_limits():
    p = make_problem(2, alpha_over_n=2.0)
    c = certify(p)
    bd = bounds(p)
    _, _, _, _, thr = _test_side(_augment(p["F_test"]), p["coef"], p["intercept"], bd.w_norm)
    finite = np.isfinite(c.radius_scale) & (c.radius_scale > 0)
    assert finite.sum() > 20
    s = c.radius_scale[finite]
    assert np.all(bd.radius(s) < thr[finite])  # a checked pass: rounded down
    assert np.all(bd.radius(s * (1 + 1e-9) + 1e-12) >= thr[finite])  # and tight
    mf = c.max_flips
    ok = mf >= 0
    assert np.all(bd.r_flip[mf[ok]] < thr[ok])
    below_n = ok & (mf < len(p["F"]))
    assert np.all(bd.r_flip[mf[below_n] + 1] >= thr[below_n])


def test_zero_budgets_bounded_equals_flip_zero_and_radius_scale_is_infinite():
    p = make_problem(4, r=0.0)
    cb, cf = certify(p), certify(p, tier="flip", m=0)
    np.testing.assert_array_equal(cb.certified, cf.certified)
    assert cb.coverage > 0.9
    assert np.all(np.isinf(cb.radius_scale[cb.certified]))


def test_wrong_alpha_or_unfitted_head_is_not_trusted():
    p = make_problem(6, alpha_over_n=2.0)
    good = certify(p)
    # The certificate recomputes the subgradient: claiming another alpha makes W_hat far from optimal.
    wrong = certify_softmax_head(p["F"], p["budget"], p["F_test"], coef=p["coef"], intercept=p["intercept"],
                                 grad_norm=p["grad_norm"], alpha=p["alpha"] * 10)
    assert wrong.coverage < good.coverage
    zero = certify_softmax_head(p["F"], p["budget"], p["F_test"], coef=np.zeros_like(p["coef"]),
                                intercept=np.zeros(3), grad_norm=0.0, alpha=p["alpha"])
    assert zero.coverage == 0.0
    assert bounds(p).grad_norm_measured < 1e-6


def test_empty_test_set():
    p = make_problem(0, n=30, n_test=0)
    c = certify(p, tier="flip", m=1)
    assert len(c) == 0 and c.coverage == 0.0


# --------------------------------------------------------------------------- the maths pieces


@pytest.mark.parametrize("geometry", ["l1", "kl", "kl_l1"])
def test_gap_upper_bounds_are_valid_and_tight(geometry):
    rng = np.random.default_rng(7)
    n, k = 400, 4
    v = rng.normal(size=(n, k)) * rng.choice([1e-3, 1.0, 30.0], size=(n, 1))
    pi = rng.dirichlet(np.ones(k), size=n)
    pi[:50, 0] = 0.0  # some zeros: the KL ball lives on supp(pi)
    pi[50:60] = np.eye(k)[rng.integers(0, k, 10)]
    pi /= pi.sum(axis=1, keepdims=True)
    r = rng.uniform(0, 2, n) * rng.choice([0.0, 1e-6, 1.0], size=n)
    rho = rng.uniform(0, 1, n) * rng.choice([0.0, 1e-10, 1.0], size=n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value, q = worst_case_expectation(v, pi, *_radii(geometry, r, rho))
    if geometry == "l1":
        ub = _l1_upper(v, pi, r)
        np.testing.assert_allclose(ub, value, rtol=1e-12, atol=1e-12 * np.abs(v).max())
    elif geometry == "kl":
        ub = _kl_upper(v, pi, rho)
        scale = np.ptp(v, axis=1)
        assert np.all(ub >= value - 1e-14 * (1 + np.abs(v).max(axis=1)))
        assert np.all(ub - value <= 1e-8 * (1 + scale))
    else:
        ub = np.minimum(_l1_upper(v, pi, r), _kl_upper(v, pi, rho))
        assert np.all(ub >= value - 1e-14 * (1 + np.abs(v).max(axis=1)))
    # every feasible point (random mixtures of pi and the maximiser, and random points of the set) is below
    for _ in range(5):
        t = rng.uniform(0, 1, (n, 1))
        qq = t * q + (1 - t) * pi
        assert np.all((qq * v).sum(axis=1) <= ub + 1e-12 * (1 + np.abs(v).max(axis=1)))
        qr = point_in_set(rng.normal(size=(n, k)), pi, r, rho, geometry)
        assert np.all((qr * v).sum(axis=1) <= ub + 1e-12 * (1 + np.abs(v).max(axis=1)))


@pytest.mark.parametrize("geometry", ["l1", "kl", "kl_l1"])
def test_feasible_maximisers_lie_in_the_sets(geometry):
    rng = np.random.default_rng(8)
    n, k = 300, 3
    pi = rng.dirichlet(np.ones(k), size=n)
    pi[:30] = np.eye(k)[rng.integers(0, k, 30)]
    r = rng.uniform(0, 1, n) * (rng.random(n) > 0.1)
    rho = rng.uniform(0, 0.2, n) * (rng.random(n) > 0.1)
    v = rng.normal(size=(n, k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        _, q0 = worst_case_expectation(v, pi, *_radii(geometry, r, rho))
    # also perturbed, slightly infeasible inputs
    for qin in (q0, q0 + rng.normal(size=q0.shape) * 1e-9):
        single = _singleton(pi, r, rho, geometry)
        q = _feasible_maximisers(qin, pi, r, rho, geometry, single)
        assert np.all(q >= 0) and np.allclose(q.sum(axis=1), 1.0, atol=1e-15 * k * 4)
        if geometry != "kl":
            assert np.all(np.abs(q - pi).sum(axis=1) <= r)
        if geometry != "l1":
            assert np.all(_kl_rows(q, pi) <= rho)
        np.testing.assert_array_equal(q[single], pi[single])
        # the exact maximiser is barely moved
        assert np.abs(q - q0)[~single].max() < 1e-6


@pytest.mark.parametrize("geometry, smooth, r, rho", [("l1", 0.0, 0.3, 0.0), ("kl", 0.2, 0.0, 0.05),
                                                       ("kl_l1", 0.2, 0.3, 0.05)])
def test_lemma4_displacement_bound(geometry, smooth, r, rho):
    # ||q_hat_i - q'_i||_2 <= Delta_i(s) for pi'_i in U(pi_i; s r, s rho), q'_i a maximiser over U(pi'_i; r, rho)
    p = make_problem(9, n=60, geometry=geometry, smooth=smooth, r=r, rho=rho, alpha_over_n=0.2)
    bd = bounds(p)
    rad = bd.radius
    b = p["budget"]
    z = p["X"] @ p["W"]
    v = logsumexp(z, axis=1)[:, None] - z
    rng = np.random.default_rng(0)
    worst_ratio = 0.0
    for s in (0.0, 0.5, 1.0, 3.0):
        delta = np.minimum(rad.cap[:, None], rad.d2[:, None] + np.minimum(2.0, rad._e(np.array([s])) +
                                                                          rad.b[:, None]) / np.sqrt(2.0))[:, 0]
        for _ in range(20):
            g = rng.normal(size=v.shape) * rng.choice([0.1, 10.0])
            pi2 = point_in_set(g, b.pi, np.minimum(s * b.r, 2.0), s * b.rho, geometry)
            q2 = point_in_set(v, pi2, b.r, b.rho, geometry)
            dist = np.linalg.norm(bd.q_hat - q2, axis=1)
            assert np.all(dist <= delta + 1e-12)
            worst_ratio = max(worst_ratio, float(np.max(dist / np.maximum(delta, 1e-300))))
    assert worst_ratio > 0.2  # the attack reaches a fair part of the bound


# --------------------------------------------------------------------------- attacks on the radii


@pytest.mark.parametrize("geometry, smooth, r, rho", [("l1", 0.0, 0.1, 0.0), ("kl", 0.1, 0.0, 0.01),
                                                       ("kl_l1", 0.1, 0.1, 0.01)])
def test_parameter_radius_holds_under_attack(geometry, smooth, r, rho):
    """||W*(Pi') - W_hat||_F <= R_B(1) for random and adversarial Pi' (Theorem 1), R_F(m) for flips."""
    p = make_problem(10, n=40, geometry=geometry, smooth=smooth, r=r, rho=rho, alpha_over_n=0.5, n_test=20)
    bd = bounds(p)
    R1 = float(bd.radius(np.ones(1))[0])
    b = p["budget"]
    rng = np.random.default_rng(1)
    k = 3
    # Pi' = Pi itself: the exact optimum is within R_B(0) and R_F(0)
    W0 = refit(p, b.pi, W0=np.zeros_like(p["W"]))
    assert np.linalg.norm(W0 - p["W"]) <= min(bd.radius(np.zeros(1))[0], bd.r_flip[0])
    H = hessian(p["X"], p["W"], p["lam"])
    dists = []
    for trial in range(12):
        if trial < 4:  # random boundary points of the sets
            g = rng.normal(size=b.pi.shape)
        elif trial < 8:  # push every row towards one class
            g = np.tile(np.eye(k)[trial % k], (len(b.pi), 1))
        else:  # influence attack on a random direction of W
            D = rng.normal(size=p["W"].shape)
            g = p["X"] @ np.linalg.solve(H, D.ravel()).reshape(D.shape)
        pi2 = point_in_set(g, b.pi, b.r, b.rho, geometry)
        W2 = refit(p, pi2)
        dists.append(np.linalg.norm(W2 - p["W"]))
    assert max(dists) <= R1
    assert max(dists) > 0
    # flips: m rows with the largest ||x_i|| set to one-hot labels (and an emptied budget)
    norms = np.linalg.norm(p["X"], axis=1)
    for m in (1, 3):
        rows = np.argsort(-norms)[:m]
        for target in range(k):
            pi2 = b.pi.copy()
            pi2[rows] = np.eye(k)[target]
            r2, rho2 = b.r.copy(), b.rho.copy()
            r2[rows] = 0.0
            W2 = refit(p, pi2, r=r2, rho=rho2)
            assert np.linalg.norm(W2 - p["W"]) <= bd.r_flip[m]


def _bounded_campaign(p, scale_of=None, n_points=None):
    """Targeted attack per test point; returns (#attacked, #certified attacked, #flips of certified, #flips)."""
    cert = certify(p)
    b = p["budget"]
    H = hessian(p["X"], p["W"], p["lam"])
    pred, rival, _ = most_threatened(p)
    Xt = _augment(p["F_test"])
    idx = np.arange(len(pred)) if n_points is None else n_points
    attacked = cert_attacked = bad = flips = 0
    for j in idx:
        s = 1.0 if scale_of is None else scale_of[j]
        g = influence(p, H, Xt[j], pred[j], rival[j])
        if j % 3 == 2:  # naive variant: every row pushed towards the rival
            g = np.tile(np.eye(3)[rival[j]] - np.eye(3)[pred[j]], (len(b.pi), 1))
        pi2 = point_in_set(g, b.pi, np.minimum(s * b.r, 2.0), s * b.rho, p["geometry"])
        W2 = refit(p, pi2)  # the learner keeps its radii
        flipped = predict(W2, p["F_test"][j:j + 1])[0] != pred[j]
        attacked += 1
        flips += flipped
        ok = cert.certified[j] if scale_of is None else True
        cert_attacked += ok
        bad += ok and flipped
    return attacked, cert_attacked, bad, flips


def test_bounded_certificates_survive_targeted_attacks_l1():
    total = certified = 0
    for seed in range(3):
        p = make_problem(20 + seed, n=40, r=0.05, alpha_over_n=2.0, n_test=200)
        a, c, bad, _ = _bounded_campaign(p)
        assert bad == 0
        total, certified = total + a, certified + c
    assert total == 600 and certified > 100


@pytest.mark.parametrize("geometry, r, rho", [("kl", 0.0, 0.001), ("kl_l1", 0.05, 0.004)])
def test_bounded_certificates_survive_targeted_attacks_kl(geometry, r, rho):
    p = make_problem(30, n=40, geometry=geometry, smooth=0.1, r=r, rho=rho, alpha_over_n=2.0, n_test=100)
    a, c, bad, _ = _bounded_campaign(p)
    assert bad == 0 and a == 100 and c > 25


def test_radius_scale_survives_attacks_at_that_scale():
    p = make_problem(40, n=40, r=0.05, alpha_over_n=2.0, n_test=200)
    cert = certify(p)
    cand = np.flatnonzero(np.isfinite(cert.radius_scale) & (cert.radius_scale > 0))
    # the points certified with the smallest room first
    cand = cand[np.argsort(cert.radius_scale[cand])][:60]
    a, c, bad, _ = _bounded_campaign(p, scale_of=cert.radius_scale, n_points=cand)
    assert bad == 0 and a == len(cand) and a >= 40


def test_attack_has_teeth():
    # With large budgets the same attack does flip low-margin predictions (it is not a no-op).
    p = make_problem(41, n=40, r=1.0, alpha_over_n=0.2, n_test=200)
    _, _, scores = most_threatened(p)
    top2 = np.sort(scores, axis=1)[:, -2:]
    low = np.argsort(top2[:, 1] - top2[:, 0])[:20]
    _, _, _, flips = _bounded_campaign(p, scale_of=np.ones(200), n_points=low)
    assert flips >= 3


def test_flip_certificates_survive_targeted_attacks():
    attacked = 0
    for seed in range(2):
        p = make_problem(50 + seed, n=40, r=0.05, alpha_over_n=2.0, n_test=150)
        cert = certify(p, tier="flip", m=1)
        H = hessian(p["X"], p["W"], p["lam"])
        pred, rival, _ = most_threatened(p)
        Xt = _augment(p["F_test"])
        b = p["budget"]
        norms = np.linalg.norm(p["X"], axis=1)
        for j in np.flatnonzero(cert.max_flips >= 1):
            m = int(cert.max_flips[j])
            g = influence(p, H, Xt[j], pred[j], rival[j])
            gain = g.max(axis=1) - (b.pi * g).sum(axis=1)
            if j % 2:
                rows, labels = np.argsort(-gain)[:m], np.argmax(g, axis=1)  # best rows, best labels
            else:
                rows, labels = np.argsort(-norms)[:m], np.full(len(g), rival[j])  # largest rows, the rival
            pi2 = b.pi.copy()
            pi2[rows] = np.eye(3)[labels[rows]]
            W2 = refit(p, pi2)
            assert predict(W2, p["F_test"][j:j + 1])[0] == pred[j]
            attacked += 1
    assert attacked >= 150


# --------------------------------------------------------------------------- errors


@pytest.fixture(scope="module")
def small():
    return make_problem(0, n=30, n_test=5)


@pytest.mark.parametrize("override, exc, match", [
    ({"tier": "stochastic"}, CertificationError, "stochastic"),
    ({"tier": "exact"}, ValueError, "tier must be"),
    ({"scope": "pipeline"}, ValueError, "scope must be"),
    ({"geometry": "l2"}, ValueError, "geometry must be"),
    ({"tier": "flip"}, ValueError, "needs m"),
    ({"tier": "flip", "m": -1}, ValueError, "m must be a non-negative integer"),
    ({"tier": "flip", "m": 1.5}, ValueError, "m must be a non-negative integer"),
    ({"alpha": 0.0}, ValueError, "alpha must be a positive"),
    ({"grad_norm": -1.0}, ValueError, "grad_norm must be"),
    ({"grad_norm": np.nan}, ValueError, "grad_norm must be"),
    ({"coef": np.zeros((3, 3))}, ValueError, r"coef must have shape \(2, 3\)"),
    ({"intercept": np.zeros(2)}, ValueError, "intercept must be"),
    ({"F_test": np.zeros((4, 3))}, ValueError, "F_test has 3 features"),
    ({"F_test": np.zeros(4)}, ValueError, "F_test must be 2-D"),
    ({"F_train": np.full((30, 2), np.nan)}, ValueError, "F_train contains NaN"),
    ({"F_train": np.zeros((29, 2))}, ValueError, "budget has 30 rows but the features have 29"),
    ({"classes": [0, 1]}, ValueError, "classes must have shape"),
    ({"budget": "votes"}, ValueError, "budget must be a NoiseBudget"),
])
def test_certify_errors(small, override, exc, match):
    kwargs = dict(F_train=small["F"], budget=small["budget"], F_test=small["F_test"], coef=small["coef"],
                  intercept=small["intercept"], grad_norm=small["grad_norm"], alpha=small["alpha"])
    kwargs.update(override)
    with pytest.raises(exc, match=match):
        certify_softmax_head(**kwargs)


@pytest.mark.parametrize("override, match", [
    ({"alpha": -1.0}, "alpha must be a positive"),
    ({"tol": 0.0}, "tol must be a positive"),
    ({"max_iter": 0}, "max_iter must be a positive integer"),
    ({"geometry": "tv"}, "geometry must be"),
    ({"F": np.zeros((3, 2))}, "budget has 30 rows but the features have 3"),
])
def test_fit_errors(small, override, match):
    kwargs = dict(F=small["F"], budget=small["budget"])
    kwargs.update(override)
    with pytest.raises(ValueError, match=match):
        fit_robust_softmax_head(**kwargs)


def test_one_class_budget_is_refused():
    b = NoiseBudget(pi=np.ones((4, 1)), r=np.zeros(4), rho=np.zeros(4), classes_=[0], counts=np.ones((4, 1)),
                    p_error=np.zeros(4))
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_robust_softmax_head(np.zeros((4, 2)), b)


# --------------------------------------------------------------------------- looseness table (docs, section 7)


def looseness_table(seeds=(0, 1, 2), n=1000, n_test=2000, d=5, k=3, sep=3.0, label_noise=0.1):
    """Coverage of this engine vs the exact ridge engine on the same features and budgets."""
    from sklearn_cnat.certificates import certify_ridge

    rows = []
    for r0 in (0.02, 0.05, 0.1):
        for alpha_over_n in (0.1, 1.0, 10.0):
            acc = []
            for seed in seeds:
                rng = np.random.default_rng(seed)
                means = rng.normal(size=(k, d))
                means *= sep / np.linalg.norm(means, axis=1, keepdims=True)
                y = rng.integers(0, k, n)
                F = means[y] + rng.normal(size=(n, d))
                y_noisy = np.where(rng.random(n) < label_noise, rng.integers(0, k, n), y)
                yt = rng.integers(0, k, n_test)
                Ft = means[yt] + rng.normal(size=(n_test, d))
                b = _budget(np.eye(k)[y_noisy], r0, 0.0, y_noisy)
                alpha = alpha_over_n * n
                coef, icpt, gn = fit_robust_softmax_head(F, b, alpha=alpha, tol=1e-10)
                kw = dict(coef=coef, intercept=icpt, grad_norm=gn, alpha=alpha)
                sb = certify_softmax_head(F, b, Ft, tier="bounded", **kw)
                sf = certify_softmax_head(F, b, Ft, tier="flip", m=1, **kw)
                rb = certify_ridge(F, b, Ft, alpha=alpha, tier="bounded")
                rf = certify_ridge(F, b, Ft, alpha=alpha, tier="flip", m=1)
                acc.append([(sb.prediction == yt).mean(), (rb.prediction == yt).mean(), sb.coverage, rb.coverage,
                            np.median(sb.radius_scale), np.median(rb.radius_scale), sf.coverage, rf.coverage,
                            np.median(sf.max_flips), np.median(rf.max_flips)])
            rows.append((r0, alpha_over_n, np.mean(acc, axis=0)))
    return rows


if __name__ == "__main__":  # pragma: no cover
    print("| r | alpha/n | acc softmax | acc ridge | bounded cov softmax | ridge | median radius_scale softmax "
          "| ridge | flip m=1 cov softmax | ridge | median max_flips softmax | ridge |")
    print("|" + "---|" * 12)
    for r0, a, v in looseness_table():
        print(f"| {r0} | {a} | " + " | ".join(f"{x:.3g}" for x in v) + " |")
