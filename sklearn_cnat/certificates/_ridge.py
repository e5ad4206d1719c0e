"""Exact certificates for the ridge head (docs/certificates.md, Theorems 1-4).

The ridge head's scores are linear in the training label matrix (Lemma 0, (C1)):
``s_k(x) = sum_i h_i(x) Q_ik``. Every tier reduces to sums over training rows of
``h_i`` times per-row quantities, evaluated here in float64 torch, chunked over test
points, with the rounding allowance ``tau`` of (C15).

Private pure functions do the math; :func:`certify_ridge` validates once and dispatches.
"""

import math
import numbers
from collections import OrderedDict

import numpy as np
import scipy.linalg
import torch

from ..exceptions import CertificationError
from ._certificate import Certificate

__all__ = ["certify_ridge"]

_EPS = 2.0**-53  # unit roundoff of float64
_TIERS = ("bounded", "flip", "stochastic")
_GEOMETRIES = ("l1", "kl", "kl_l1")
_SCOPES = ("model", "head")
_SIMPLEX_ATOL = 1e-6
_MODE_ATOL = 1e-9
_CHUNK_ELEMENTS = 2**24  # float64 elements per working tensor (128 MiB)
_LOG2_FLOOR = -20  # smallest budget scale tried by radius_scale: 2**-20
_NEWTON_STEPS = 8
_KL_BISECTIONS = 30


def _gamma(count):
    """``gamma_N = N u / (1 - N u)`` (Higham's constant for N roundings)."""
    nu = count * _EPS
    return nu / (1.0 - nu)


# --------------------------------------------------------------------------- the learner


def _ridge_fit(F, Q, alpha):
    """Ridge head with the semantics of ``Ridge(alpha, fit_intercept=True)`` on ``(F, Q)``.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
    Q : ndarray of shape (n_samples, n_classes)
    alpha : float
        Regularisation, ``> 0``.

    Returns
    -------
    coef : ndarray of shape (n_features, n_classes)
    intercept : ndarray of shape (n_classes,)
        Scores are ``X @ coef + intercept`` (equation (C0)).
    """
    F = np.asarray(F, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    f_mean = F.mean(axis=0)
    q_mean = Q.mean(axis=0)
    Fc = F - f_mean
    gram = Fc.T @ Fc
    gram[np.diag_indices_from(gram)] += alpha
    rhs = Fc.T @ (Q - q_mean)
    coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, lower=True), rhs)
    intercept = q_mean - f_mean @ coef
    return coef, intercept


class _RidgeSystem:
    """Training-side quantities of the ridge learner and of the rounding allowance (C15).

    Holds ``Fbar``, ``Fc``, the Cholesky factor of ``A = Fc^T Fc + alpha I`` and the
    ingredients of the first-order error bound of section 5 of docs/certificates.md.
    """

    def __init__(self, F, alpha, device):
        self.device = device
        F = torch.as_tensor(np.asarray(F, dtype=np.float64), device=device)
        n, d = F.shape
        self.n, self.d = n, d
        self.f_mean = F.mean(dim=0)
        self.fc = F - self.f_mean
        A = self.fc.T @ self.fc
        A.diagonal().add_(alpha)
        self.A = A
        self.A_abs = A.abs()
        self.chol = torch.linalg.cholesky(A)
        fc_abs = self.fc.abs()
        self.B = fc_abs.T @ fc_abs
        eig = torch.linalg.eigvalsh(A)
        lam_min, lam_max = float(eig[0]), float(eig[-1])
        b_norm = float(torch.linalg.matrix_norm(self.B))
        self.lam_lo = max(alpha, lam_min - _gamma(n + 4) * b_norm - 4 * d * _EPS * lam_max)
        self.s_f = float(self.fc.norm(dim=1).sum()) * (1 + _gamma(n + d))
        self.d_mean = _gamma(n + 1) * float(F.abs().mean(dim=0).norm()) * (1 + _gamma(n + d))

    def test_side(self, X, n_classes):
        """``u_hat`` (T, d) and the allowance ``tau`` (T,) of (C15) with ``E_h`` and ``S``."""
        xc = X - self.f_mean
        U = torch.cholesky_solve(xc.T, self.chol).T
        resid = U @ self.A - xc
        n, d = self.n, self.d
        u_abs = U.abs()
        rho = (resid.norm(dim=1)
               + _gamma(d + 2) * (u_abs @ self.A_abs + xc.abs()).norm(dim=1)
               + _gamma(n + 4) * (u_abs @ self.B).norm(dim=1)
               + self.d_mean + _EPS * xc.norm(dim=1))
        u_norm = U.norm(dim=1)
        e_h = (rho / self.lam_lo * self.s_f
               + u_norm * (n * self.d_mean + (_EPS + _gamma(d + 1)) * self.s_f)
               + _gamma(d + 1))
        scale = 1.0 + u_norm * self.s_f + e_h
        tau = 2.0 * (3.0 * e_h + (3.0 * _gamma(n + d + n_classes + 4) + 32 * _EPS) * scale)
        return U, tau, e_h, scale

    def influence(self, U):
        """Rows ``h(x)`` of (C1) for the test points whose ``u_hat`` are the rows of ``U``."""
        return U @ self.fc.T + 1.0 / self.n


