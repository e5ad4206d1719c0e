"""Exact certificates for the ridge head (docs/certificates.md, Theorems 1-5).

The ridge head's scores are linear in the training label matrix (Lemma 0, (C1)):
``s_k(x) = sum_i h_i(x) Q_ik``. Every tier reduces to sums over training rows of
``h_i`` times per-row quantities. Section 5 of docs/certificates.md is the floating-point
part, and this module follows it step by step:

* the problem is rescaled exactly, column by column, by powers of two (the exact learner is
  unchanged, Lemma 5.1), so the arithmetic runs far from underflow and overflow and every
  error bound is taken in equilibrated coordinates (Proposition 5);
* each test point's ``u_hat ~ A^{-1} (x - Fbar)`` and its rounding allowance ``tau`` (C15)
  are computed by a fixed-order procedure on that point alone (numpy, elementwise IEEE
  operations), so they are functions of the point;
* the batched products (torch) that give the worst-case margins carry a proven error bound
  ``R`` valid for any summation order; a decision ``w > tau`` whose batched value lies
  within ``2 R`` of ``tau`` is re-evaluated by the per-point procedure, so every decision
  equals the per-point one whatever the batch (Proposition 6).

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
_ETA = 2.0**-1074  # smallest subnormal: bounds the absolute error of one underflowing product/quotient
_UP = 1.0 + 2.0**-40  # covers the rounding of evaluating a bound formula (fewer than 2**10 roundings)
_G_MAX = 2.0 + 1e-5  # every gain (C4) used is <= 2 + dev_i (rows of pi within 1e-6 of the simplex)
_LIP = 3.0 + 2e-5  # every margin used is _LIP-Lipschitz in h for the l1 norm: |a_i| + g_i
_SAFETY = 2.0  # the allowance is twice the proven bound (section 5)
_TIERS = ("bounded", "flip", "stochastic")
_GEOMETRIES = ("l1", "kl", "kl_l1")
_SCOPES = ("model", "head")
_REFERENCES = ("expected", "reannotation")
_SIMPLEX_ATOL = 1e-6
_MODE_ATOL = 1e-9
_CHUNK_ELEMENTS = 2**24  # float64 elements per working tensor (128 MiB)
_POINT_BLOCK = 2**16  # float64 elements per array of the per-point procedure (512 KiB: in cache)
_CACHE_BYTES = 2**28  # gain tables kept between evaluations (256 MiB)
_LOG2_FLOOR = -20  # smallest budget scale tried by radius_scale: 2**-20
_KL_BISECTIONS = 30


def _gamma(count):
    """``gamma_N = N u / (1 - N u)`` (Higham's constant for N roundings)."""
    nu = count * _EPS
    return nu / (1.0 - nu) if nu < 0.5 else math.inf


# --------------------------------------------------------------------------- the learner


def _fit_exponent(F, alpha):
    """``k`` with ``max |2^k F|`` in ``[1/2, 1)`` when ``(2^k F, 4^k alpha)`` is exact, else 0."""
    if F.size == 0:
        return 0
    top = float(np.max(np.abs(F)))
    if not (top > 0.0 and math.isfinite(top)):
        return 0
    k = -math.frexp(top)[1]
    if k == 0:
        return 0
    scaled_alpha = float(np.ldexp(alpha, 2 * k))
    if not 0.0 < scaled_alpha < math.inf or float(np.ldexp(scaled_alpha, -2 * k)) != alpha:
        return 0
    if not np.array_equal(np.ldexp(np.ldexp(F, k), -k), F):
        return 0
    return k


def _ridge_fit(F, Q, alpha, sample_weight=None):
    """Ridge head with the semantics of ``Ridge(alpha, fit_intercept=True)`` on ``(F, Q)``.

    With ``sample_weight`` it is ``Ridge(alpha).fit(F, Q, sample_weight=w)``: weighted
    centring and the weighted normal equations (C30) of docs/certificates.md, section 9.

    The system is solved on ``(2^k F, 4^k alpha)`` with ``2^k`` the power of two that brings
    the largest feature into ``[1/2, 1)``, when that rescaling is exact: it is the same
    learner (``coef`` scales by ``2^k``, the scores not at all, Lemma 5.1 of
    docs/certificates.md), the floating-point operations are the same ones scaled (so the
    result is unchanged wherever nothing under- or overflows), and features of any scale
    stay out of subnormal arithmetic.

    Parameters
    ----------
    F : ndarray of shape (n_samples, n_features)
    Q : ndarray of shape (n_samples, n_classes)
    alpha : float
        Regularisation, ``> 0``.
    sample_weight : ndarray of shape (n_samples,) or None, default=None
        Row weights ``>= 0`` with a positive sum (validated by the caller).

    Returns
    -------
    coef : ndarray of shape (n_features, n_classes)
    intercept : ndarray of shape (n_classes,)
        Scores are ``X @ coef + intercept`` (equation (C0), weighted: (C30)).
    """
    F = np.asarray(F, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    alpha = float(alpha)
    k = _fit_exponent(F, alpha)
    if k:
        F, alpha = np.ldexp(F, k), float(np.ldexp(alpha, 2 * k))
    if sample_weight is None:
        f_mean = F.mean(axis=0)
        q_mean = Q.mean(axis=0)
        Fc = F - f_mean
        gram = Fc.T @ Fc
        rhs = Fc.T @ (Q - q_mean)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
        f_mean = (w @ F) / w.sum()
        q_mean = (w @ Q) / w.sum()
        Fc = F - f_mean
        wFc = Fc * w[:, None]
        gram = wFc.T @ Fc
        gram = np.tril(gram) + np.tril(gram, -1).T
        rhs = wFc.T @ (Q - q_mean)
    gram[np.diag_indices_from(gram)] += alpha
    coef = scipy.linalg.cho_solve(scipy.linalg.cho_factor(gram, lower=True), rhs)
    intercept = q_mean - f_mean @ coef
    if k:
        coef = np.ldexp(coef, k)
    return coef, intercept


def _ridge_scores(F, coef, intercept):
    """Served scores ``F @ coef + intercept`` in a fixed, batch-invariant order.

    Each row's scores are ``fl(...fl(fl(b + fl(f_0 c_0)) + fl(f_1 c_1)) ... )``: elementwise
    IEEE products and sums accumulated over the features in index order, so a row's scores
    depend only on that row, never on the other rows evaluated with it (a BLAS
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


# --------------------------------------------------------------------------- the system (section 5)


def _row_sum_norm(M, count):
    """Upper bound of ``||M'||_2`` for every symmetric ``M'`` with ``|M'| <= M`` entrywise
    (``M >= 0``): the largest row sum of ``max(M, M^T)`` (its ``inf``-norm), inflated for
    the ``count`` roundings of each sum. (A computed product such as ``|L| |L|^T`` need not
    be exactly symmetric.)"""
    if M.size == 0:
        return 0.0
    return float(np.maximum(M, M.T).sum(axis=1).max()) * (1.0 + 2.0 * _gamma(count)) * _UP


def _column_exponents(F, alpha):
    """Per-column ``k_j`` with ``4^k_j (||fc_j||^2 + alpha)`` in ``[1/2, 2]`` (Jacobi scaling).

    Any integers are valid (Lemma 5.1); these equilibrate the diagonal of ``A``. Computed
    in a pre-scaled copy and in the log domain, so that nothing under- or overflows.
    """
    top = np.max(np.abs(F), axis=0)
    e = np.frexp(top)[1].astype(np.int64)
    if np.all(np.abs(e) < 400):  # squares and their sums cannot under- or overflow: no copy needed
        e = np.zeros_like(e)
        F1 = F
    else:
        F1 = np.ldexp(F, -e)
    fc1 = F1 - F1.mean(axis=0)
    g1 = np.einsum("ij,ij->j", fc1, fc1)
    with np.errstate(divide="ignore"):
        log_g = np.log2(g1)
    log_s = np.logaddexp2(log_g, math.log2(alpha) - 2.0 * e)
    return (-e - np.round(log_s / 2.0)).astype(np.int64)


def _normalised_weights(w, alpha):
    """``(2^j w, 2^j alpha)`` with the mean weight in ``[1/2, 1)`` when exact, else ``(w, alpha)``.

    Scaling the weights and ``alpha`` together leaves the learner (C29) unchanged
    (docs/certificates.md, section 9); a power of two is exact unless something underflows.
    """
    w = np.asarray(w, dtype=np.float64)
    e = math.frexp(float(w.max()))[1]  # 2^-e w < 1: the sum below cannot overflow
    mean = math.fsum(np.ldexp(w, -e).tolist()) / w.shape[0]
    j = -e - math.frexp(mean)[1]
    if j == 0:
        return w, alpha
    ws, a = np.ldexp(w, j), float(np.ldexp(alpha, j))
    if (not np.all(np.isfinite(ws)) or not np.array_equal(np.ldexp(ws, -j), w) or not 0.0 < a < math.inf
            or float(np.ldexp(a, -j)) != alpha):
        return w, alpha
    return ws, a


def _column_sums(M, small, b):
    """Column sums of ``M`` (n, d): correctly rounded (``math.fsum``, to 1 ulp where a libm
    double-rounds) when ``small``, else blocks of ``b`` rows summed then accumulated in row order
    (the centring sums of docs/certificates.md, section 5.2)."""
    if small:
        return np.array([math.fsum(col) for col in M.T.tolist()])
    total = np.zeros(M.shape[1])
    for start in range(0, M.shape[0], b):
        total = total + M[start:start + b].sum(axis=0)
    return total


class _RidgeSystem:
    """Training side of the ridge learner and of the rounding allowance (section 5).

    Works on the exactly rescaled problem (Lemma 5.1): constant feature columns are
    dropped (they do not enter ``h``), column ``j`` is multiplied by ``2^k_j`` and
    ``alpha`` becomes ``lam_j = 4^k_j alpha``. Holds the centred features ``Fc_hat``, the
    Cholesky factor ``L`` of ``B_hat = fl(Fc_hat^T Fc_hat) + diag(lam)`` and the constants of
    Proposition 5: the entrywise bound ``E_B`` of ``|B - B_hat|`` (its norm), a verified
    lower bound ``lam_lo`` of ``lambda_min(B)``, column sums ``c`` of ``|Fc_hat|``, ...

    With ``sample_weight`` the weighted learner (C29)-(C31) and the weighted allowance of
    docs/certificates.md, section 9 ((C32), (C33)): ``w`` (normalised), ``s_hat = fsum(w)``,
    ``mass >= S`` takes the place of ``n`` in the sums over rows of ``|h|``, and ``c`` holds
    the weighted column sums ``|Fc_hat|^T w``.
    """

    def __init__(self, F, alpha, device, sample_weight=None):
        self.device = device
        F = np.asarray(F, dtype=np.float64)
        n, d_all = F.shape
        self.n, self.d_all = n, d_all
        w = None
        if sample_weight is not None:
            w, alpha = _normalised_weights(sample_weight, alpha)
            try:
                self.s_hat = math.fsum(w.tolist())  # correctly rounded: |s_hat - S| <= u S
            except OverflowError:
                self.s_hat = math.inf
            if not 0.0 < self.s_hat < math.inf:
                raise CertificationError("sample_weight cannot be brought into the float64 range by a power of "
                                         "two (its sum overflows or its entries underflow); rescale the weights")
        self.w = w
        self.mass = n if w is None else self.s_hat * (1 + 2 * _EPS) * _UP  # >= S (n unweighted)
        self.rh_extra = 0 if w is None else 3  # E_rh: gamma_{d+1} -> gamma_{d+4} (section 9, (ii))
        keep = ~np.all(F == F[:1], axis=0) if n else np.zeros(d_all, dtype=bool)
        self.keep = np.flatnonzero(keep)
        Fk = F[:, self.keep]
        d = self.d = Fk.shape[1]
        self.k = _column_exponents(Fk, alpha) if d else np.zeros(0, dtype=np.int64)
        Fs = np.ldexp(Fk, self.k)
        bad = ~np.all(np.isfinite(Fs) & (np.ldexp(Fs, -self.k) == Fk), axis=0)
        if bad.any():
            j = int(self.keep[np.argmax(bad)])
            raise CertificationError(
                f"F_train column {j} spans more than the float64 exponent range relative to its spread and "
                "alpha: its exact rescaling by a power of two (docs/certificates.md, section 5) would "
                "underflow or overflow some entries, so the ridge system cannot be certified")
        lam = np.ldexp(alpha, 2 * self.k)
        if not np.all(np.isfinite(lam)):
            raise CertificationError("alpha overflows after the exact rescaling of the features "
                                     "(alpha / ||Fc_j||^2 beyond the float64 range)")
        self.lam = lam
        self.dlam = np.where(np.ldexp(lam, -2 * self.k) == alpha, 0.0, _ETA)  # lam rounded when subnormal
        g1 = _gamma(1)
        # centring, two passes (C16): |fbar_hat - fbar| <= delta. The second pass sums exactly
        # (math.fsum) when that is cheap, else by blocks of sqrt(n) rows (sums of <= mlen terms).
        small = n * d <= 2**22
        b = max(1, math.isqrt(n))
        self.mlen = 2 if small else b + -(-n // b)
        if w is not None:
            fbar, self.delta = self._weighted_centre(Fs, w, small, b)
        elif n:
            fb0 = Fs.mean(axis=0)
            r0 = Fs - fb0
            corr = _column_sums(r0, small, b) / n
            fbar = fb0 + corr
            mean_abs = np.abs(r0).mean(axis=0)
            del r0
        else:
            fbar = mean_abs = corr = np.zeros(d)
        if w is None:
            self.delta = (g1 * np.abs(fbar) + _gamma(self.mlen + 2) * (mean_abs * (1 + 2 * _gamma(n))
                                                                       + np.abs(corr)) + _ETA) * _UP
        self.fbar = fbar
        fc = Fs - fbar
        self.fc = fc
        self._fcT = None
        self.fc_t = torch.as_tensor(fc, device=device)
        # Gram matrix by blocks of b rows: entries are sums of <= b + m rounded terms (C17)
        b = max(1, math.isqrt(n)) if n * d * d <= 2**30 else max(1024, math.isqrt(n))
        gram = torch.zeros((d, d), dtype=torch.float64)
        fc_cpu = torch.as_tensor(fc)
        left = fc_cpu if w is None else torch.as_tensor(fc * w[:, None])  # fl(w_i fc_i): (C33)
        for start in range(0, n, b):
            blk = fc_cpu[start:start + b]
            gram = gram + left[start:start + b].T @ blk
        gram = gram.numpy()
        if w is not None:  # a computed entry for both triangles: B_hat symmetric, each entry bounded by (C33)
            gram = np.tril(gram) + np.tril(gram, -1).T
        self.glen = min(n, b) + -(-n // b)
        g_gram = _gamma(self.glen) if w is None else _gamma(self.glen + 1)
        B = gram.copy()
        B[np.diag_indices(d)] += lam
        self.B = B
        absfc = np.abs(fc)
        mass = self.mass
        if w is None:
            c_hat = absfc.sum(axis=0)
            self.c_up = c_hat * (1 + 2 * _gamma(n)) * _UP  # >= sum_i |fc_hat_ij|
            under = 0.0
        else:
            self.c_up = (w @ absfc) * (1 + 2 * _gamma(n + 1)) * _UP + n * _ETA  # >= |Fc_hat|^T w
            c_max = float(absfc.sum(axis=0).max()) * (1 + 2 * _gamma(n)) * _UP if d else 0.0
            under = (_ETA * c_max + 2 * n * _ETA) * _UP  # underflow of the products w_i fc_ij in the Gram
        self.c_norm = float(np.linalg.norm(self.c_up * (1 + g1) + mass * self.delta)) * _UP  # >= ||c'||_2
        absfc_t = torch.as_tensor(absfc)
        if w is None:
            P_up = (absfc_t.T @ absfc_t).numpy() * (1 + 2 * _gamma(n)) + n * _ETA  # >= |Fc_hat|^T |Fc_hat|
        else:
            wabs_t = torch.as_tensor(absfc * w[:, None])
            P_up = (wabs_t.T @ absfc_t).numpy() * (1 + 2 * _gamma(n + 1)) + 2 * n * _ETA  # >= |Fc_hat|^T D |Fc_hat|
            P_up = np.maximum(P_up, P_up.T)
        self.p_norm = _row_sum_norm(P_up, d)
        E = ((g_gram + 2 * g1 + g1 * g1) * P_up
             + (1 + g1) * (np.outer(self.delta, self.c_up) + np.outer(self.c_up, self.delta))
             + mass * np.outer(self.delta, self.delta) + 2 * n * _ETA)
        if w is not None:
            E = E + under
        E[np.diag_indices(d)] += g1 * np.diag(B) + self.dlam
        self.eb_norm = _row_sum_norm(E, d)  # >= ||B - B_hat||_2
        self.bmax = float(np.diag(B).max()) if d else 0.0
        if d:
            L, info = torch.linalg.cholesky_ex(torch.as_tensor(B))
            if int(info) != 0 or not bool(torch.isfinite(L).all()):
                raise CertificationError(
                    "the ridge system Fc^T Fc + alpha I is numerically singular in float64 (alpha is too "
                    "small relative to these features); certify with a larger alpha")
            self.L = L.numpy()
        else:
            self.L = np.zeros((0, 0))
        absL = np.abs(self.L)
        self.ll_norm = _row_sum_norm(absL @ absL.T, d)  # >= || |L||L^T| ||_2
        l_max = float(absL.max()) if d else 0.0
        # underflow in the substitutions: per-component residual slack; in the factorisation:
        # (d + l) eta per entry of L L^T - B_hat, i.e. at most uf * ||u||_2 in norm (section 5.2)
        self.slack = 2.0 * (d + l_max) * (1.0 + d * l_max) * _ETA * _UP
        self.slack_norm = math.sqrt(d) * self.slack * _UP
        self.uf = 2.0 * d * (d + l_max) * _ETA
        self.dx_norm = float(np.linalg.norm(self.delta + _ETA)) * _UP
        self.kappa = (_gamma(3 * d + 1) * self.ll_norm + g_gram * self.p_norm + g1 * self.bmax
                      + 2 * n * d * _ETA + self.uf + d * under) * _UP
        # (C20)/(section 9, (ii)): absolute underflow part of E_rh
        self.rh_eta = n * (d + 1) * _ETA if w is None else (mass * (d + 1) + n) * _ETA * _UP
        self._w_t = None if w is None else torch.as_tensor(w, device=device)
        self.lam_lo = self._lambda_lower(B, lam)

    def _weighted_centre(self, Fs, w, small, b):
        """Weighted mean ``Fbar_hat`` and its error bound ``delta_w`` of (C32)."""
        n = Fs.shape[0]
        s_hat = self.s_hat
        fb0 = (w @ Fs) / s_hat  # a pivot: any vector is exact in (C32)
        r0 = Fs - fb0
        corr = _column_sums(r0 * w[:, None], small, b) / s_hat
        fbar = fb0 + corr
        wabs = (w @ np.abs(r0)) * (1 + 2 * _gamma(n + 1)) * _UP + n * _ETA  # >= sum_i w_i |R0_i|
        delta = (_gamma(1) * np.abs(fbar) + _gamma(self.mlen + 4) * (wabs / s_hat + np.abs(corr))
                 + 2 * n * _ETA / s_hat + 2 * _ETA) * _UP
        return fbar, delta

    def _lambda_lower(self, B, lam):
        """Verified lower bound of ``lambda_min`` of the exact ``B`` (Lemma 5.3)."""
        d = self.d
        if not d:
            return math.inf
        floor = max(0.0, float(np.min(lam - self.dlam)) * (1 - 2.0**-40))  # B >= diag(lam)
        verified = -math.inf
        guess = float(np.linalg.eigvalsh(B)[0])
        g = _gamma(d + 1)
        for f in (0.9, 0.5, 0.1, 0.01):
            mu = f * guess
            if not mu > 0.0:
                break
            C = B.copy()
            C[np.diag_indices(d)] -= mu
            diag = np.diag(C)
            if not np.all(diag > 0):
                continue
            _, info = torch.linalg.cholesky_ex(torch.as_tensor(C))
            if int(info) == 0:
                loss = (g / (1 - g) * float(diag.sum()) * (1 + 2 * _gamma(d)) + _gamma(1) * float(diag.max())) * _UP
                verified = (mu - loss - 8.0 * d * d * _ETA - self.eb_norm) * (1 - 2.0**-40)
                break
        return max(floor, verified)

    # ----------------------------------------------------------------------- test side

    def _solve(self, xc):
        """``L L^T u = xc`` by forward then back substitution, columns of ``xc`` (d, t) being
        points: elementwise IEEE operations in a fixed order, so each column's result
        depends on that column alone."""
        L, d = self.L, self.d
        u = xc.copy()
        for j in range(d):
            u[j] /= L[j, j]
            if j + 1 < d:
                u[j + 1:] -= L[j + 1:, j:j + 1] * u[j]
        for j in range(d - 1, -1, -1):
            u[j] /= L[j, j]
            if j:
                u[:j] -= L[j, :j, None] * u[j]
        return u

    def canonical(self, X):
        """Per-point ``u_hat`` (T, d), ``E_model``, ``E_rh``, ``S_up`` (T,) of Proposition 5.

        ``X`` holds unscaled test features (T, d_all). Everything is computed point by point
        in a fixed order (elementwise numpy operations), so each row is a function of that
        point alone. ``E_model >= ||h - h*||_1`` (``h`` exact, ``h* = Fc_hat u_hat + 1/n``
        exact), ``E_rh >= ||h_hat - h*||_1`` for ``h_hat`` computed in any summation order,
        ``S_up >= sum_i |h*_i|``.
        """
        X = np.asarray(X, dtype=np.float64)
        T = X.shape[0]
        n, d = self.n, self.d
        U = np.empty((T, d))
        e_model, e_rh, s_up = np.empty(T), np.empty(T), np.empty(T)
        step = max(1, _POINT_BLOCK // max(d, 1))
        gd = 1 + 2 * _gamma(d + 1)
        g1 = _gamma(1)
        sqrt_lam = math.sqrt(self.lam_lo) if math.isfinite(self.lam_lo) else math.inf
        for start in range(0, T, step):
            sl = slice(start, start + step)
            with np.errstate(over="ignore"):
                Xs = np.ldexp(X[sl][:, self.keep], self.k)
            if not np.all(np.isfinite(Xs)):
                j = int(self.keep[np.argmax(~np.all(np.isfinite(Xs), axis=0))])
                raise CertificationError(
                    f"F_test column {j} overflows after the exact rescaling of the features (its values exceed "
                    "the training features' spread by more than the float64 range): h(x) would overflow")
            xc = np.ascontiguousarray((Xs - self.fbar).T)  # (d, t)
            with np.errstate(over="ignore", invalid="ignore"):
                u = self._solve(xc)
            if not np.all(np.isfinite(u)):
                raise CertificationError(
                    "u = A^{-1} (x - Fbar) overflows in float64 (alpha far too small for these features, or "
                    "test points far outside the training features); the allowance would be NaN")
            t = xc.shape[1]
            s_uu, s_cu, s_du, s_xx = np.zeros(t), np.zeros(t), np.zeros(t), np.zeros(t)
            s_ux, s_uax, s_lu, s_au = np.zeros(t), np.zeros(t), np.zeros(t), np.zeros(t)
            for j in range(d):  # sequential sums over the features: a fixed order
                uj, xj = u[j], xc[j]
                au = np.abs(uj)
                uu = uj * uj
                s_uu += uu
                s_cu += self.c_up[j] * au
                s_du += self.delta[j] * au
                s_xx += xj * xj
                s_ux += uj * xj
                s_uax += au * np.abs(xj)
                s_lu += self.lam[j] * uu
                s_au += au
            nu = np.sqrt(s_uu * gd) * _UP  # >= ||u_hat||_2
            nxc = np.sqrt(s_xx * gd) * _UP  # >= ||xc_hat||_2
            cu = s_cu * gd * _UP  # >= c^T |u_hat|
            # (C18) residual ||B u_hat - xc||_2 of the exact system
            rho = ((_gamma(3 * d + 1) * self.ll_norm + self.eb_norm + self.uf) * nu + g1 * nxc + self.dx_norm
                   + self.slack_norm) * _UP
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                e_s = np.minimum(math.sqrt(self.mass) * rho / sqrt_lam, self.c_norm * rho / self.lam_lo)
            e_s = np.where(rho > 0, e_s, 0.0) * _UP  # (C19) >= ||Fc (u - u_hat)||_1
            e_c = (g1 * cu + self.mass * s_du * gd) * _UP  # (C20) centring
            e_model[sl] = (e_s + e_c) * _UP
            e_rh[sl] = (_gamma(d + 1 + self.rh_extra) * (cu + 1.0) + self.rh_eta) * _UP
            # (C21) ||Fc_hat u_hat||_2^2 <= u^T xc - u^T diag(lam) u + kappa ||u||^2 (+ rounding)
            q_pos = s_ux + _gamma(d) * s_uax * gd + self.kappa * nu * nu + s_au * gd * self.slack
            q_neg = s_lu * (1 - 2 * _gamma(d + 1))
            q = q_pos - q_neg + 4 * _EPS * (np.abs(q_pos) + q_neg)
            s_up[sl] = (1.0 + np.minimum(cu, np.sqrt(self.mass * np.maximum(q, 0.0)) * (1 + 4 * _EPS))) * _UP
            U[sl] = u.T
        for name, arr in (("E_model", e_model), ("E_rh", e_rh), ("S", s_up)):
            if np.isnan(arr).any():
                raise CertificationError(f"the rounding allowance is NaN ({name}); please report this input")
        return U, e_model, e_rh, s_up

    def influence(self, U):
        """Rows ``h_hat(x)`` of (C1) for the test points whose ``u_hat`` are the rows of ``U``
        (torch, any summation order: within ``E_rh`` of ``h*``); weighted: (C31)."""
        if self.w is None:
            return U @ self.fc_t.T + 1.0 / self.n
        return (U @ self.fc_t.T + 1.0 / self.s_hat) * self._w_t

    def point_influence(self, u):
        """``h_hat`` for one point: products and sums over the features in index order."""
        if self._fcT is None:
            self._fcT = np.ascontiguousarray(self.fc.T)
        acc = np.zeros(self.n)
        for j in range(self.d):
            acc += self._fcT[j] * u[j]
        if self.w is None:
            return acc + 1.0 / self.n
        return (acc + 1.0 / self.s_hat) * self.w

    def test_side(self, X, n_classes):
        """``u_hat`` (T, d), the bounded-tier allowance ``tau`` (T,), ``E_model`` and ``S_up``
        (torch, on the system's device) for test features ``X`` (T, d_all)."""
        X = X.cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X, dtype=np.float64)
        U, e_model, e_rh, s_up = self.canonical(X)
        tau, _ = _allowance("bounded", self.n, e_model, e_rh, s_up)
        as_t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return as_t(U), as_t(tau), as_t(e_model), as_t(s_up)


def _allowance(tier, n, e_model, e_rh, s_up):
    """``(tau, R)`` of (C15): ``tau`` bounds (twice) the error of a decision's margin, ``R``
    the difference between any evaluation of it and the exact one at ``u_hat``."""
    s_hat = (s_up + e_rh) * _UP  # >= sum_i |h_hat_i|
    if tier == "flip":
        R = (_LIP * e_rh + 8.0001 * _gamma(2 * n + 6) * s_hat) * _UP
    else:
        R = (_LIP * e_rh + (1.0 + 2e-6 + _G_MAX) * _gamma(2 * n + 4) * s_hat) * _UP
    tau = _SAFETY * (_LIP * e_model + R) * _UP
    return tau, R


def _ridge_influence(F_train, F_test, alpha, chunk_size=None, sample_weight=None):
    """Yield chunks of the influence matrix ``H`` with ``H @ Q`` = ridge scores (C1), weighted: (C31).

    Uses a ``d x d`` Cholesky solve, never an ``n x n`` system.

    Parameters
    ----------
    F_train : ndarray of shape (n_train, d)
    F_test : ndarray of shape (n_test, d)
    alpha : float
    chunk_size : int or None
        Test rows per chunk (``None``: about 2**24 entries per chunk).
    sample_weight : ndarray of shape (n_train,) or None
        Row weights (section 9 of docs/certificates.md).

    Yields
    ------
    H : ndarray of shape (n_chunk, n_train)
    """
    system = _RidgeSystem(F_train, float(alpha), torch.device("cpu"), sample_weight=sample_weight)
    X = np.asarray(F_test, dtype=np.float64)
    step = chunk_size or max(1, _CHUNK_ELEMENTS // max(system.n, 1))
    for start in range(0, X.shape[0], step):
        U = system.canonical(X[start:start + step])[0]
        yield system.influence(torch.as_tensor(U)).numpy()


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
        """Compute and cache the slices of every ``(s, c)`` in ``keys`` not cached yet.

        Each table is computed on its own, with the same shapes whatever the other keys, so its
        values (KL: transcendental functions, whose vectorised and scalar code paths may differ
        in the last bit) are a function of ``(s, c)`` alone (Proposition 6).
        """
        todo = [key for key in dict.fromkeys((float(s), int(c), slopes) for s, c in keys)
                if key not in self._cache]
        n, K = self.pi.shape
        self._cache_size = self.capacity(slopes)
        if self.geometry == "l1":
            for key in todo:
                self._store(key, self._l1_slice(*key))
            return
        batch = 1  # one (s, c) at a time: a table's values never depend on which others are computed
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


# --------------------------------------------------------------------------- per-point decisions


def _seq_dot(v, M):
    """``v @ M`` with products and sums in index order (one point: a fixed order)."""
    if v.size == 0:
        return np.zeros(M.shape[1])
    return np.add.accumulate(v[:, None] * M, axis=0)[-1]


class _PointEval:
    """The per-point procedure of Proposition 6 for the points of one chunk.

    ``h_hat`` of a point from its ``u_hat`` (products and sums over the features in index
    order), then its margins with sums over the training rows in index order (numpy,
    elementwise): every value depends on that point alone. Used only where a batched
    value lies within ``2 R`` of the allowance.
    """

    def __init__(self, system, U, pred, pi, tables=None, free=None):
        self.system, self.U, self.pred, self.pi, self.tables = system, U, pred, pi, tables
        self.free = free
        self._h, self._scores, self._gains = {}, {}, {}

    def h(self, t):
        if t not in self._h:
            self._h[t] = self.system.point_influence(self.U[t])
        return self._h[t]

    def scores(self, t):
        if t not in self._scores:
            self._scores[t] = _seq_dot(self.h(t), self.pi)
        return self._scores[t]

    def gains(self, s, c):
        key = (float(s), int(c))
        if key not in self._gains:
            self._gains[key] = self.tables.slices(*key)[0].cpu().numpy()
        return self._gains[key]

    def bounded(self, t, s):
        """(C5) minimised over rivals at budget scale ``s``."""
        c = int(self.pred[t])
        h = self.h(t)
        hh = np.concatenate([np.maximum(h, 0.0), np.maximum(-h, 0.0)])
        V = _seq_dot(hh, self.gains(s, c))
        A = self.scores(t)
        vals = (A[c] - A) - V
        vals[c] = math.inf
        return float(vals.min())

    def flip(self, t, tau, m):
        """``(max_flips, worst margin at m)`` of Theorem 3 with a full sort."""
        c = int(self.pred[t])
        h, A = self.h(t), self.scores(t)
        n, K = self.pi.shape
        counts, at_m = [], []
        for b in range(K):
            if b == c:
                continue
            dd = np.maximum(np.abs(h) + h * (self.pi[:, c] - self.pi[:, b]), 0.0)  # (C9)
            if self.free is not None:
                dd = np.where(self.free, dd, 0.0)  # held rows never change (Proposition 8.1)
            prefix = np.add.accumulate(-np.sort(-dd))
            M = A[c] - A[b]
            w = np.concatenate([[M], M - prefix])
            counts.append(int(np.sum(w > tau)))
            at_m.append(w[min(m, n)])
        return min(counts) - 1, float(min(at_m))


def _resolve(w_fast, tau, band, evaluate):
    """Decisions ``w > tau`` equal to the per-point ones (Proposition 6).

    ``w_fast`` (batched) is within ``band = 2 R`` of the per-point value: outside the band
    it decides; inside, ``evaluate(i)`` gives the per-point value of entry ``i``. Returns
    ``(decisions, values)``.
    """
    w_fast = np.asarray(w_fast, dtype=np.float64)
    if np.isnan(w_fast).any() or np.isnan(tau).any() or np.isnan(band).any():
        raise CertificationError("NaN in a worst-case margin or its allowance (features or alpha out of "
                                 "the float64 range); please report this input")
    ok = w_fast > tau + band
    values = w_fast.copy()
    for i in np.flatnonzero(~ok & (w_fast > tau - band)):
        values[i] = evaluate(int(i))
        ok[i] = values[i] > tau[i]
    return ok, values


# --------------------------------------------------------------------------- tiers


def _rival_worst(HH, A, pred, tables, s, rows=None, tau=None):
    """(C5) for every rival at per-point scales ``s``: values (T, K) and, given ``tau``, slopes.

    ``HH = [H^+, H^-]`` (T, 2n), so that (C5) is ``A_c - A_b - HH @ gains``. ``rows``
    selects the points (default all). Column ``pred`` is ``+inf`` (value) and 0 (slope).
    The slopes are ``sum_i |h_i| g_i + tau * g_max``: the tangent slope of (C8) plus an
    allowance for its rounding (``tau`` bounds ``||h - h_hat||_1`` plus the summation error
    of ``sum_i |h_i|``, so ``tau * g_max`` bounds the error of ``sum_i |h_i| g_i``). Points
    are grouped by (scale, class): one matrix product per group (any grouping: the error
    bound holds for every summation order).
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


def _radius_scale(HH, A, pred, tables, tau, cert_at_one, s_sat, rtol, decide):
    """Theorem 2: largest proven-certified budget scale per point, rounded down.

    Bisection on the grid ``2**(j / steps)`` with ``2**(1 / steps) <= 1 + rtol`` (scales
    shared by many points, so each step is a few matrix products; the grid point below
    ``s*`` is within ``1 + rtol`` of it), then one tangent step (C8) from that grid point,
    whose root is a proven-certified scale. ``decide(idx, s)`` is the per-point decision
    at scales ``s`` (Proposition 6): the grid path of a point depends on that point alone.
    """
    T = A.shape[0]
    tau_np = tau.cpu().numpy()
    radius = np.zeros(T)
    cert1 = np.asarray(cert_at_one).copy()
    if s_sat <= 0.0:  # every budget is zero: the scale does not matter
        radius[cert1] = math.inf
        return radius

    steps = max(1, math.ceil(1.0 / math.log2(1.0 + rtol)))  # grid points per doubling
    k_sat = max(math.ceil(math.log2(s_sat)), 1) * steps
    k_floor = _LOG2_FLOOR * steps
    lo = np.where(cert1, 0, k_floor)
    hi = np.where(cert1, k_sat, 0)
    active = np.ones(T, dtype=bool)
    top = np.flatnonzero(cert1)
    if top.size:  # certified at saturation: certified at every scale
        ok = decide(top, 2.0 ** (k_sat / steps))
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
            ok = decide(todo, 2.0 ** (e / steps))
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
        ok = decide(todo, 2.0 ** (mid / steps))
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
        step = np.where(np.isfinite(vals) & (slopes > 0), (vals - 2.0 * t) / slopes, math.inf).min(axis=1)
    # tangent root: by (C8) the exact W is >= 2 tau - tau/2 there, so the decision rule certifies it
    # too (shrunk by 1e-9 for strictness); beyond s_hi only through rounding, so it is capped at s_lo then
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
    return torch.from_numpy(-np.sort(-a, axis=-1))  # negation is exact; the result is contiguous


def _flip_chunk(H, A, pred, pi, tau, m, band):
    """Theorem 3 for a chunk: ``(max_flips, worst margin at m, ambiguous)`` per point.

    Only the rows with the largest ``|h_i|`` can hold the largest ``d_i`` ((C9):
    ``0 <= d_i <= 2 |h_i|``). For each point, ``d`` is evaluated on the ``L`` rows of
    largest ``|h_i|``; every other row has ``d_i <= beta = 2 (1 + 1e-5) |h|_(L+1)`` (the
    factor covers the rounding of ``d_i`` and rows of ``pi`` off the simplex by ``1e-6``),
    so the sorted prefix sums on those rows equal the top-``j`` sums of all computed ``d_i``
    up to the number ``valid`` of their entries ``>= beta`` (and never exceed them, so the
    count found on the subset bounds the count from above). ``L`` starts from an estimate
    (the count with every ``d_i`` replaced by its bound ``2 |h_i|`` is a lower bound) and
    grows for the points whose answer needs more, up to all ``n`` rows (then exact by
    construction). ``m`` is at most ``n``. A point is *ambiguous* when one of its margins
    ``M - T_j`` examined lies within ``band`` of ``tau`` (Proposition 6).
    """
    T, n = H.shape
    K = pi.shape[1]
    dev = H.device
    max_flips = np.full(T, -2, dtype=np.int64)
    worst = torch.empty(T, dtype=H.dtype, device=dev)
    ambiguous = np.zeros(T, dtype=bool)
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
                    if size < top_abs.shape[1]:
                        support, beta = order[rows, :size], top_abs[rows, size]
                    else:
                        vals, support = torch.topk(abs_h[rows], size + 1, dim=1)
                        beta, support = vals[:, size], support[:, :size]
                    beta = 2.0 * (1.0 + 1e-5) * beta
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
                w = margin[..., None] - prefix  # margins after j = 1..k changes
                counts = (margin > t).to(torch.int64) + (w > t[..., None]).sum(-1)
                reach = torch.clamp(valid, max=k)
                exact = (counts <= reach) | own
                lower = torch.where(own, n + 2, torch.where(exact, counts, reach + 1))  # else count > reach
                best = lower.amin(dim=1)
                decided = (exact & (lower == best[:, None])).any(dim=1)
                if m == 0:
                    at_m, m_ok = margin, torch.ones_like(decided)
                elif m <= k:
                    at_m, m_ok = w[..., m - 1], ((reach >= m) | own).all(dim=1)
                else:
                    at_m, m_ok = margin, torch.zeros_like(decided)
                done = decided & m_ok
                if size == n:  # every prefix sum is exact
                    done = torch.ones_like(done)
                done_np = done.cpu().numpy()
                max_flips[rows_np[done_np]] = (best[done] - 1).cpu().numpy()
                worst[rows[done]] = at_m[done].amin(dim=1)
                # within the band of the allowance: the per-point procedure decides (Proposition 6)
                bd = band[rows][:, None]
                near = ((margin - t).abs() <= bd) & ~own
                near |= (((w - t[..., None]).abs() <= bd[..., None]) & ~own[..., None]).any(-1)
                ambiguous[rows_np[done_np]] = near.any(dim=1)[done].cpu().numpy()
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
    return max_flips, worst, ambiguous


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


def _threshold_factor(n_classes, delta, reference):
    """``L`` with threshold ``t(delta) = sqrt(2 sigma^2 L)``, rounded up.

    ``reference="expected"``: ``L = log((K - 1) / delta)`` (C12). ``"reannotation"``:
    ``L = 2 log(1 / z)``, ``z`` the positive root of ``z^2 + z = delta / (K - 1)`` (C23),
    computed in the cancellation-free form ``2 r / (1 + sqrt(1 + 4 r))`` and rounded down
    (``L`` up) by more than the few roundings involved.

    Parameters
    ----------
    n_classes : int
    delta : float in (0, 1)
    reference : {"expected", "reannotation"}

    Returns
    -------
    float
    """
    if reference == "expected":
        return math.log((n_classes - 1) / delta)
    r = delta / (n_classes - 1)
    z = 2.0 * r / (1.0 + math.sqrt(1.0 + 4.0 * r)) * (1.0 - 16.0 * _EPS)
    return 2.0 * -math.log(z) * (1.0 + 4.0 * _EPS)


def _delta_min(gap, sigma, n_classes, reference):
    """Smallest ``delta`` certified at nominal margin ``gap > 0``, rounded up (elementwise).

    ``(K - 1) exp(-gap^2 / (2 sigma^2))`` (Theorem 4) or
    ``(K - 1) [exp(-gap^2 / (2 sigma^2)) + exp(-gap^2 / (4 sigma^2))]`` (Theorem 5, (C23)).

    Parameters
    ----------
    gap : ndarray of shape (n_points,)
    sigma : ndarray of shape (n_points,)
    n_classes : int
    reference : {"expected", "reannotation"}

    Returns
    -------
    ndarray of shape (n_points,), not capped at 1
    """
    s2 = 2.0 * sigma**2 * (1 + 8 * _EPS) ** 2
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        tail = np.exp(-gap**2 / s2)
        if reference == "reannotation":
            tail = tail + np.exp(-gap**2 / (2.0 * s2))
    return (n_classes - 1) * tail * (1 + 16 * _EPS)


def _stochastic(system, F_test, pi, counts, delta, pred, reference="expected", free=None):
    """Theorem 4 (``reference="expected"``) or 5 (``"reannotation"``): ``(worst margin,
    delta_min, tau, kind)`` for every test point.

    The two statements share ``sigma`` (C12) and the margins; only the threshold (C12) or
    (C23) differs. Computed point by point in a fixed order (numpy, elementwise; section 5,
    (C22)): every value depends on that point alone. ``free`` (bool, n): the rows whose votes
    are re-drawn; the others are constants, ``v_i = 0`` (Proposition 8.1).
    """
    kind, weight, eps, deviation = _stochastic_mode(pi, counts)
    n, K = pi.shape
    d = system.d
    fc = system.fc
    g1 = _gamma(1)
    w = system.w
    if w is None:
        Gq = fc.T @ pi  # (d, K): scores are u^T Gq + qbar
        # |fl(Fc^T Q) - Fc^T Q| <= gamma_n |Fc|^T Q; each score adds gamma_{d+1} |u|^T |Gq|
        Eq = (_gamma(n) * (np.abs(fc).T @ pi) * (1 + 2 * _gamma(n)) + n * _ETA + _gamma(d + 1) * np.abs(Gq)) * _UP
        qbar = pi.mean(axis=0)
        q_err = (_gamma(n + 2) * qbar * (1 + 2 * _gamma(n)) + _gamma(d + 2) * qbar + _ETA) * _UP
        Y = np.concatenate([fc, np.full((n, 1), 1.0 / n)], axis=1)
        g_y, g_v = _gamma(n + 4), _gamma(4)
    else:  # section 9: Gq = Fc^T D Pi, weighted mean, row weights v_i w_i^2
        wpi = pi * w[:, None]
        Gq = fc.T @ wpi
        Eq = (_gamma(n + 1) * (np.abs(fc).T @ wpi) * (1 + 2 * _gamma(n)) + 4 * n * _ETA
              + _gamma(d + 1) * np.abs(Gq)) * _UP
        qbar = (w @ pi) / system.s_hat
        q_err = (_gamma(n + 4) * qbar * (1 + 2 * _gamma(n)) + _gamma(d + 2) * qbar + 2 * n * _ETA / system.s_hat
                 + _ETA) * _UP
        Y = np.concatenate([fc, np.full((n, 1), 1.0 / system.s_hat)], axis=1)
        weight = weight * w * w
        g_y, g_v = _gamma(n + 6), _gamma(6)
    if free is not None:
        weight = np.where(free, weight, 0.0)
    Gw = Y.T @ (Y * weight[:, None])  # (d+1, d+1): sigma^2 = v^T Gw v, v = (u, 1)
    absY = np.abs(Y)
    Pw = absY.T @ (absY * weight[:, None])
    n_norm = ((_gamma(2 * d + 3) * _row_sum_norm(np.abs(Gw), d + 1) + g_y * _row_sum_norm(Pw, n + 1))
              + 2 * n * (d + 1) * _ETA) * _UP
    T = F_test.shape[0]
    worst, delta_min, tau_all = np.empty(T), np.empty(T), np.empty(T)
    log_ratio = _threshold_factor(K, delta, reference)
    gd = 1 + 2 * _gamma(d + 1)
    step = max(1, _POINT_BLOCK // max(d + K + 1, 1))
    for start in range(0, T, step):
        sl = slice(start, start + step)
        U, e_model, _, s_up = system.canonical(F_test[sl])
        u = U.T  # (d, t)
        t = u.shape[1]
        scores = np.zeros((K, t))
        err = np.zeros((K, t))
        quad_z = np.zeros((d + 1, t))
        s_uu = np.zeros(t)
        for j in range(d):  # sums over the features in index order
            uj = u[j]
            scores += Gq[j][:, None] * uj
            err += Eq[j][:, None] * np.abs(uj)
            quad_z += Gw[:, j:j + 1] * uj
            s_uu += uj * uj
        scores += qbar[:, None]
        err = err * gd + q_err[:, None]
        quad_z += Gw[:, d:d + 1]  # v_d = 1
        quad = np.zeros(t)
        for j in range(d):
            quad += quad_z[j] * u[j]
        quad += quad_z[d]
        cols = np.arange(t)
        c = pred[sl]
        margins = scores[c, cols][None, :] - scores  # (K, t)
        m_err = (err[c, cols][None, :] + err + g1 * np.abs(margins)) * _UP
        margins[c, cols] = math.inf
        m_err[c, cols] = 0.0
        M = margins.min(axis=0)
        err_M = m_err.max(axis=0)
        sigma2 = (quad + n_norm * (s_uu * gd + 1.0)) * (1 + g_v) * _UP  # v_i (w_i^2) rounded: (1 + gamma_4 (6))
        sigma = np.sqrt(np.maximum(sigma2, 0.0)) * (1 + 4 * _EPS) + e_model * (1 + 1e-6) * _UP
        thresh = np.sqrt(2.0 * sigma**2 * log_ratio) * (1 + 8 * _EPS)
        w = M - thresh
        tau = (_SAFETY * ((1 + 1e-6) * e_model + err_M + 4.0 * deviation * s_up) + 2 * _EPS * (np.abs(M) + thresh))
        tau = tau * _UP
        gap = np.maximum(M - tau, 0.0)
        dm = np.where(M > tau, _delta_min(gap, sigma, K, reference), 1.0)
        dm = np.where(np.isnan(dm), 1.0, dm)
        if np.isnan(w).any() or np.isnan(tau).any():
            raise CertificationError("NaN in the stochastic tier's margin or allowance (features or alpha out "
                                     "of the float64 range); please report this input")
        worst[sl], delta_min[sl], tau_all[sl] = w, np.minimum(dm, 1.0), tau
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


def _distinct(classes):
    try:
        return len(set(classes.tolist())) == classes.shape[0]
    except TypeError:  # unhashable labels
        return len(np.unique(classes)) == classes.shape[0]


def _free_rows(fixed_rows, n):
    """The rows whose labels may change, ``~fixed_rows`` (bool, n), or None for every row."""
    if fixed_rows is None:
        return None
    fixed = np.asarray(fixed_rows)
    if fixed.dtype != bool or fixed.shape != (n,):
        raise CertificationError(f"fixed_rows must be a boolean mask of shape ({n},) (one entry per training "
                                 f"row), got dtype {fixed.dtype} and shape {fixed.shape}")
    return ~fixed


def _check_sample_weight(sample_weight, n):
    """Validated row weights (n,) float64, or None: finite, ``>= 0``, positive sum."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise CertificationError(f"sample_weight must have shape ({n},) (one weight per training row), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise CertificationError("sample_weight contains NaN or infinite values")
    if np.any(w < 0):
        raise CertificationError(f"sample_weight must be >= 0; {int(np.sum(w < 0))} weights are negative")
    if not w.sum() > 0:
        raise CertificationError("sample_weight sums to 0: every row has weight 0, so there is no learner")
    return w


def certify_ridge(F_train, budget, F_test, *, alpha, tier="stochastic", geometry="l1", m=None, delta=0.05,
                  scope="model", classes=None, chunk_size=None, device=None, radius=True, radius_rtol=0.1,
                  reference=None, sample_weight=None, fixed_rows=None):
    """Certify the ridge head's predictions against changes of the training labels.

    The learner is ``Ridge(alpha, fit_intercept=True)`` fitted on ``(F_train, budget.pi)``
    (equation (C0) of docs/certificates.md), with ``sample_weight`` if given (section 9:
    weighted centring, (C29)-(C31)); statements and proofs of the three tiers are
    Theorems 1-5 there, the floating-point allowance is section 5. Every point's
    certificate depends on that point alone, not on the other points certified with it
    (Proposition 6).

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
        default, see docs). ``m >= n_train`` is never certified (Theorem 3). Must be None
        for the other tiers.
    delta : float in (0, 1), default=0.05
        Tier "stochastic": failure probability.
    reference : {"expected", "reannotation"} or None, default=None
        Tier "stochastic": what the prediction is compared with. ``"expected"`` (what
        ``None`` means there): the learner trained on the expected nominal ``Pi*``,
        ``P[certified and pred(Pi) != pred(Pi*)] <= delta`` (Theorem 4). ``"reannotation"``:
        the learner refitted on a fresh, independent re-annotation ``Pi'`` by the same
        annotators (same vote counts), ``P[certified and pred(Pi') != pred(Pi)] <= delta``
        jointly over both draws (Theorem 5). Must be None for the other tiers.
    scope : {"model", "head"}, default="model"
        Recorded in the certificate: whether the features depend on these labels.
    classes : array-like of shape (K,) or None
        Distinct class labels in column order (default: ``budget.classes_`` or ``arange(K)``).
    chunk_size : int or None
        Test points per chunk (``None``: about 2**24 float64 entries per chunk).
    device : str, torch.device or None
        Torch device for the batched products (float64 throughout); default CPU. The
        per-point procedure of section 5 runs on the CPU.
    radius : bool, default=True
        Tier "bounded": compute ``radius_scale`` (Theorem 2).
    radius_rtol : float, default=0.1
        Relative tolerance of ``radius_scale``: the reported value is proven certified
        (rounded down) and at least ``s* / (1 + radius_rtol)``; a tangent step (C8) makes it
        much closer in practice. Smaller values cost more (finer grid).
    sample_weight : array-like of shape (n_train,) or None, default=None
        Row weights ``>= 0`` (finite, positive sum) of the learner (section 9). A row of
        weight 0 has no influence; the flip tier still counts it as a row.
    fixed_rows : array-like of bool of shape (n_train,) or None, default=None
        Training rows whose labels are held fixed (Proposition 8.1): never moved (tier
        "bounded": radius 0), never changed (tier "flip": the ``m`` changed rows are among
        the others) and never re-drawn (tier "stochastic": no variance). The certificate
        covers the other rows (``Certificate.covers``). ``None``: every row may change.

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
        reference = "expected" if reference is None else reference
        if not isinstance(reference, str) or reference not in _REFERENCES:
            raise CertificationError(f"unknown reference {reference!r} for tier='stochastic'; expected one of "
                                     f"{_REFERENCES} (docs/certificates.md, Theorems 4 and 5)")
    elif reference is not None:
        raise CertificationError(f"reference is only used by tier='stochastic' (what a fresh draw of the votes "
                                 f"is compared with), got reference={reference!r} with tier={tier!r}")
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
    if not _distinct(classes):
        raise CertificationError(f"classes must be distinct (one label per column of budget.pi), got {classes!r}")
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

    free = _free_rows(fixed_rows, n)
    if free is not None:
        r = None if r is None else np.where(free, r, 0.0)
        rho = None if rho is None else np.where(free, rho, 0.0)
    sample_weight = _check_sample_weight(sample_weight, n)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    system = _RidgeSystem(F_train, alpha, dev, sample_weight)  # refuses what cannot be made safe (section 5)
    # The served predictor: exactly the classifier's ridge head and decision_function.
    try:
        coef, intercept = _ridge_fit(F_train, pi, alpha, sample_weight)
    except (np.linalg.LinAlgError, ValueError) as exc:
        raise CertificationError("the ridge system Fc^T Fc + alpha I is numerically singular in float64 "
                                 "(alpha is too small relative to these features); certify with a larger "
                                 "alpha") from exc
    scores = _ridge_scores(F_test, coef, intercept)
    if not np.all(np.isfinite(scores)):
        raise CertificationError("the served ridge scores are not finite (features or alpha out of the float64 "
                                 "range)")
    pred_np = np.argmax(scores, axis=1)
    T = F_test.shape[0]
    rows = np.arange(T)
    rival = scores.copy()
    rival[rows, pred_np] = -np.inf
    margin = scores[rows, pred_np] - rival.max(axis=1) if T else np.zeros(0)
    prediction = classes[pred_np]
    pred = torch.as_tensor(pred_np, device=dev)
    common = dict(scope=scope, prediction=prediction, margin=margin, classes=classes)
    if free is not None:
        common["covers"] = free.copy()

    if tier == "stochastic":
        worst, delta_min, tau, kind = _stochastic(system, F_test, pi, counts, delta, pred_np, reference, free)
        engine = f"ridge-hoeffding-{kind}" if reference == "expected" else f"ridge-hoeffding-reannotation-{kind}"
        return Certificate(tier=tier, engine=engine, certified=worst > tau, worst_case_margin=worst, delta=delta,
                           delta_min=delta_min, reference=reference, **common)

    Pi = torch.as_tensor(pi, device=dev)
    step = chunk_size or max(1, 4 * _CHUNK_ELEMENTS // (2 * n))  # [h^+, h^-] of 512 MiB per chunk
    worst = np.empty(T)
    certified = np.zeros(T, dtype=bool)
    extra = np.empty(T, dtype=np.int64) if tier == "flip" else np.empty(T)
    tables = None
    if tier == "bounded":
        tables = _GainTables(Pi, torch.as_tensor(r if r is not None else np.zeros(n), device=dev),
                             torch.as_tensor(rho if rho is not None else np.zeros(n), device=dev), geometry)
        s_sat = tables.saturation_scale()
    m_eff = min(m, n) if tier == "flip" else None  # m >= n: every row changed, never certified (Theorem 3)
    for start in range(0, T, step):
        sl = slice(start, min(start + step, T))
        U_np, e_model, e_rh, s_up = system.canonical(F_test[sl])
        tau_np, R = _allowance(tier, n, e_model, e_rh, s_up)
        band = 2.0 * R
        U = torch.as_tensor(U_np, device=dev)
        H = system.influence(U)
        A = H @ Pi
        c = pred[sl]
        point = _PointEval(system, U_np, pred_np[sl], pi, tables, free)
        tau = torch.as_tensor(tau_np, device=dev)
        if tier == "flip":
            if free is not None:  # a held row's d_i (C9) is 0: the m changed rows are among the others
                H = H * torch.as_tensor(free, dtype=H.dtype, device=dev)
            flips, w, amb = _flip_chunk(H, A, c, Pi, tau, m_eff, torch.as_tensor(band, device=dev))
            w = w.cpu().numpy()
            if np.isnan(w).any():
                raise CertificationError("NaN in a worst-case margin (features or alpha out of the float64 range)")
            for i in np.flatnonzero(amb):
                flips[i], w[i] = point.flip(int(i), tau_np[i], m_eff)
            extra[sl] = flips
            worst[sl] = w
            certified[sl] = flips >= m
            continue
        HH = torch.empty((H.shape[0], 2 * n), dtype=H.dtype, device=dev)  # [h^+, h^-] of (C5)
        torch.clamp(H, min=0.0, out=HH[:, :n])
        torch.clamp(H.neg_(), min=0.0, out=HH[:, n:])
        del H
        vals, _ = _rival_worst(HH, A, c, tables, 1.0)
        ok, w = _resolve(vals.amin(dim=1).cpu().numpy(), tau_np, band, lambda i: point.bounded(i, 1.0))
        worst[sl] = w
        certified[sl] = ok
        if radius:
            def decide(idx, s, HH=HH, A=A, c=c, point=point, tau_np=tau_np, band=band):
                s = np.broadcast_to(np.asarray(s, dtype=np.float64), idx.shape)
                w_fast = _rival_worst(HH, A, c, tables, s, rows=idx)[0].amin(dim=1).cpu().numpy()
                return _resolve(w_fast, tau_np[idx], band[idx], lambda j: point.bounded(int(idx[j]), s[j]))[0]

            extra[sl] = _radius_scale(HH, A, c, tables, tau, ok, s_sat, float(radius_rtol), decide)
    if tier == "flip":
        return Certificate(tier=tier, engine="ridge-flip-exact", certified=certified, worst_case_margin=worst,
                           max_flips=extra, m=m, **common)
    engine = {"l1": "ridge-l1-exact", "kl": "ridge-kl-exact", "kl_l1": "ridge-kl_l1-bound"}[geometry]
    return Certificate(tier=tier, engine=engine, certified=certified, worst_case_margin=worst,
                       radius_scale=extra if radius else None, **common)
