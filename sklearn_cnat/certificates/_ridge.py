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
_CACHE_BYTES = 2**28  # gain tables kept between evaluations (256 MiB)
_LOG2_FLOOR = -20  # smallest budget scale tried by radius_scale: 2**-20
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


def _ridge_scores(F, coef, intercept):
    """Served scores ``F @ coef + intercept`` in a fixed, batch-invariant order.

    Each row's scores are ``fl(...fl(fl(b + fl(f_0 c_0)) + fl(f_1 c_1)) ... )``: elementwise
    IEEE products and sums accumulated over the features in index order, so a row's
    scores depend only on that row, never on the other rows evaluated with it (a BLAS
    product may change its blocking, and so its rounding, with the number of rows). This
    is what makes "the prediction ``predict(x)`` serves" a function of ``x`` alone, which
    the certificates speak of (docs/certificates.md, "Served predictions").

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
    coef : ndarray of shape (n_features, n_classes)
    intercept : ndarray of shape (n_classes,)

    Returns
    -------
    scores : ndarray of shape (n_samples, n_classes), float64
    """
    F = np.asarray(F, dtype=np.float64)
    coef = np.asarray(coef, dtype=np.float64)
    out = np.empty((F.shape[0], coef.shape[1]))
    step = max(1, 2**20 // max(coef.shape[1], 1))
    for start in range(0, F.shape[0], step):
        block = F[start:start + step]
        acc = np.broadcast_to(np.asarray(intercept, dtype=np.float64), (block.shape[0], coef.shape[1])).copy()
        for j in range(coef.shape[0]):
            acc += block[:, j:j + 1] * coef[j]
        out[start:start + step] = acc
    return out


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
        self.chol = torch.linalg.cholesky(A)
        eig = np.linalg.eigvalsh(A.cpu().numpy())  # LAPACK via numpy: much faster than torch's here
        lam_min, lam_max = float(eig[0]), float(eig[-1])
        # Norm-wise forms of the terms of section 5: with B = |Fc|^T |Fc| (entrywise >= 0),
        # || B |u| ||_2 <= ||B||_2 ||u||_2 <= ||Fc||_F^2 ||u||_2 and || |A| |u| || <= ||A||_F ||u||.
        fro2 = float((self.fc * self.fc).sum()) * (1 + _gamma(n * d))
        self.b_norm = fro2
        self.a_abs_norm = float(torch.linalg.matrix_norm(A)) * (1 + _gamma(d * d))
        self.lam_lo = max(alpha, lam_min - _gamma(n + 4) * fro2 - 4 * d * _EPS * lam_max)
        self.s_f = float(self.fc.norm(dim=1).sum()) * (1 + _gamma(n + d))
        self.d_mean = _gamma(n + 1) * float(F.abs().mean(dim=0).norm()) * (1 + _gamma(n + d))

    def test_side(self, X, n_classes):
        """``u_hat`` (T, d) and the allowance ``tau`` (T,) of (C15) with ``E_h`` and ``S``."""
        xc = X - self.f_mean
        U = torch.cholesky_solve(xc.T, self.chol).T
        resid = U @ self.A - xc
        n, d = self.n, self.d
        u_norm = U.norm(dim=1)
        xc_norm = xc.norm(dim=1)
        rho = (resid.norm(dim=1)
               + _gamma(d + 2) * (self.a_abs_norm * u_norm + xc_norm)
               + _gamma(n + 4) * self.b_norm * u_norm
               + self.d_mean + _EPS * xc_norm)
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

    ``slices(s, c)`` returns ``(gains, slopes, g_max)``: ``gains`` is (2n, K), rows
    ``0..n-1`` hold ``G(c -> b)`` (the gain used where ``h_i >= 0``) and rows ``n..2n-1``
    hold ``G(b -> c)`` (used where ``h_i < 0``), 0 in column ``c``; ``slopes`` are the
    matching slopes in ``s`` valid for the tangent lines (C8); ``g_max`` the largest.
    ``prefetch(keys)`` computes many ``(s, c)`` at once.
    Rows off the simplex by ``dev_i`` (at most ``_SIMPLEX_ATOL`` in l1) are handled
    soundly: with ``p' = pi / sum(pi)``, ``U_i`` lies in the l1 ball of radius
    ``r_i + dev_i`` and the KL ball of radius ``rho_i + max(log sum(pi_i), 0)`` around
    ``p'``, and the gains around ``pi`` and ``p'`` differ by at most ``dev_i``.
    """

    def __init__(self, pi, r, rho, geometry):
        self.geometry = geometry
        sums = pi.sum(dim=1, keepdim=True)
        self.pi = pi / sums
        self.dev = (pi - self.pi).abs().sum(dim=1, keepdim=True) + 4 * _EPS
        self.r = r[:, None]
        self.rho = rho[:, None]
        self.rho_extra = torch.log(sums).clamp_min(0.0)
        self._cache = OrderedDict()
        self._cache_size = self.capacity()
        self._breaks = {}

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

    def _gain(self, pa, pb, s, with_slopes=True):
        gains, slopes = [], []
        if self.geometry in ("l1", "kl_l1"):
            # second form of (C6): G(r s) = (r/2) [min(s, s1) + min(s, s2)], s1 = 2 pi_a / r,
            # s2 = 2 (1 - pi_b) / r; G is 1-Lipschitz in the radius, so the extra radius
            # dev_i adds at most dev_i.
            positive = self.r > 0
            safe = torch.where(positive, self.r, torch.ones_like(self.r))
            s1 = torch.where(positive, 2.0 * pa / safe, math.inf)
            s2 = torch.where(positive, 2.0 * (1.0 - pb).clamp_min(0.0) / safe, math.inf)
            half = 0.5 * self.r
            gains.append(half * (torch.minimum(s1, s) + torch.minimum(s2, s)) + self.dev)
            if with_slopes:  # generous right derivative: an upper bound, valid in (C8)
                slack = 1.0 + 1e-12
                slopes.append(half * ((s <= s1 * slack).to(pa.dtype) + (s <= s2 * slack).to(pa.dtype)))
            else:
                slopes.append(None)
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
            slope = torch.where(use_first, slopes[0], slopes[1]) if with_slopes else None
        return gain + self.dev, slope

    def capacity(self, slopes=False):
        """How many slices the cache keeps (about ``_CACHE_BYTES``, at least 4)."""
        n, K = self.pi.shape
        per_entry = (2 if slopes else 1) * 2 * n * K * self.pi.element_size()
        return max(4, _CACHE_BYTES // max(per_entry, 1))

    def prefetch(self, keys, slopes=False):
        """Compute and cache the slices of every ``(s, c)`` in ``keys`` not cached yet."""
        todo = [key for key in dict.fromkeys((float(s), int(c), slopes) for s, c in keys)
                if key not in self._cache]
        n, K = self.pi.shape
        self._cache_size = self.capacity(slopes)
        if self.geometry == "l1":
            for key in todo:
                self._store(key, self._l1_slice(*key))
            return
        batch = max(1, 2**22 // max(n * K, 1))
        for start in range(0, len(todo), batch):
            part = todo[start:start + batch]
            s = torch.tensor([key[0] for key in part], dtype=self.pi.dtype, device=self.pi.device)[:, None, None]
            cls = torch.tensor([key[1] for key in part], device=self.pi.device)
            pc = self.pi[:, cls].T[:, :, None].expand(len(part), n, K)
            pb = self.pi.expand(len(part), n, K)
            gp, dp = self._gain(pc, pb, s, slopes)
            gm, dm = self._gain(pb, pc, s, slopes)
            for j, key in enumerate(part):
                c = key[1]
                gains = torch.cat([gp[j], gm[j]])  # (2n, K): rows for h^+ then for h^-
                gains[:, c] = 0.0
                grad, g_max = None, 0.0
                if slopes:
                    grad = torch.cat([dp[j], dm[j]])
                    grad[:, c] = 0.0
                    g_max = float(grad.max()) if n else 0.0
                self._store(key, (gains, grad, g_max))

    def _l1_breakpoints(self, c):
        """Per class ``c``: ``(s1, s2, half, extra)`` of the second form of (C6), rows as in ``slices``."""
        if c not in self._breaks:
            positive = self.r > 0
            safe = torch.where(positive, self.r, torch.ones_like(self.r))
            inv = torch.where(positive, 2.0 / safe, math.inf)  # 2 / r (inf where r = 0)
            pc = self.pi[:, c:c + 1]
            pi_inv = torch.where(positive, 2.0 * self.pi / safe, math.inf)
            rest_inv = torch.where(positive, 2.0 * (1.0 - self.pi).clamp_min(0.0) / safe, math.inf)
            s1 = torch.cat([torch.where(positive, pc * inv, math.inf).expand(-1, self.pi.shape[1]), pi_inv])
            s2 = torch.cat([rest_inv, torch.where(positive, (1.0 - pc).clamp_min(0.0) * inv, math.inf)
                            .expand(-1, self.pi.shape[1])])
            half = torch.cat([0.5 * self.r, 0.5 * self.r])
            extra = torch.cat([2.0 * self.dev, 2.0 * self.dev])
            self._breaks[c] = (s1.contiguous(), s2.contiguous(), half, extra)
        return self._breaks[c]

    def _l1_slice(self, s, c, slopes):
        """l1 gains at scale ``s``: ``(r/2) [min(s, s1) + min(s, s2)] + 2 dev`` (C6)."""
        s1, s2, half, extra = self._l1_breakpoints(c)
        gains = torch.clamp(s1, max=s).add_(torch.clamp(s2, max=s)).mul_(half).add_(extra)
        gains[:, c] = 0.0
        if not slopes:
            return gains, None, 0.0
        slack = s / (1.0 + 1e-12)  # generous right derivative: an upper bound, valid in (C8)
        grad = ((s1 >= slack).to(gains.dtype) + (s2 >= slack).to(gains.dtype)).mul_(half)
        grad[:, c] = 0.0
        return gains, grad, float(grad.max()) if grad.numel() else 0.0

    def _store(self, key, value):
        self._cache[key] = value
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def slices(self, s, c, slopes=False):
        key = (float(s), int(c), slopes)
        if key not in self._cache:
            self.prefetch([key[:2]], slopes)
        self._cache.move_to_end(key)
        return self._cache[key]


# --------------------------------------------------------------------------- tiers


def _rival_worst(HH, A, pred, tables, s, rows=None, tau=None):
    """(C5) for every rival at per-point scales ``s``: values (T, K) and, given ``tau``, slopes.

    ``HH = [H^+, H^-]`` (T, 2n), so that (C5) is ``A_c - A_b - HH @ gains``. ``rows``
    selects the points (default all). Column ``pred`` is ``+inf`` (value) and 0 (slope).
    The slopes are ``sum_i |h_i| g_i + tau * g_max``: the tangent slope of (C8) plus an
    allowance for its rounding (``tau`` bounds ``2 (E_h + gamma S)``, so ``tau * g_max``
    bounds the error of ``sum_i |h_i| g_i``). Points are grouped by (scale, class): one
    matrix product per group.
    """
    if rows is None:
        rows = np.arange(A.shape[0])
    T, K = rows.size, A.shape[1]
    values = torch.empty((T, K), dtype=A.dtype, device=A.device)
    slopes = torch.zeros((T, K), dtype=A.dtype, device=A.device) if tau is not None else None
    s = np.broadcast_to(np.asarray(s, dtype=np.float64), (T,))
    pred_np = pred.cpu().numpy()[rows]
    keys = np.stack([s, pred_np.astype(np.float64)], axis=1)
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    block = tables.capacity(slopes=tau is not None)
    for g, (s_g, c) in enumerate(uniq):
        if g % block == 0:  # compute the next block of tables at once (bounded memory)
            tables.prefetch(uniq[g:g + block], slopes=tau is not None)
        local = np.flatnonzero(inverse == g)
        glob = torch.as_tensor(rows[local], device=A.device)
        local = torch.as_tensor(local, device=A.device)
        c = int(c)
        gains, grad, g_max = tables.slices(s_g, c, slopes=tau is not None)
        whole = glob.numel() == HH.shape[0] and bool((glob == torch.arange(HH.shape[0], device=A.device)).all())
        hh = HH if whole else HH[glob]
        values[local] = A[glob, c:c + 1] - A[glob] - hh @ gains
        if tau is not None:
            slopes[local] = hh @ grad + tau[glob, None] * g_max
    idx = torch.arange(T, device=A.device)
    pred_t = torch.as_tensor(pred_np, device=A.device)
    values[idx, pred_t] = math.inf
    if tau is not None:
        slopes[idx, pred_t] = 0.0
    return values, slopes


def _radius_scale(HH, A, pred, tables, tau, cert_at_one, s_sat, rtol):
    """Theorem 2: largest proven-certified budget scale per point, rounded down.

    Bisection on the grid ``2**(j / steps)`` with ``2**(1 / steps) <= 1 + rtol`` (scales
    shared by many points, so each step is a few matrix products; the grid point below
    ``s*`` is within ``1 + rtol`` of it), then one tangent step (C8) from that grid point,
    whose root is a proven-certified scale.
    """
    T = A.shape[0]
    tau_np = tau.cpu().numpy()
    radius = np.zeros(T)
    cert1 = cert_at_one.cpu().numpy().copy()
    if s_sat <= 0.0:  # every budget is zero: the scale does not matter
        radius[cert1] = math.inf
        return radius

    def worst(idx, s):
        return _rival_worst(HH, A, pred, tables, s, rows=idx)[0].amin(dim=1).cpu().numpy()

    steps = max(1, math.ceil(1.0 / math.log2(1.0 + rtol)))  # grid points per doubling
    k_sat = max(math.ceil(math.log2(s_sat)), 1) * steps
    k_floor = _LOG2_FLOOR * steps
    lo = np.where(cert1, 0, k_floor)
    hi = np.where(cert1, k_sat, 0)
    active = np.ones(T, dtype=bool)
    top = np.flatnonzero(cert1)
    if top.size:  # certified at saturation: certified at every scale
        ok = worst(top, 2.0 ** (k_sat / steps)) > tau_np[top]
        radius[top[ok]] = math.inf
        active[top[ok]] = False
    # galloping from s = 1 (radii are usually of order 1): 2**(+-1), 2**(+-2), 2**(+-4), ...
    up = active & cert1
    down = active & ~cert1
    jump = 1
    while up.any() or down.any():
        for side, sign in ((up, 1), (down, -1)):
            todo = np.flatnonzero(side)
            if not todo.size:
                continue
            e = np.clip(sign * jump * steps, k_floor, k_sat)
            ok = worst(todo, 2.0 ** (e / steps)) > tau_np[todo]
            if sign > 0:
                lo[todo[ok]] = e
                hi[todo[~ok]] = e
                side[todo[~ok]] = False
            else:
                hi[todo[~ok]] = e
                lo[todo[ok]] = e
                side[todo[ok]] = False
            side[todo] &= abs(e) < (k_sat if sign > 0 else -k_floor)
        jump *= 2
    floor_fail = active & ~cert1 & (hi == k_floor)
    active[floor_fail] = False  # not certified even at 2**_LOG2_FLOOR: radius stays 0
    while True:
        todo = np.flatnonzero(active & (hi - lo > 1))
        if not todo.size:
            break
        mid = (lo[todo] + hi[todo]) // 2
        ok = worst(todo, 2.0 ** (mid / steps)) > tau_np[todo]
        lo[todo] = np.where(ok, mid, lo[todo])
        hi[todo] = np.where(ok, hi[todo], mid)
    idx = np.flatnonzero(active)
    if not idx.size:
        return radius
    s_lo = 2.0 ** (lo[idx] / steps)
    s_hi = 2.0 ** (hi[idx] / steps)
    vals, slopes = _rival_worst(HH, A, pred, tables, s_lo, rows=idx, tau=tau)
    vals, slopes = vals.cpu().numpy(), slopes.cpu().numpy()
    t = tau_np[idx][:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        step = np.where(np.isfinite(vals) & (slopes > 0), (vals - t) / slopes, math.inf).min(axis=1)
    # tangent root: W >= tau there by (C8), i.e. certified (shrunk by 1e-9 for strictness);
    # beyond s_hi only through rounding, so it is capped at s_lo then
    proven = s_lo + (1 - 1e-9) * np.maximum(step, 0.0)
    radius[idx] = np.where(proven < s_hi, proven, s_lo)
    return radius


def _top_descending(x, k):
    """The ``k`` largest entries along the last axis, largest first (numpy on CPU: far
    faster than torch's sort/topk there)."""
    L = x.shape[-1]
    if x.device.type != "cpu":
        return torch.topk(x, min(k, L), dim=-1, sorted=True).values
    a = x.numpy()
    if k < L:
        a = np.partition(a, L - k, axis=-1)[..., L - k:]
    return torch.from_numpy(np.ascontiguousarray(np.sort(a, axis=-1)[..., ::-1]))


def _flip_chunk(H, A, pred, pi, tau, m):
    """Theorem 3 for a chunk: ``(max_flips, worst margin at m)`` per point.

    Only the rows with the largest ``|h_i|`` can hold the largest ``d_i`` ((C9):
    ``0 <= d_i <= 2 |h_i|``). For each point, ``d`` is evaluated on the ``L`` rows of
    largest ``|h_i|``; every other row has ``d_i <= beta = 2 |h|_(L+1)``, so the sorted
    prefix sums on those rows equal the exact ones up to the number ``valid`` of their
    entries ``>= beta`` (and never exceed the exact ones, so the count found on the
    subset bounds the exact count from above). ``L`` starts from an estimate (the count
    with every ``d_i`` replaced by its bound ``2 |h_i|`` is a lower bound) and grows for
    the points whose answer needs more, up to all ``n`` rows (then exact by construction).
    """
    T, n = H.shape
    K = pi.shape[1]
    dev = H.device
    max_flips = np.full(T, -2, dtype=np.int64)
    worst = torch.empty(T, dtype=H.dtype, device=dev)
    margin_all = A[torch.arange(T, device=dev), pred][:, None] - A
    own_all = torch.zeros_like(margin_all, dtype=torch.bool)
    own_all[torch.arange(T, device=dev), pred] = True
    margin_all[own_all] = math.inf
    abs_h = H.abs()
    cap = min(n, 4096)
    top_abs, order = torch.topk(abs_h, min(n, cap + 1), dim=1)  # sorted, largest first
    floor = 2 * torch.cumsum(top_abs[:, :cap], dim=1)  # prefix sums of the bound 2 |h_i|
    low = (margin_all.amin(dim=1, keepdim=True) - floor > tau[:, None]).sum(dim=1) + 1
    want = torch.clamp(16 * low, min=max(256, 8 * (m + 1)))
    sizes = torch.minimum(2 ** torch.ceil(torch.log2(want.double())).long(), torch.tensor(n)).cpu().numpy()
    todo = np.arange(T)
    while todo.size:
        next_todo, next_sizes = [], []
        for size in np.unique(sizes[todo]):
            size = int(size)
            group = todo[sizes[todo] == size]
            keep = n if size == n else max(m + 1, size // 4)  # prefix length examined
            sub = max(1, _CHUNK_ELEMENTS // max(size * K, 1))
            for start in range(0, group.size, sub):
                rows_np = group[start:start + sub]
                rows = torch.as_tensor(rows_np, device=dev)
                R = rows.numel()
                if size == n:
                    h = H[rows]
                    beta = torch.full((R,), -math.inf, dtype=H.dtype, device=dev)
                    pi_s = pi.expand(R, n, K)
                else:
                    if size <= cap:
                        support, beta = order[rows, :size], 2.0 * top_abs[rows, size]
                    else:
                        vals, support = torch.topk(abs_h[rows], size + 1, dim=1)
                        beta, support = 2.0 * vals[:, size], support[:, :size]
                    h = torch.gather(H[rows], 1, support)
                    pi_s = pi[support]  # (R, L, K)
                c = pred[rows]
                pi_c = torch.gather(pi_s, 2, c[:, None, None].expand(-1, pi_s.shape[1], 1))  # (R, L, 1)
                d = torch.addcmul(h.abs()[:, None, :], h[:, None, :], (pi_c - pi_s).transpose(1, 2))  # (C9)
                d.clamp_min_(0.0)
                valid = (d >= beta[:, None, None]).sum(-1)  # sorted prefix sums exact up to here
                top = _top_descending(d, min(keep, size))
                k = top.shape[-1]
                prefix = torch.cumsum(top, dim=-1)
                margin, own = margin_all[rows], own_all[rows]
                t = tau[rows][:, None]
                counts = (margin > t).to(torch.int64) + (margin[..., None] - prefix > t[..., None]).sum(-1)
                reach = torch.clamp(valid, max=k)
                exact = (counts <= reach) | own
                lower = torch.where(own, n + 2, torch.where(exact, counts, reach + 1))  # else count > reach
                best = lower.amin(dim=1)
                decided = (exact & (lower == best[:, None])).any(dim=1)
                if m == 0:
                    at_m, m_ok = margin, torch.ones_like(decided)
                elif m <= k:
                    at_m, m_ok = margin - prefix[..., m - 1], ((reach >= m) | own).all(dim=1)
                else:
                    at_m, m_ok = margin, torch.zeros_like(decided)
                done = decided & m_ok
                if size == n:  # every prefix sum is exact
                    done = torch.ones_like(done)
                    if m > n:
                        at_m = margin - prefix[..., -1]
                done_np = done.cpu().numpy()
                max_flips[rows_np[done_np]] = (best[done] - 1).cpu().numpy()
                worst[rows[done]] = at_m[done].amin(dim=1)
                if not done_np.all():
                    # the subset count bounds the exact one from above: aim for 8 times it
                    upper = torch.where(own, n + 2, counts).amin(dim=1)[~done].cpu().numpy()
                    grow = np.where(upper <= keep, 8 * (upper + 1), 4 * size)
                    next_todo.append(rows_np[~done_np])
                    next_sizes.append(np.minimum(n, np.maximum(grow, 2 * size)))
        if not next_todo:
            break
        todo = np.concatenate(next_todo)
        sizes[todo] = 2 ** np.ceil(np.log2(np.concatenate(next_sizes))).astype(np.int64)
        sizes[todo] = np.minimum(sizes[todo], n)
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
    # |v|^T |Y|^T W |Y| |v| <= ||W^(1/2) Y||_F^2 ||v||^2 and |v|^T |Gw| |v| <= ||Gw||_F ||v||^2
    bw_norm = float((w[:, None] * Y * Y).sum()) * (1 + _gamma(n * (system.d + 1)))
    gw_norm = float(torch.linalg.matrix_norm(Gw)) * (1 + _gamma(n + system.d + 1)) + _gamma(n) * bw_norm
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
        err = 2.0 * (_gamma(n + 4) * bw_norm + _gamma(2 * d + 4) * gw_norm) * (v * v).sum(dim=1)
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
                  scope="model", classes=None, chunk_size=None, device=None, radius=True, radius_rtol=0.1):
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
    radius_rtol : float, default=0.1
        Relative tolerance of ``radius_scale``: the reported value is proven certified
        (rounded down) and at least ``s* / (1 + radius_rtol)``; a tangent step (C8) makes it
        much closer in practice. Smaller values cost more (finer grid).

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
    scores = _ridge_scores(F_test, coef, intercept)
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
    step = chunk_size or max(1, 4 * _CHUNK_ELEMENTS // (2 * n))  # [h^+, h^-] of 512 MiB per chunk
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
        HH = torch.empty((H.shape[0], 2 * n), dtype=H.dtype, device=dev)  # [h^+, h^-] of (C5)
        torch.clamp(H, min=0.0, out=HH[:, :n])
        torch.clamp(H.neg_(), min=0.0, out=HH[:, n:])
        del H
        vals, _ = _rival_worst(HH, A, c, tables, 1.0)
        w = vals.amin(dim=1)
        ok = w > tau
        worst[sl] = w.cpu().numpy()
        certified[sl] = ok.cpu().numpy()
        if radius:
            extra[sl] = _radius_scale(HH, A, c, tables, tau, ok, s_sat, float(radius_rtol))
    if tier == "flip":
        return Certificate(tier=tier, engine="ridge-flip-exact", certified=certified, worst_case_margin=worst,
                           max_flips=extra, m=m, **common)
    engine = {"l1": "ridge-l1-exact", "kl": "ridge-kl-exact", "kl_l1": "ridge-kl_l1-bound"}[geometry]
    return Certificate(tier=tier, engine=engine, certified=certified, worst_case_margin=worst,
                       radius_scale=extra if radius else None, **common)
