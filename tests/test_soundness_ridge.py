"""Attacks on the ridge certificates (docs/certificates.md, Theorems 1, 3, 4).

Every attack is built by an independent solver (scipy.optimize.linprog for l1 rows,
SLSQP for KL rows, brute force over simplex vertices for flips) and evaluated by
retraining the ridge head from scratch through a separate code path (least squares on
the augmented system, not ``_ridge_fit`` and not the influence matrix). A certified
prediction that an attack flips is a soundness violation; the tests count them and
require zero. For the exact engines, uncertified points must be flipped by their attack.
"""

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from sklearn_cnat.certificates import certify_ridge


@dataclass
class _Budget:
    pi: np.ndarray
    r: np.ndarray
    rho: np.ndarray
    counts: np.ndarray


def _refit_scores(F, Y, alpha, X):
    """Scores of ridge (unpenalised intercept) on targets ``Y``, by least squares on the augmented system."""
    n, d = F.shape
    M = np.zeros((n + d, d + 1))
    M[:n, :d] = F
    M[:n, d] = 1.0
    M[n:, :d] = np.sqrt(alpha) * np.eye(d)
    rhs = np.vstack([Y, np.zeros((d, Y.shape[1]))])
    sol = np.linalg.lstsq(M, rhs, rcond=None)[0]
    return X @ sol[:d] + sol[d]


def _problem(seed, n, d, K, n_test, kind="mixed"):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d)) * 1.2
    y = rng.integers(K, size=n)
    F = centers[y] + rng.normal(size=(n, d))
    pi = np.zeros((n, K))
    counts = np.zeros((n, K))
    for i in range(n):
        p = np.full(K, 0.15 / K)
        p[y[i]] += 0.85
        votes = rng.integers(1, 6) if (kind == "soft" or rng.random() < 0.5) else 1
        counts[i] = rng.multinomial(votes, p / p.sum())
        pi[i] = counts[i] / votes
        if kind == "soft":
            pi[i] = 0.8 * pi[i] + 0.2 / K
    u = rng.random(n)
    r = np.where(u < 0.2, 0.0, np.where(u < 0.8, rng.uniform(0, 0.25, n), rng.uniform(0.25, 2.0, n)))
    rho = np.where(u < 0.2, 0.0, rng.uniform(0, 0.15, n))
    X = centers[rng.integers(K, size=n_test)] + 1.3 * rng.normal(size=(n_test, d))
    return F, _Budget(pi, r, rho, counts), X