def _ridge_influence(F_train, F_test, alpha, chunk_size=None):
    """Yield chunks of the influence matrix ``H`` with ``H @ Q`` = ridge scores (C1).

    Uses a ``d x d`` Cholesky solve, never an ``n x n`` system.

    Parameters
    ----------
    F_train : ndarray of shape (n_train, d)
    F_test : ndarray of shape (n_test, d)
    alpha : float
    chunk_size : int or None
        Test rows per chunk (``None``: about 2**24 entries per chunk).

    Yields
    ------
    H : ndarray of shape (n_chunk, n_train)
    """
    system = _RidgeSystem(F_train, float(alpha), torch.device("cpu"))
    X = torch.as_tensor(np.asarray(F_test, dtype=np.float64))
    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(system.n, 1))
    for start in range(0, X.shape[0], step):
        U, _, _, _ = system.test_side(X[start:start + step], 2)
        yield system.influence(U).numpy()


# --------------------------------------------------------------------------- gains (C4)


def _l1_gain(pa, pb, r):
    """Lemma 2, (C6): ``max_{||q - pi||_1 <= r} (q_b - q_a) - (pi_b - pi_a)`` elementwise."""
    rest = (1.0 - pa - pb).clamp_min(0.0)
    return torch.minimum(r, 2.0 * pa) + torch.minimum((0.5 * r - pa).clamp_min(0.0), rest)


def _l1_gain_slope(pa, pb, r):
    """An upper bound of the right derivative of (C6) in the radius (for tangent lines (C8))."""
    slack = 1e-12
    first = (r <= 2.0 * pa * (1 + slack) + 1e-300).to(r.dtype)
    second = (r <= 2.0 * (1.0 - pb) * (1 + slack) + 1e-300).to(r.dtype)
    return 0.5 * (first + second)


def _kl_gain(pa, pb, rho):
    """Lemma 3: upper bound of the KL gain and of its slope in ``rho``, and a feasible value.

    Returns ``(gain, slope, primal)``: ``gain >= G^KL(a -> b; rho)`` by weak duality (C7)
    plus an explicit rounding allowance; ``gain + (pi_b - pi_a)`` as a function of the
    radius lies below the line of slope ``slope`` through it (the dual line), so it is a
    valid tangent for (C8); ``primal`` is ``<q_eta, w> - (pi_b - pi_a)`` of a feasible
    ``q_eta`` (a lower bound, for tests of tightness).
    """
    rest = (1.0 - pa - pb).clamp_min(0.0)
    nominal = pb - pa
    w_max = torch.where(pb > 0, 1.0, torch.where(rest > 0, 0.0, -1.0)).to(pa.dtype)
    p_max = torch.where(pb > 0, pb, torch.where(rest > 0, rest, pa))
    saturated = rho >= -torch.log(p_max)
    active = (~saturated) & (rho > 0)
    gain = torch.where(saturated, w_max - nominal, torch.zeros_like(pa))
    slope = torch.zeros_like(pa)
    primal = gain.clone()
    if not bool(active.any()):
        return gain.clamp_min(0.0), slope, primal.clamp_min(0.0)
    a, b, o, r = pa[active], pb[active], rest[active], rho[active]
    log_a, log_b, log_o = torch.log(a), torch.log(b), torch.log(o)
    log_max = torch.stack([log_a, log_b, log_o]).masked_fill(
        torch.isinf(torch.stack([log_a, log_b, log_o])), 0.0).abs().amax(dim=0)

    def log_mgf(eta):
        small = torch.log1p(b * torch.expm1(eta) + a * torch.expm1(-eta))
        large = torch.logsumexp(torch.stack([log_b + eta, log_a - eta, log_o]), dim=0)
        return torch.where(eta <= 1.0, small, large)

    def tilted(eta):
        lm = log_mgf(eta)
        mean = torch.exp(log_b + eta - lm) - torch.exp(log_a - eta - lm)
        return lm, mean, eta * mean - lm  # log M, <q_eta, w>, KL(q_eta || pi)

    var = a + b - (b - a) ** 2  # Var_pi(w); second-order guess eta ~ sqrt(2 rho / Var)
    guess = torch.where(var > 0, torch.sqrt(2 * r / var.clamp_min(1e-300)), torch.ones_like(a)).clamp(1e-8, 1e8)
    hi = guess.clone()
    lo = guess.clone()
    for _ in range(200):  # bracket the root of KL(q_eta) = rho in [lo, hi] with hi = 2 lo
        kl_hi = tilted(hi)[2]
        up = kl_hi < r
        kl_lo = tilted(lo)[2]
        down = kl_lo > r
        if not bool(up.any() or down.any()):
            break
        lo = torch.where(up, hi, lo)
        hi = torch.where(up, 2 * hi, hi)
        hi = torch.where(down, lo, hi)
        lo = torch.where(down, lo / 2, lo)
    for _ in range(_KL_BISECTIONS):
        mid = torch.sqrt(lo * hi)
        below = tilted(mid)[2] <= r
        lo = torch.where(below, mid, lo)
        hi = torch.where(below, hi, mid)

    def dual(eta):
        lm, _, _ = tilted(eta)
        raw = (r + lm) / eta
        spread = torch.where(eta <= 1.0, b * torch.expm1(eta) - a * torch.expm1(-eta), eta + 1.0 + log_max)
        err = 16 * _EPS * (r + lm.abs() + spread) / eta + 8 * _EPS * raw.abs()
        return raw + err

    d_lo, d_hi = dual(lo), dual(hi)
    use_lo = d_lo <= d_hi
    value = torch.minimum(d_lo, d_hi)
    eta = torch.where(use_lo, lo, hi)
    wm = w_max[active]
    capped = value >= wm
    gain[active] = (torch.where(capped, wm, value) - nominal[active]).clamp_min(0.0)
    slope[active] = torch.where(capped, 0.0, (1 + 16 * _EPS) / eta)
    lm_lo, mean_lo, kl_lo = tilted(lo)
    primal[active] = torch.where(kl_lo <= r, mean_lo, nominal[active]) - nominal[active]
    return gain, slope, primal.clamp_min(0.0)


class _GainTables:
    """Gains (C4) of every training row against one predicted class, at budget scale ``s``.

    ``slices(s, c)`` returns ``(gp, gm, dp, dm, g_max)``: each of the first four is (n, K)
    with ``gp[:, b] = G(c -> b)``, ``gm[:, b] = G(b -> c)`` (both 0 in column ``c``) and
    slopes ``dp``, ``dm`` in ``s`` valid for the tangent lines (C8); ``g_max`` is the
    largest slope. ``prefetch(keys)`` computes many ``(s, c)`` at once (one batched call).
    Rows off the simplex by ``dev_i`` (at most ``_SIMPLEX_ATOL`` in l1) are handled
    soundly: with ``p' = pi / sum(pi)``, ``U_i`` lies in the l1 ball of radius
    ``r_i + dev_i`` and the KL ball of radius ``rho_i + max(log sum(pi_i), 0)`` around
    ``p'``, and the gains around ``pi`` and ``p'`` differ by at most ``dev_i``.
    """

    def __init__(self, pi, r, rho, geometry, cache_size=64):
        self.geometry = geometry
        sums = pi.sum(dim=1, keepdim=True)
        self.pi = pi / sums
        self.dev = (pi - self.pi).abs().sum(dim=1, keepdim=True) + 4 * _EPS
        self.r = r[:, None]
        self.rho = rho[:, None]
        self.rho_extra = torch.log(sums).clamp_min(0.0)
        self._cache = OrderedDict()
        self._cache_size = cache_size

    def saturation_scale(self):
        """``s_sat`` of Theorem 2 (times 2 for rounding), or 0.0 when every budget is 0."""
        s_sat = 0.0
        if self.geometry in ("l1", "kl_l1"):
            pos = self.r[:, 0] > 0
            if bool(pos.any()):
                s_sat = max(s_sat, 2.0 / float(self.r[pos, 0].min()))
        if self.geometry in ("kl", "kl_l1"):
            pos = self.rho[:, 0] > 0
            if bool(pos.any()):
                p_min = torch.where(self.pi > 0, self.pi, torch.ones_like(self.pi)).amin(dim=1)
                s_sat = max(s_sat, float((-torch.log(p_min[pos]) / self.rho[pos, 0]).max()))
        return 2.0 * s_sat

    def _gain(self, pa, pb, s):
        gains, slopes = [], []
        if self.geometry in ("l1", "kl_l1"):
            raw = self.r * s + self.dev
            radius = raw.clamp_max(2.0)
            gains.append(_l1_gain(pa, pb, radius))
            slopes.append(self.r * _l1_gain_slope(pa, pb, radius) * (raw < 2.0))
        if self.geometry in ("kl", "kl_l1"):
            radius = self.rho * s + self.rho_extra
            g, dg, _ = _kl_gain(pa, pb, radius.expand_as(pa))
            gains.append(g)
            slopes.append(self.rho * dg)
        if len(gains) == 1:
            gain, slope = gains[0], slopes[0]
        else:
            use_first = gains[0] <= gains[1]
            gain = torch.where(use_first, gains[0], gains[1])
            slope = torch.where(use_first, slopes[0], slopes[1])
        return gain + self.dev, slope

    def prefetch(self, keys):
        """Compute and cache the slices of every ``(s, c)`` in ``keys`` not cached yet."""
        todo = [key for key in dict.fromkeys((float(s), int(c)) for s, c in keys) if key not in self._cache]
        n, K = self.pi.shape
        self._cache_size = max(self._cache_size, len(todo))  # keep a whole request
        batch = max(1, 2**22 // max(n * K, 1))
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            s = torch.tensor([key[0] for key in part], dtype=self.pi.dtype, device=self.pi.device)[:, None, None]
            cls = torch.tensor([key[1] for key in part], device=self.pi.device)
            pc = self.pi[:, cls].T[:, :, None].expand(len(part), n, K)
            pb = self.pi.expand(len(part), n, K)
            gp, dp = self._gain(pc, pb, s)
            gm, dm = self._gain(pb, pc, s)
            for j, key in enumerate(part):
                c = key[1]
                out = [t[j].clone() for t in (gp, gm, dp, dm)]
                for t in out:
                    t[:, c] = 0.0
                g_max = float(torch.maximum(out[2].max(), out[3].max())) if n else 0.0
                self._store(key, (*out, g_max))

    def _store(self, key, value):
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def slices(self, s, c):
        key = (float(s), int(c))
        if key not in self._cache:
            self.prefetch([key])
        self._cache.move_to_end(key)
        return self._cache[key]


# --------------------------------------------------------------------------- tiers


def _rival_worst(H_pos, H_neg, A, pred, tables, s, tau=None):
    """(C5) for every rival at per-point scales ``s``: values (T, K) and, given ``tau``, slopes.

    Column ``pred`` is ``+inf`` (value) and 0 (slope). The slopes are
    ``sum_i |h_i| g_i + tau * g_max``: the tangent slope of (C8) plus an allowance for
    its rounding (``tau`` bounds ``2 (E_h + gamma S)``, so ``tau * g_max`` bounds the
    error of ``sum_i |h_i| g_i``). Points are grouped by (scale, class) so that each group
    costs two matrix products.
    """
    T, K = A.shape
    values = torch.empty_like(A)
    slopes = torch.zeros_like(A) if tau is not None else None
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), (T,))
    pred_np = pred.cpu().numpy()
    keys = np.stack([s, pred_np.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    tables.prefetch(uniq)
    for g, (s_g, c) in enumerate(uniq):
        idx = torch.as_tensor(np.flatnonzero(inverse == g), device=A.device)
        c = int(c)
        gp, gm, dp, dm, g_max = tables.slices(s_g, c)
        hp, hn = H_pos[idx], H_neg[idx]
        values[idx] = A[idx, c:c + 1] - A[idx] - hp @ gp - hn @ gm
        if tau is not None:
            slopes[idx] = hp @ dp + hn @ dm + tau[idx, None] * g_max
    rows = torch.arange(T, device=A.device)
    values[rows, pred] = math.inf
    if tau is not None:
        slopes[rows, pred] = 0.0
    return values, slopes


def _radius_scale(H_pos, H_neg, A, pred, tables, tau, cert_at_one, s_sat, rtol):
    """Theorem 2: largest proven-certified budget scale per point, rounded down.

    Bisection on the grid ``2**k`` (shared scales, so each step is a few matrix
    products), then Newton steps from the left along the tangent lines (C8), whose roots
    are proven-certified scales; chords of the convex worst-case margin bound the exact
    value from above and stop the iteration at relative tolerance ``rtol``.
    """
    T = A.shape[0]
    tau_np = tau.cpu().numpy()
    radius = np.zeros(T)
    cert1 = cert_at_one.cpu().numpy().copy()
    if s_sat <= 0.0:  # every budget is zero: the scale does not matter
        radius[cert1] = math.inf
        return radius

    def evaluate(idx, s, slopes=False):
        idx_t = torch.as_tensor(idx, device=A.device)
        vals, sl = _rival_worst(H_pos[idx_t], H_neg[idx_t], A[idx_t], pred[idx_t], tables, s,
                                tau=tau[idx_t] if slopes else None)
        return vals.cpu().numpy(), (sl.cpu().numpy() if slopes else None)

    k_sat = max(math.ceil(math.log2(s_sat)), 1)
    lo = np.where(cert1, 0, _LOG2_FLOOR)
    hi = np.where(cert1, k_sat, 0)
    active = np.ones(T, dtype=bool)
    top = np.flatnonzero(cert1)
    if top.size:  # certified at saturation: certified at every scale
        ok = evaluate(top, 2.0**k_sat)[0].min(axis=1) > tau_np[top]
        radius[top[ok]] = math.inf
        active[top[ok]] = False
    bottom = np.flatnonzero(~cert1)
    if bottom.size:
        ok = evaluate(bottom, 2.0**_LOG2_FLOOR)[0].min(axis=1) > tau_np[bottom]
        active[bottom[~ok]] = False  # radius stays 0
    while True:
        todo = np.flatnonzero(active & (hi - lo > 1))
        if not todo.size:
            break
        mid = (lo[todo] + hi[todo]) // 2
        ok = evaluate(todo, 2.0 ** mid.astype(np.float64))[0].min(axis=1) > tau_np[todo]
        lo[todo] = np.where(ok, mid, lo[todo])
        hi[todo] = np.where(ok, hi[todo], mid)
    idx = np.flatnonzero(active)
    radius[idx] = 2.0 ** lo[idx].astype(np.float64)
    if not idx.size:
        return radius
    s_lo = 2.0 ** lo[idx].astype(np.float64)
    s_hi = 2.0 ** hi[idx].astype(np.float64)
    w_lo, sl = evaluate(idx, s_lo, slopes=True)
    w_hi = evaluate(idx, s_hi)[0]
    for _ in range(_NEWTON_STEPS):
        t = tau_np[idx][:, None]
        finite = np.isfinite(w_lo)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(finite & (sl > 0), (w_lo - t) / sl, math.inf).min(axis=1)
            chord = np.where(finite & (w_hi <= t), (w_lo - t) / (w_lo - w_hi), math.inf).min(axis=1)
        # tangent root: W >= tau there by (C8), i.e. certified (shrunk by 1e-9 for strictness)
        proven = s_lo + (1 - 1e-9) * np.maximum(step, 0.0)
        proven = np.where(proven >= s_hi, s_lo, proven)  # inconsistent only through rounding
        upper = np.minimum(s_lo + chord * (s_hi - s_lo), s_hi)
        radius[idx] = np.maximum(radius[idx], proven)
        keep = upper > proven * (1 + rtol)
        if not keep.any():
            break
        stalled = proven <= s_lo * (1 + 1e-6)
        nxt = np.where(stalled, np.sqrt(s_lo * upper), proven)
        idx, nxt, s_lo, s_hi, w_lo, sl, w_hi = (a[keep] for a in (idx, nxt, s_lo, s_hi, w_lo, sl, w_hi))
        vals, slopes = evaluate(idx, nxt, slopes=True)
        ok = vals.min(axis=1) > tau_np[idx]
        radius[idx] = np.where(ok, np.maximum(radius[idx], nxt), radius[idx])
        s_lo = np.where(ok, nxt, s_lo)
        s_hi = np.where(ok, s_hi, nxt)
        w_lo = np.where(ok[:, None], vals, w_lo)
        sl = np.where(ok[:, None], slopes, sl)
        w_hi = np.where(ok[:, None], w_hi, vals)
    return radius


def _flip_chunk(H, A, pred, pi, tau, m):
    """Theorem 3 for a chunk: ``(max_flips, worst margin at m)`` per point."""
    T, n = H.shape
    K = pi.shape[1]
    max_flips = np.empty(T, dtype=np.int64)
    worst = torch.empty(T, dtype=H.dtype, device=H.device)
    pred_np = pred.cpu().numpy()
    sub = max(1, _CHUNK_ELEMENTS // max(n * K, 1))
    for c in np.unique(pred_np):
        diff = (pi[:, c:c + 1] - pi).T  # (K, n): pi_ic - pi_ib
        members = np.flatnonzero(pred_np == c)
        for start in range(0, members.size, sub):
            rows = torch.as_tensor(members[start:start + sub], device=H.device)
            h = H[rows]
            d = torch.addcmul(h.abs()[:, None, :], h[:, None, :], diff[None]).clamp_min_(0.0)  # (C9)
            keep = torch.arange(K, device=H.device) != c
            d = d[:, keep, :]
            margin = (A[rows, c:c + 1] - A[rows])[:, keep]  # (R, K-1)
            t = tau[rows][:, None]
            k = min(n, max(m, 64))
            while True:
                top = torch.topk(d, k, dim=-1, sorted=True).values
                prefix = torch.cumsum(top, dim=-1)
                counts = (margin > t).to(torch.int64) + (margin[..., None] - prefix > t[..., None]).sum(-1)
                if k == n or bool((counts.amin(dim=1) <= k).all()):
                    break
                k = min(n, 8 * k)
            max_flips[members[start:start + sub]] = (counts.amin(dim=1) - 1).cpu().numpy()
            if m == 0:
                at_m = margin
            elif m <= k:
                at_m = margin - prefix[..., m - 1]
            else:
                at_m = margin - d.sum(-1)
            worst[rows] = at_m.amin(dim=1)
    return max_flips, worst


# --------------------------------------------------------------------------- stochastic tier


def _stochastic_mode(pi, counts):
    """Identify the nominal as (smoothed) vote mean or plurality (Theorem 4's model).

    Returns ``(kind, weights v_i, eps, deviation)``; raises CertificationError otherwise.
    """
    n, K = pi.shape
    votes = counts.sum(axis=1)
    if np.any(votes < 1):
        raise CertificationError("tier='stochastic' needs at least one vote per training example "
                                 f"({int(np.sum(votes < 1))} rows of counts have none)")
    if np.any(counts != np.round(counts)):
        raise CertificationError("tier='stochastic' needs integer vote counts (budget.counts)")
    mean = counts / votes[:, None]
    plural = np.zeros_like(pi)
    plural[np.arange(n), np.argmax(counts, axis=1)] = 1.0
    for kind, base, weight in (("votes", mean, 1.0 / votes), ("plurality", plural, np.ones(n))):
        spread = base - 1.0 / K
        denom = float(np.sum(spread * spread))
        eps = 0.0 if denom == 0.0 else float(np.sum((base - pi) * spread) / denom)
        eps = min(max(eps, 0.0), 1.0 - 1e-12)
        fitted = (1.0 - eps) * base + eps / K
        deviation = float(np.abs(fitted - pi).max()) if pi.size else 0.0
        if deviation <= _MODE_ATOL:
            return kind, (1.0 - eps) ** 2 * weight, eps, deviation
    raise CertificationError(
        "tier='stochastic' needs pi to be the (optionally smoothed) vote mean counts / n_votes or the "
        "one-hot plurality of counts, so that each row is a function of that example's own votes "
        "(docs/certificates.md, Theorem 4); this budget's pi is neither")


def _stochastic(system, X, pi, counts, delta, pred):
    """Theorem 4: ``(worst margin, delta_min, tau)`` for every test point."""
    kind, weight, eps, deviation = _stochastic_mode(pi, counts)
    n, K = pi.shape
    dev = system.device
    Q = torch.as_tensor(pi, device=dev)
    G = system.fc.T @ Q  # (d, K)
    q_mean = Q.mean(dim=0)
    Y = torch.cat([system.fc, torch.full((n, 1), 1.0 / n, dtype=Q.dtype, device=dev)], dim=1)
    w = torch.as_tensor(weight, device=dev)
    Gw = Y.T @ (Y * w[:, None])
    Bw = Y.abs().T @ (Y.abs() * w[:, None])
    Gw_abs = Gw.abs()
    d = system.d
    worst = np.empty(X.shape[0])
    delta_min = np.empty(X.shape[0])
    tau_all = np.empty(X.shape[0])
    step = max(1, _CHUNK_ELEMENTS // max(d * 4, 1))
    log_k = math.log(K - 1)
    for start in range(0, X.shape[0], step):
        sl = slice(start, start + step)
        U, tau, e_h, scale = system.test_side(X[sl], K)
        tau = tau + 2.0 * 2.0 * deviation * scale  # pi within `deviation` of the exact nominal
        scores = U @ G + q_mean
        c = pred[sl]
        rows = torch.arange(U.shape[0], device=dev)
        margins = scores[rows, c][:, None] - scores
        margins[rows, c] = math.inf
        M = margins.amin(dim=1)
        v = torch.cat([U, torch.ones(U.shape[0], 1, dtype=U.dtype, device=dev)], dim=1)
        quad = ((v @ Gw) * v).sum(dim=1)
        va = v.abs()
        err = 2.0 * (_gamma(n + 4) * ((va @ Bw) * va).sum(dim=1) + _gamma(2 * d + 4) * ((va @ Gw_abs) * va).sum(dim=1))
        sigma = torch.sqrt((quad + err).clamp_min(0.0)) * (1 + 4 * _EPS) + e_h
        thresh = torch.sqrt(2.0 * sigma**2 * (log_k - math.log(delta))) * (1 + 8 * _EPS)
        worst[sl] = (M - thresh).cpu().numpy()
        gap = (M - tau).clamp_min(0.0)
        dm = torch.where(M > tau, math.exp(log_k) * torch.exp(-gap**2 / (2.0 * sigma**2)) * (1 + 16 * _EPS),
                         torch.ones_like(M))
        delta_min[sl] = dm.clamp_max(1.0).cpu().numpy()
        tau_all[sl] = tau.cpu().numpy()
    return worst, delta_min, tau_all, kind


# --------------------------------------------------------------------------- public entry


def _as_matrix(value, name, n_cols=None):
    arr = np.asarray(value, dtype=np.float64) if value is not None else None
    if arr is None or arr.ndim != 2:
        raise CertificationError(f"{name} must be a 2-D array, got {None if arr is None else arr.shape}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise CertificationError(f"{name} has {arr.shape[1]} columns, expected {n_cols}")
    if not np.all(np.isfinite(arr)):
        raise CertificationError(f"{name} contains NaN or infinite values")
    return arr


def _budget_vector(budget, name, n):
    value = getattr(budget, name, None)
    if value is None:
        raise CertificationError(f"budget.{name} is needed for this geometry/tier but is missing")
    arr = np.asarray(value, dtype=np.float64).reshape(-1) if np.ndim(value) else np.full(n, float(value))
    if arr.shape != (n,):
        raise CertificationError(f"budget.{name} must have shape ({n},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CertificationError(f"budget.{name} contains NaN or infinite values")
    return arr


def certify_ridge(F_train, budget, F_test, *, alpha, tier="stochastic", geometry="l1", m=None, delta=0.05,
                  scope="model", classes=None, chunk_size=None, device=None, radius=True, radius_rtol=1e-2):
    """Certify the ridge head's predictions against changes of the training labels.

    The learner is ``Ridge(alpha, fit_intercept=True)`` fitted on ``(F_train, budget.pi)``
    (equation (C0) of docs/certificates.md); statements and proofs of the three tiers are
    Theorems 1-4 there.

    Parameters
    ----------
    F_train : array-like of shape (n_train, d)
        Training features (held fixed).
    budget : NoiseBudget or duck-typed object
        Needs ``pi`` (n_train, K); ``r`` (l1) and/or ``rho`` (KL) for tier "bounded";
        ``counts`` (n_train, K) for tier "stochastic"; optionally ``classes_``.
    F_test : array-like of shape (n_test, d)
        Points to certify.
    alpha : float
        Ridge regularisation, ``> 0``.
    tier : {"stochastic", "bounded", "flip"}, default="stochastic"
    geometry : {"l1", "kl", "kl_l1"}, default="l1"
        Uncertainty set of tier "bounded" (ignored by the other tiers).
    m : int or None, default=None
        Tier "flip": number of training rows the adversary may change (required; no
        default, see docs). Must be None for the other tiers.
    delta : float in (0, 1), default=0.05
        Tier "stochastic": failure probability.
    scope : {"model", "head"}, default="model"
        Recorded in the certificate: whether the features depend on these labels.
    classes : array-like of shape (K,) or None
        Class labels in column order (default: ``budget.classes_`` or ``arange(K)``).
    chunk_size : int or None
        Test points per chunk (``None``: about 2**24 float64 entries per chunk).
    device : str, torch.device or None
        Torch device for the computation (float64 throughout); default CPU.
    radius : bool, default=True
        Tier "bounded": compute ``radius_scale`` (Theorem 2).
    radius_rtol : float, default=1e-2
        Relative tolerance of ``radius_scale`` (always rounded down).

    Returns
    -------
    Certificate
    """
    if tier not in _TIERS:
        raise CertificationError(f"unknown tier {tier!r}; expected one of {_TIERS}")
    if geometry not in _GEOMETRIES:
        raise CertificationError(f"unknown geometry {geometry!r}; expected one of {_GEOMETRIES}")
    if scope not in _SCOPES:
        raise CertificationError(f"unknown scope {scope!r}; expected one of {_SCOPES}")
    if not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise CertificationError(f"alpha must be a finite number > 0, got {alpha!r}")
    alpha = float(alpha)
    if tier == "flip":
        if m is None:
            raise CertificationError("tier='flip' needs m, the number of training rows an adversary may "
                                     "change (e.g. m=1); max_flips is reported for every point")
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
            raise CertificationError(f"m must be an integer >= 0, got {m!r}")
        m = int(m)
    elif m is not None:
        raise CertificationError(f"m is only used by tier='flip', got m={m!r} with tier={tier!r}")
    if tier == "stochastic":
        if not isinstance(delta, numbers.Real) or not 0.0 < float(delta) < 1.0:
            raise CertificationError(f"delta must lie in (0, 1), got {delta!r}")
        delta = float(delta)
    if not isinstance(radius_rtol, numbers.Real) or not radius_rtol > 0:
        raise CertificationError(f"radius_rtol must be > 0, got {radius_rtol!r}")
    if chunk_size is not None and (not isinstance(chunk_size, numbers.Integral) or chunk_size < 1):
        raise CertificationError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")

    F_train = _as_matrix(F_train, "F_train")
    n, d = F_train.shape
    if n < 1:
        raise CertificationError("F_train has no rows")
    F_test = _as_matrix(F_test, "F_test", n_cols=d)
    pi = getattr(budget, "pi", None)
    if pi is None:
        raise CertificationError("budget must have a `pi` attribute (n_train, n_classes)")
    pi = _as_matrix(pi, "budget.pi")
    if pi.shape[0] != n:
        raise CertificationError(f"budget.pi has {pi.shape[0]} rows but F_train has {n}")
    K = pi.shape[1]
    if K < 2:
        raise CertificationError(f"need at least 2 classes, budget.pi has {K}")
    if np.any(pi < 0) or np.any(np.abs(pi.sum(axis=1) - 1.0) > _SIMPLEX_ATOL):
        raise CertificationError("budget.pi rows must lie on the simplex (non-negative, summing to 1)")
    if classes is None:
        classes = getattr(budget, "classes_", None)
    classes = np.arange(K) if classes is None else np.asarray(classes)
    if classes.shape != (K,):
        raise CertificationError(f"classes must have shape ({K},) to match budget.pi, got {classes.shape}")
    r = rho = counts = None
    if tier == "bounded":
        if geometry in ("l1", "kl_l1"):
            r = _budget_vector(budget, "r", n)
            if np.any((r < 0) | (r > 2)):
                raise CertificationError("budget.r (l1 radius) must lie in [0, 2]")
        if geometry in ("kl", "kl_l1"):
            rho = _budget_vector(budget, "rho", n)
            if np.any(rho < 0):
                raise CertificationError("budget.rho (KL radius) must be >= 0")
    if tier == "stochastic":
        counts = getattr(budget, "counts", None)
        if counts is None:
            raise CertificationError("tier='stochastic' needs budget.counts (vote counts)")
        counts = _as_matrix(counts, "budget.counts", n_cols=K)
        if counts.shape[0] != n or np.any(counts < 0):
            raise CertificationError(f"budget.counts must be non-negative with shape ({n}, {K})")

    dev = torch.device(device) if device is not None else torch.device("cpu")
    # The served predictor: exactly the classifier's ridge head and decision_function.
    coef, intercept = _ridge_fit(F_train, pi, alpha)
    scores = F_test @ coef + intercept
    pred_np = np.argmax(scores, axis=1)
    T = F_test.shape[0]
    rows = np.arange(T)
    rival = scores.copy()
    rival[rows, pred_np] = -np.inf
    margin = scores[rows, pred_np] - rival.max(axis=1) if T else np.zeros(0)
    prediction = classes[pred_np]

    system = _RidgeSystem(F_train, alpha, dev)
    X = torch.as_tensor(F_test, device=dev)
    pred = torch.as_tensor(pred_np, device=dev)
    common = dict(scope=scope, prediction=prediction, margin=margin, classes=classes)

    if tier == "stochastic":
        worst, delta_min, tau, kind = _stochastic(system, X, pi, counts, delta, pred)
        return Certificate(tier=tier, engine=f"ridge-hoeffding-{kind}", certified=worst > tau,
                           worst_case_margin=worst, delta=delta, delta_min=delta_min, **common)

    Pi = torch.as_tensor(pi, device=dev)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // n)
    worst = np.empty(T)
    certified = np.zeros(T, dtype=bool)
    extra = np.empty(T, dtype=np.int64) if tier == "flip" else np.empty(T)
    if tier == "bounded":
        tables = _GainTables(Pi, torch.as_tensor(r if r is not None else np.zeros(n), device=dev),
                             torch.as_tensor(rho if rho is not None else np.zeros(n), device=dev), geometry)
        s_sat = tables.saturation_scale()
    for start in range(0, T, step):
        sl = slice(start, min(start + step, T))
        U, tau, _, _ = system.test_side(X[sl], K)
        H = system.influence(U)
        A = H @ Pi
        c = pred[sl]
        if tier == "flip":
            flips, w = _flip_chunk(H, A, c, Pi, tau, m)
            extra[sl] = flips
            worst[sl] = w.cpu().numpy()
            certified[sl] = flips >= m
            continue
        H_pos, H_neg = H.clamp_min(0.0), (-H).clamp_min_(0.0)
        del H
        vals, _ = _rival_worst(H_pos, H_neg, A, c, tables, 1.0)
        w = vals.amin(dim=1)
        ok = w > tau
        worst[sl] = w.cpu().numpy()
        certified[sl] = ok.cpu().numpy()
        if radius:
            extra[sl] = _radius_scale(H_pos, H_neg, A, c, tables, tau, ok, s_sat, float(radius_rtol))
    if tier == "flip":
        return Certificate(tier=tier, engine="ridge-flip-exact", certified=certified, worst_case_margin=worst,
                           max_flips=extra, m=m, **common)
    engine = {"l1": "ridge-l1-exact", "kl": "ridge-kl-exact", "kl_l1": "ridge-kl_l1-bound"}[geometry]
    return Certificate(tier=tier, engine=engine, certified=certified, worst_case_margin=worst,
                       radius_scale=extra if radius else None, **common)