def _l1_row_attack(p, a, b, r):
    """argmax of q_b - q_a over {q in simplex, ||q - p||_1 <= r} by linprog, made exactly feasible."""
    K = p.size
    c = np.zeros(2 * K)
    c[b], c[a] = -1.0, 1.0
    A = np.zeros((2 * K + 1, 2 * K))
    ub = np.zeros(2 * K + 1)
    for k in range(K):
        A[2 * k, k], A[2 * k, K + k], ub[2 * k] = 1.0, -1.0, p[k]
        A[2 * k + 1, k], A[2 * k + 1, K + k], ub[2 * k + 1] = -1.0, -1.0, -p[k]
    A[-1, K:], ub[-1] = 1.0, r
    eq = np.zeros((1, 2 * K))
    eq[0, :K] = 1.0
    res = linprog(c, A_ub=A, b_ub=ub, A_eq=eq, b_eq=[1.0], bounds=[(0, None)] * (2 * K), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    assert res.status == 0
    q = np.clip(res.x[:K], 0.0, None)
    q /= q.sum()
    dist = np.abs(q - p).sum()
    if dist > r:  # shrink towards p: stays on the simplex, lands inside the ball
        q = p + (q - p) * (r / dist) * (1 - 1e-12)
    return q


def _kl(q, p):
    mask = q > 0
    return float(np.sum(q[mask] * np.log(q[mask] / p[mask])))


def _kl_row_attack(p, a, b, rho, r=None):
    """argmax of q_b - q_a over the KL ball (and the l1 ball if r is given) by SLSQP, made feasible.

    Variables ``(q, t)`` with ``t >= |q - p|`` keep the l1 constraint smooth.
    """
    K = p.size
    cons = [{"type": "eq", "fun": lambda z: z[:K].sum() - 1.0},
            {"type": "ineq", "fun": lambda z: rho - _kl(np.clip(z[:K], 1e-300, None), p)}]
    if r is not None:
        cons += [{"type": "ineq", "fun": lambda z: z[K:] - (z[:K] - p)},
                 {"type": "ineq", "fun": lambda z: z[K:] + (z[:K] - p)},
                 {"type": "ineq", "fun": lambda z: r - z[K:].sum()}]
    best = p.copy()
    for start in (p, 0.5 * p + 0.5 * np.eye(K)[b]):
        z0 = np.concatenate([start, np.abs(start - p)])
        res = minimize(lambda z: z[a] - z[b], z0, method="SLSQP", bounds=[(0, 1)] * K + [(0, 2)] * K,
                       constraints=cons, options={"ftol": 1e-13, "maxiter": 300})
        q = np.clip(res.x[:K], 0.0, None)
        q /= q.sum()
        lo, hi = 0.0, 1.0  # largest step from p to q that is feasible
        for _ in range(60):
            mid = (lo + hi) / 2
            z = p + mid * (q - p)
            ok = _kl(z, p) <= rho and (r is None or np.abs(z - p).sum() <= r)
            lo, hi = (mid, hi) if ok else (lo, mid)
        q = p + lo * (q - p)
        if q[b] - q[a] > best[b] - best[a]:
            best = q
    return best


def _attack_margins(F, budget, X, alpha, pred, row_attack):
    """min over rivals of the retrained margin under each rival's row-wise worst case."""
    n, K = budget.pi.shape
    H = _refit_scores(F, np.eye(n), alpha, X)  # influence by an independent path
    cache = {}
    columns, owners = [], []
    for t in range(X.shape[0]):
        c = pred[t]
        for b in range(K):
            if b == c:
                continue
            Q = np.empty((n, K))
            for i in range(n):
                a_, b_ = (c, b) if H[t, i] >= 0 else (b, c)
                key = (i, a_, b_)
                if key not in cache:
                    cache[key] = row_attack(i, a_, b_)
                Q[i] = cache[key]
            columns.append(Q[:, c] - Q[:, b])  # margin is linear in Q: one target column suffices
            owners.append(t)
    scores = _refit_scores(F, np.stack(columns, axis=1), alpha, X)
    owners = np.asarray(owners)
    attacked = np.full(X.shape[0], np.inf)
    for j, t in enumerate(owners):
        attacked[t] = min(attacked[t], scores[t, j])
    return attacked


L1_CASES = [(0, 30, 3, 2), (1, 50, 4, 3), (2, 80, 6, 3), (3, 40, 5, 4), (4, 60, 10, 5), (5, 120, 6, 2),
            (6, 200, 8, 2), (7, 70, 3, 4)]


def test_bounded_l1_sound_and_tight():
    n_points = n_cert = violations = untight = 0
    worst_gap = 0.0
    for seed, n, d, K in L1_CASES:
        F, budget, X = _problem(seed, n, d, K, n_test=150)
        alpha = [0.3, 1.0, 3.0][seed % 3]
        cert = certify_ridge(F, budget, X, alpha=alpha, tier="bounded", geometry="l1", radius=False)
        pred = np.searchsorted(np.arange(K), cert.prediction)
        attacked = _attack_margins(F, budget, X, alpha, pred,
                                   lambda i, a, b: _l1_row_attack(budget.pi[i], a, b, budget.r[i]))
        n_points += X.shape[0]
        n_cert += int(cert.certified.sum())
        violations += int(np.sum(cert.certified & (attacked <= 0)))
        untight += int(np.sum(~cert.certified & (attacked > 1e-9)))
        worst_gap = max(worst_gap, float(np.max(np.abs(attacked - cert.worst_case_margin))))
    print(f"l1 bounded: {n_points} attacked points, {n_cert} certified, {violations} violations, "
          f"{untight} uncertified points not flipped, max |W - attacked| = {worst_gap:.2e}")
    assert n_points >= 1000
    assert 0.1 * n_points < n_cert < 0.9 * n_points  # the attack set is not trivial
    assert violations == 0
    assert untight == 0
    assert worst_gap < 1e-8  # (C5) is exact: the row-wise attack attains it


@pytest.mark.parametrize("geometry", ["kl", "kl_l1"])
def test_bounded_kl_sound(geometry):
    n_points = n_cert = violations = 0
    worst_gap = 0.0
    for seed in range(3):
        F, budget, X = _problem(100 + seed, 10, 3, 3, n_test=60, kind="soft")
        budget.rho[:] = np.random.default_rng(seed).uniform(0.0, 0.4, 10)
        cert = certify_ridge(F, budget, X, alpha=0.5, tier="bounded", geometry=geometry, radius=False)
        r = budget.r if geometry == "kl_l1" else [None] * 10
        attacked = _attack_margins(
            F, budget, X, 0.5, cert.prediction,
            lambda i, a, b: _kl_row_attack(budget.pi[i], a, b, budget.rho[i], r[i]))
        n_points += X.shape[0]
        n_cert += int(cert.certified.sum())
        violations += int(np.sum(cert.certified & (attacked <= 0)))
        # the certificate's worst case never exceeds an achieved margin (soundness, every point)
        assert np.all(cert.worst_case_margin <= attacked + 1e-9)
        worst_gap = max(worst_gap, float(np.max(attacked - cert.worst_case_margin)))
    print(f"{geometry} bounded: {n_points} points, {n_cert} certified, {violations} violations, "
          f"max attacked - W = {worst_gap:.2e}")
    assert 0 < n_cert < n_points
    assert violations == 0
    if geometry == "kl":
        assert worst_gap < 1e-5  # exact up to the generic solver's accuracy


def _flip_candidates(rows, K, max_size=3):
    """Brute force: every set of at most ``max_size`` of ``rows``, every vertex in each changed row."""
    return [(size, subset, verts) for size in range(1, max_size + 1)
            for subset in itertools.combinations(rows, size)
            for verts in itertools.product(range(K), repeat=size)]


def _flipped_margins(F, pi, alpha, x, c, candidates):
    """Retrained margins of class ``c`` over each rival at ``x`` (1, d) under every candidate
    change, and the number of rows each changes."""
    K = pi.shape[1]
    cols, sizes = [], []
    for b in range(K):
        if b == c:
            continue
        for size, rows, verts in candidates:
            Q = pi.copy()
            for i, v in zip(rows, verts):
                Q[i] = np.eye(K)[v]
            cols.append(Q[:, c] - Q[:, b])
            sizes.append(size)
    return _refit_scores(F, np.stack(cols, axis=1), alpha, x)[0], np.asarray(sizes)


def test_flip_brute_force():
    n, d, K = 8, 3, 3
    checked = violations = untight = 0
    for seed in range(3):
        F, budget, X = _problem(200 + seed, n, d, K, n_test=60)
        certs = {m: certify_ridge(F, budget, X, alpha=0.5, tier="flip", m=m) for m in (0, 1, 2, 3)}
        max_flips = certs[1].max_flips
        for m, cert in certs.items():
            assert np.array_equal(cert.max_flips, max_flips)
            assert np.array_equal(cert.certified, max_flips >= m)
        candidates = _flip_candidates(range(n), K)
        for t in range(X.shape[0]):
            margins, sizes = _flipped_margins(F, budget.pi, 0.5, X[t:t + 1], int(certs[1].prediction[t]), candidates)
            for m in (1, 2, 3):
                broken = bool(np.any(margins[sizes <= m] <= 0))
                checked += 1
                violations += int(certs[m].certified[t] and broken)
                if max_flips[t] + 1 == m and max_flips[t] >= 0:
                    untight += int(not broken)  # m = max_flips + 1 changes must break it
    print(f"flip: {checked} (point, m) pairs brute-forced, {violations} violations, {untight} not tight")
    assert violations == 0
    assert untight == 0


def _truth_prediction(F, P, alpha, X):
    return np.argmax(_refit_scores(F, P, alpha, X), axis=1)


def _small_margin_points(F, P, alpha, rng, count):
    cand = F[rng.integers(len(F), size=2000)] + 0.8 * rng.normal(size=(2000, F.shape[1]))
    s = np.sort(_refit_scores(F, P, alpha, cand), axis=1)
    return cand[np.argsort(s[:, -1] - s[:, -2])[:count]]


@pytest.mark.parametrize("nominal", ["votes", "plurality"])
def test_stochastic_violation_rate(nominal):
    rng = np.random.default_rng(7)
    n, d, K, votes, alpha, delta = 40, 3, 3, 3, 1.0, 0.5
    F = rng.normal(size=(n, d))
    P = rng.dirichlet(np.ones(K) * 0.7, size=n)
    draws = 2000 if nominal == "votes" else 1000
    if nominal == "votes":
        target = P
    else:  # law of the plurality label (ties to the lowest index) of `votes` fresh votes
        target = np.zeros((n, K))
        for outcome in itertools.product(range(K), repeat=votes):
            counts = np.bincount(outcome, minlength=K)
            target[:, np.argmax(counts)] += np.prod(P[:, list(outcome)], axis=1)
    X = _small_margin_points(F, target, alpha, rng, 30)
    truth = _truth_prediction(F, target, alpha, X)
    bad = np.zeros(len(X))
    certified = np.zeros(len(X))
    for _ in range(draws):
        counts = np.stack([rng.multinomial(votes, p) for p in P]).astype(float)
        if nominal == "votes":
            pi = counts / votes
        else:
            pi = np.eye(K)[np.argmax(counts, axis=1)]
        cert = certify_ridge(F, _Budget(pi, None, None, counts), X, alpha=alpha, tier="stochastic", delta=delta)
        assert cert.engine == f"ridge-hoeffding-{nominal}"
        certified += cert.certified
        bad += cert.certified & (cert.prediction != truth)
    rate = bad / draws
    print(f"stochastic ({nominal}): {draws} draws x {len(X)} points, certified share {certified.mean() / draws:.3f}, "
          f"max per-point violation rate {rate.max():.4f} (delta = {delta})")
    # per point, P(certified and wrong) <= delta; allow 3 binomial standard errors
    assert np.all(rate <= delta + 3 * np.sqrt(delta * (1 - delta) / draws))


def test_stochastic_hoeffding_tail_is_conservative():
    """Empirical tail of the margin deviation stays below the Hoeffding bound of Theorem 4."""
    rng = np.random.default_rng(3)
    n, d, K, votes = 30, 3, 3, 2
    F = rng.normal(size=(n, d))
    P = rng.dirichlet(np.ones(K), size=n)
    x = rng.normal(size=(1, d))
    h = _refit_scores(F, np.eye(n), 1.0, x)[0]
    sigma2 = np.sum(h**2 / votes)
    means = h @ (P[:, 0] - P[:, 1])
    devs = []
    for _ in range(4000):
        counts = np.stack([rng.multinomial(votes, p) for p in P])
        devs.append(h @ ((counts[:, 0] - counts[:, 1]) / votes) - means)
    devs = np.asarray(devs)
    for t in (0.5, 1.0, 1.5, 2.0):
        thr = t * np.sqrt(sigma2)
        assert np.mean(devs >= thr) <= np.exp(-thr**2 / (2 * sigma2)) + 0.01
