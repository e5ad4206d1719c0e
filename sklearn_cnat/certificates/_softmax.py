"""Sensitivity certificates for an L2-regularised linear softmax head trained with CNAT.

The head ``W = [coef; intercept]`` minimises, on fixed features ``x_i = [f_i, 1]``,

    J(W; Pi) = (1/n) sum_i sup_{q in U_i} sum_k q_k CE_k(W^T x_i) + (alpha / (2n)) ||W||_F^2

(eq. (H2) of docs/certificates_softmax.md). ``J`` is ``alpha/n``-strongly convex, so a
measured subgradient at the computed head bounds how far the exact minimiser for
*other* training labels can be (Lemmas 1-2); a margin larger than that distance times
``sqrt(2) ||x||`` certifies the prediction (Lemma 3, Theorems 1-2). The statements,
proofs and the rounding allowances are in docs/certificates_softmax.md; comments cite
its equations.

Private pure functions hold the math; :func:`fit_robust_softmax_head` and
:func:`certify_softmax_head` validate once and call them.
"""

import numbers
import warnings

import numpy as np
from scipy.optimize import minimize
from scipy.special import kl_div, logsumexp, softmax

from ..exceptions import CNATValueError, CertificationError
from ._certificate import Certificate

__all__ = ["fit_robust_softmax_head", "certify_softmax_head"]

_GEOMETRIES = ("l1", "kl", "kl_l1")
_EPS = 2.0**-53  # unit roundoff of float64
_SAFETY = 8.0  # factor on the first-order rounding bounds (docs, section 5)
_FEAS_REL = 1e-9  # relative feasibility margin of q_hat (docs, section 5)
_SQRT2 = np.sqrt(2.0)


# --------------------------------------------------------------------------- validation


def _check_geometry(geometry):
    if geometry not in _GEOMETRIES:
        raise CNATValueError(f"geometry must be one of {_GEOMETRIES}, got {geometry!r}")


def _check_matrix(F, name):
    if hasattr(F, "detach"):
        F = F.detach().cpu().numpy()
    try:
        F = np.asarray(F, dtype=np.float64)
    except (TypeError, ValueError):
        raise CNATValueError(f"{name} must be a numeric array of shape (n_samples, n_features)") from None
    if F.ndim != 2:
        raise CNATValueError(f"{name} must be 2-D of shape (n_samples, n_features), got shape {F.shape}")
    if not np.all(np.isfinite(F)):
        raise CNATValueError(f"{name} contains NaN or infinite values")
    return F


def _check_budget(budget, n):
    for attr in ("pi", "r", "rho", "classes_"):
        if not hasattr(budget, attr):
            raise CNATValueError(f"budget must be a NoiseBudget (missing attribute {attr!r}), got {type(budget).__name__}")
    pi = np.asarray(budget.pi, dtype=np.float64)
    if pi.ndim != 2 or pi.shape[0] != n:
        raise CNATValueError(f"budget has {pi.shape[0] if pi.ndim == 2 else '?'} rows but the features have {n}; "
                             "they must match")
    k = pi.shape[1]
    if k < 2:
        raise CNATValueError(f"at least 2 classes are needed, the budget has {k}")
    sums = pi.sum(axis=1)
    if np.any(pi < 0) or np.any(np.abs(sums - 1.0) > 1e-6):
        raise CNATValueError("budget.pi rows must lie on the simplex")
    r = np.minimum(np.asarray(budget.r, dtype=np.float64), 2.0)
    rho = np.asarray(budget.rho, dtype=np.float64)
    if r.shape != (n,) or rho.shape != (n,) or np.any(r < 0) or np.any(rho < 0) or not (
            np.all(np.isfinite(r)) and np.all(np.isfinite(rho))):
        raise CNATValueError(f"budget.r and budget.rho must be finite, non-negative and of shape ({n},)")
    # Renormalised exactly as the sets module does before use.
    return pi / sums[:, None], r, rho


def _check_positive(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise CNATValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _radii(geometry, r, rho):
    """(r, rho) arguments of the worst case for a geometry (None = constraint absent)."""
    return (r if geometry in ("l1", "kl_l1") else None, rho if geometry in ("kl", "kl_l1") else None)


def _augment(F):
    return np.hstack([F, np.ones((F.shape[0], 1))])


# --------------------------------------------------------------------------- fitting


def _worst_case_quiet(v, pi, r, rho):
    """sets.worst_case_expectation without its (once-per-call) KL-support warning."""
    from ..sets import worst_case_expectation

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*KL ball.*", category=UserWarning)
        return worst_case_expectation(v, pi, r=r, rho=rho)


def _cnat_objective_torch(w_flat, X, pi, r, rho, lam, geometry, shape):
    """Value and gradient of (H2) in float64 torch through the CNAT loss (q* detached)."""
    import torch

    from ..losses import CNATLoss

    W = torch.tensor(w_flat.reshape(shape), dtype=torch.float64, requires_grad=True)
    logits = torch.as_tensor(X) @ W
    r_t, rho_t = (None if a is None else torch.as_tensor(a) for a in _radii(geometry, r, rho))
    loss_fn = CNATLoss(geometry=geometry, reduction="mean")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*KL ball.*", category=UserWarning)
        loss = loss_fn(logits, torch.as_tensor(pi), r=r_t, rho=rho_t)
    value = loss + 0.5 * lam * (W * W).sum()
    value.backward()
    return float(value.detach()), W.grad.detach().numpy().ravel().copy()


def _fit_head(X, pi, r, rho, lam, geometry, tol, max_iter, W0=None):
    """Minimise (H2) by full-batch L-BFGS; return W (d+1, K) and the measured ||grad||_F."""
    shape = (X.shape[1], pi.shape[1])
    w0 = np.zeros(shape[0] * shape[1]) if W0 is None else np.asarray(W0, dtype=np.float64).ravel()
    res = minimize(_cnat_objective_torch, w0, args=(X, pi, r, rho, lam, geometry, shape), jac=True,
                   method="L-BFGS-B",
                   options={"maxiter": max_iter, "maxfun": 4 * max_iter, "gtol": tol, "ftol": 1e-3 * tol * tol,
                            "maxcor": 30})
    W = res.x.reshape(shape)
    # Do not trust the optimiser's report: recompute the gradient at the returned point.
    _, grad = _cnat_objective_torch(res.x, X, pi, r, rho, lam, geometry, shape)
    return W, float(np.linalg.norm(grad))


def fit_robust_softmax_head(F, budget, *, alpha=1.0, geometry="l1", tol=1e-8, max_iter=2000):
    """Fit the L2-regularised linear softmax head with the CNAT loss on fixed features.

    Minimises (H2) of docs/certificates_softmax.md,
    ``(1/n) sum_i sup_{q in U_i} sum_k q_k CE_k(f_i coef + intercept) +
    (alpha / (2 n)) (||coef||_F^2 + ||intercept||^2)``, by full-batch L-BFGS in float64
    (torch, through :class:`~sklearn_cnat.losses.CNATLoss` with the worst-case labels
    detached, which yields a valid subgradient). The intercept is regularised too,
    so that the objective is strongly convex.

    Parameters
    ----------
    F : array-like of shape (n_samples, n_features)
        Fixed training features.
    budget : NoiseBudget
        Nominal label distributions ``pi`` and radii ``r``, ``rho`` of the training rows.
    alpha : float, default=1.0
        Regularisation; the strong-convexity modulus is ``alpha / n_samples``.
    geometry : {"l1", "kl", "kl_l1"}, default="l1"
        Uncertainty set (H1).
    tol : float, default=1e-8
        L-BFGS gradient tolerance (max-abs component).
    max_iter : int, default=2000
        L-BFGS iteration cap.

    Returns
    -------
    coef : ndarray of shape (n_features, n_classes)
    intercept : ndarray of shape (n_classes,)
    grad_norm : float
        Frobenius norm of the subgradient of (H2) at the returned point, recomputed in
        float64 after the fit. It is returned even when large (an objective with kinks
        or an iteration cap): :func:`certify_softmax_head` folds it in.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn_cnat.budgets import NoiseBudget
    >>> F = np.array([[-1.0], [-0.5], [0.5], [1.0]])
    >>> b = NoiseBudget(pi=np.eye(2)[[0, 0, 1, 1]], r=np.full(4, 0.1), rho=np.zeros(4),
    ...                 classes_=[0, 1], counts=np.eye(2)[[0, 0, 1, 1]], p_error=np.zeros(4))
    >>> coef, intercept, grad_norm = fit_robust_softmax_head(F, b, alpha=1.0)
    >>> coef.shape, intercept.shape, grad_norm < 1e-6
    ((1, 2), (2,), True)
    """
    _check_geometry(geometry)
    F = _check_matrix(F, "F")
    pi, r, rho = _check_budget(budget, F.shape[0])
    alpha = _check_positive(alpha, "alpha")
    tol = _check_positive(tol, "tol")
    if isinstance(max_iter, bool) or not isinstance(max_iter, numbers.Integral) or max_iter < 1:
        raise CNATValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    W, grad_norm = _fit_head(_augment(F), pi, r, rho, alpha / F.shape[0], geometry, tol, int(max_iter))
    return W[:-1].copy(), W[-1].copy(), grad_norm


# --------------------------------------------------------------------------- maximisers and gaps


def _scores_and_losses(X, W):
    """z = X W, softmax sigma, and the per-class cross-entropies v = logsumexp(z) - z."""
    z = X @ W
    lse = logsumexp(z, axis=1)
    return z, softmax(z, axis=1), lse[:, None] - z


def _singleton(pi, r, rho, geometry):
    """Rows whose uncertainty set is the single point pi_i (docs, end of section 2)."""
    vertex = (pi > 0).sum(axis=1) == 1
    if geometry == "l1":
        return r == 0
    if geometry == "kl":
        return (rho == 0) | vertex
    return (r == 0) | (rho == 0) | vertex


def _kl_rows(q, pi):
    """KL(q || pi) as sum_k pi_k phi(q_k / pi_k): non-negative terms (kl_div), inf off-support."""
    return kl_div(q, pi).sum(axis=1)


def _feasible_maximisers(q0, pi, r, rho, geometry, singleton):
    """q_hat of docs section 5: clipped, renormalised, shrunk into U_i with a margin; pi on point sets."""
    n, k = pi.shape
    q = np.clip(np.asarray(q0, dtype=np.float64), 0.0, None)
    if geometry != "l1":
        q = np.where(pi > 0, q, 0.0)  # KL-finite points live on supp(pi)
    s = q.sum(axis=1)
    q = np.where(s[:, None] > 0, q / np.where(s > 0, s, 1.0)[:, None], pi)
    slack = 1e3 * k * _EPS
    checks = []
    if geometry in ("l1", "kl_l1"):
        checks.append((lambda qq: np.abs(qq - pi).sum(axis=1), r * (1.0 - _FEAS_REL) - slack))
    if geometry in ("kl", "kl_l1"):
        checks.append((lambda qq: _kl_rows(qq, pi), rho * (1.0 - _FEAS_REL) - slack))
    t = np.zeros(n)
    for measure, target in checks:
        val = measure(q)
        over = val > target
        with np.errstate(divide="ignore", invalid="ignore"):
            need = np.where(target > 0, 1.0 - target / val, 1.0)
        t = np.maximum(t, np.where(over, np.minimum(need * (1.0 + 1e-6) + 1e-12, 1.0), 0.0))
    q = np.where(t[:, None] > 0, (1.0 - t[:, None]) * q + t[:, None] * pi, q)
    bad = np.zeros(n, dtype=bool)
    for measure, target in checks:
        bad |= ~(measure(q) <= target)
    q[bad | singleton] = pi[bad | singleton]
    return q


def _l1_upper(v, pi, r):
    """Exact sup_{||q - pi||_1 <= r} <q, v> by the greedy transfer (docs section 5): an upper bound."""
    T = np.minimum(r / 2.0, 1.0)
    order = np.argsort(v, axis=1, kind="stable")
    vs = np.take_along_axis(v, order, axis=1)
    ps = np.take_along_axis(pi, order, axis=1)
    before = np.cumsum(ps, axis=1) - ps
    taken = np.clip(T[:, None] - before, 0.0, ps)
    return (pi * v).sum(axis=1) + T * v.max(axis=1) - (taken * vs).sum(axis=1)


def _kl_upper(v, pi, rho, n_iter=120):
    """Gibbs-dual upper bound of sup_{KL(q || pi) <= rho} <q, v> (docs section 5).

    For every eta > 0 the sup is <= eta rho + eta log sum_k pi_k exp(v_k / eta); it is also
    <= max over supp(pi) of v, and (Pinsker) <= <pi, v> + sqrt(rho / 2) range(v). Golden
    section search over log(eta) makes the bound tight; any eta evaluated is a valid bound.
    """
    support = pi > 0
    vmax = np.max(np.where(support, v, -np.inf), axis=1)
    vmin = np.min(np.where(support, v, np.inf), axis=1)
    scale = vmax - vmin
    safe = np.where(scale > 0, scale, 1.0)
    u = np.where(support, (v - vmax[:, None]) / safe[:, None], -1.0)  # in [-1, 0]; max 0 on supp(pi)
    with np.errstate(divide="ignore"):
        logpi = np.where(support, np.log(pi), -np.inf)
    ubar = (pi * u).sum(axis=1)

    def dual(t):
        # eta (rho + log sum_k pi_k exp(u_k / eta)); for small |u / eta| through log1p/expm1 so
        # that the large factor eta does not amplify cancellation (the bound must not round low).
        eta = np.exp(t)
        x = u / eta[:, None]
        small = np.log1p((pi * np.expm1(np.maximum(x, -700.0))).sum(axis=1))
        large = logsumexp(logpi + x, axis=1)
        log_m = np.where(np.max(np.where(support, -x, 0.0), axis=1) <= 0.5, small, large)
        return eta * (rho + log_m)

    best = np.minimum(0.0, ubar + np.sqrt(rho / 2.0))
    a = np.full(v.shape[0], -40.0)
    b = np.full(v.shape[0], 40.0)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = dual(c), dual(d)
    best = np.minimum(best, np.minimum(fc, fd))
    for _ in range(n_iter):
        left = fc <= fd
        b = np.where(left, d, b)
        a = np.where(left, a, c)
        new = np.where(left, b - g * (b - a), a + g * (b - a))
        fnew = dual(new)
        best = np.minimum(best, fnew)
        c, d, fc, fd = (np.where(left, new, d), np.where(left, c, new),
                        np.where(left, fnew, fd), np.where(left, fc, fnew))
    return vmax + np.where(scale > 0, scale * best, 0.0)


def _gap_upper(v, pi, r, rho, geometry, q_hat, z, singleton):
    """gamma_i >= l_i(W_hat) - <q_hat_i, v_i>, with the rounding allowance of docs section 5."""
    if geometry == "l1":
        ub = _l1_upper(v, pi, r)
    elif geometry == "kl":
        ub = _kl_upper(v, pi, rho)
    else:
        ub = np.minimum(_l1_upper(v, pi, r), _kl_upper(v, pi, rho))
    gap = np.maximum(ub - (q_hat * v).sum(axis=1), 0.0)
    k = v.shape[1]
    size = np.abs(ub) + np.abs(v).max(axis=1) + np.abs(z).max(axis=1) + 1.0
    if geometry != "l1":
        # The dual's log-sum-exp errs by about eps (eta |log pi_min| + 1) in units of range(v), and
        # eta <= 2 on that branch (docs section 5).
        support = pi > 0
        with np.errstate(divide="ignore"):
            neg_log = np.max(np.where(support, -np.log(np.where(support, pi, 1.0)), 0.0), axis=1)
        size = size + np.ptp(v, axis=1) * (2.0 * neg_log + 1.0)
    allowance = _SAFETY * (k + 16) * _EPS * size
    return np.where(singleton, 0.0, gap + allowance)


# --------------------------------------------------------------------------- radii


def _b(r, rho, geometry, vertex):
    """l1 radius implied by a set U(.; r, rho) (Lemma 4(b), (H8a))."""
    if geometry == "l1":
        out = np.minimum(r, 2.0)
    elif geometry == "kl":
        out = np.minimum(np.sqrt(2.0 * rho), 2.0)
    else:
        out = np.minimum(np.minimum(r, np.sqrt(2.0 * rho)), 2.0)
    if geometry != "l1":
        out = np.where(vertex, 0.0, out)
    return out


class _BoundedRadius:
    """R_B(s) of (H9a) as a function of the budget scale s, vectorised over s."""

    def __init__(self, xnorm, d2, cap, r, rho, geometry, vertex, eps_g, lam, inflate):
        self.xnorm, self.d2, self.cap = xnorm, d2, cap
        self.r, self.rho, self.geometry, self.vertex = r, rho, geometry, vertex
        self.b = _b(r, rho, geometry, vertex)
        self.eps_g, self.lam, self.inflate = eps_g, lam, inflate
        # Rows whose scaled set is not {pi_i} for s > 0; e_i(s) + b_i >= 2 saturates Delta_i.
        e1 = self._e(np.ones(1))[:, 0]
        moving = e1 > 0
        need = np.zeros_like(r)
        with np.errstate(divide="ignore", invalid="ignore"):
            if geometry in ("l1", "kl_l1"):
                need = np.maximum(need, np.where(moving, (2.0 - self.b) / r, 0.0))
            if geometry in ("kl", "kl_l1"):
                need = np.maximum(need, np.where(moving, (2.0 - self.b) ** 2 / (2.0 * rho), 0.0))
        self.s_sat = float(need.max()) if need.size else 0.0
        self.moving = moving

    def _e(self, s):
        """e_i(s) of (H8b), shape (n, len(s))."""
        s = np.asarray(s, dtype=np.float64)[None, :]
        rs = np.minimum(self.r[:, None] * s, 2.0)
        rhos = self.rho[:, None] * s
        return _b(rs, rhos, self.geometry, self.vertex[:, None])

    def _from_e(self, e):
        delta = np.minimum(self.cap[:, None], self.d2[:, None] + np.minimum(2.0, e + self.b[:, None]) / _SQRT2)
        total = self.eps_g + (self.xnorm[:, None] * delta).sum(axis=0) / self.xnorm.shape[0]
        return self.inflate * total / self.lam

    def __call__(self, s, chunk=256):
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        return np.concatenate([self._from_e(self._e(s[i:i + chunk])) for i in range(0, s.size, chunk)]) \
            if s.size else np.empty(0)

    def at_saturation(self):
        e = np.where(self.moving, 2.0, 0.0)[:, None]
        return float(self._from_e(e)[0])


def _radius_scale(radius, threshold, certified, n_iter=100):
    """Largest checked s with R_B(s) < threshold (Corollary 1), rounded down; inf at saturation."""
    out = np.zeros(threshold.shape[0])
    r_inf = radius.at_saturation()
    inf = r_inf < threshold
    out[inf] = np.inf
    todo = np.flatnonzero(~inf)
    if todo.size == 0:
        return out
    thr = threshold[todo]
    hi_fail = max(2.0 * radius.s_sat, 2.0)
    lo = np.where(certified[todo], 1.0, 0.0)
    hi = np.where(certified[todo], hi_fail, 1.0)
    ok0 = radius(np.zeros(1))[0] < thr
    lo_ok = certified[todo] | ok0  # lo is a checked pass
    for _ in range(n_iter):
        mid = 0.5 * (lo + hi)
        passed = radius(mid) < thr
        lo = np.where(passed, mid, lo)
        hi = np.where(passed, hi, mid)
        lo_ok |= passed
    out[todo] = np.where(lo_ok, lo, 0.0)
    return out


# --------------------------------------------------------------------------- certificate


class _Bounds:
    """Training-side quantities of Theorems 1-2: one parameter-space radius per scale or m.

    Attributes: ``eps_g`` (subgradient norm with allowance), ``q_hat`` (the maximisers used),
    ``radius`` (R_B(s) of (H9a), callable), ``r_flip`` (R_F(m) of (H10) for m = 0..n),
    ``gamma`` (Gamma of (H10)).
    """

    def __init__(self, X, pi, r, rho, geometry, W, grad_norm, lam):
        n, k = pi.shape
        d1 = X.shape[1]
        w_norm = float(np.linalg.norm(W))
        self.w_norm = w_norm
        # Subgradient at W_hat with feasible maximisers (H4), and its norm with allowance.
        z, sig, v = _scores_and_losses(X, W)
        r_arg, rho_arg = _radii(geometry, r, rho)
        singleton = _singleton(pi, r, rho, geometry)
        _, q0 = _worst_case_quiet(v, pi, r_arg, rho_arg)
        q_hat = _feasible_maximisers(q0, pi, r, rho, geometry, singleton)
        G = X.T @ (sig - q_hat) / n + lam * W
        xnorm = np.linalg.norm(X, axis=1)
        e_g = _SAFETY * (n + d1 + k + 16) * _EPS * ((xnorm * (2.0 + xnorm * w_norm)).mean() + lam * w_norm)
        self.grad_norm_measured = float(np.linalg.norm(G))
        self.eps_g = max(float(grad_norm), self.grad_norm_measured) + e_g
        inflate = 1.0 + _SAFETY * (n + d1 + k + 16) * _EPS
        self.q_hat = q_hat

        # Bounded tier (Theorem 1): Lemma 4 quantities.
        vertex = (pi > 0).sum(axis=1) == 1
        d2 = np.linalg.norm(q_hat - pi, axis=1)
        qq = (q_hat * q_hat).sum(axis=1)
        cap_all = np.sqrt(np.maximum(qq + 1.0 - 2.0 * q_hat.min(axis=1), 0.0))
        if geometry == "l1":
            cap = cap_all
        else:
            cap = np.sqrt(np.maximum(qq + 1.0 - 2.0 * np.min(np.where(pi > 0, q_hat, np.inf), axis=1), 0.0))
        self.radius = _BoundedRadius(xnorm, d2, cap, r, rho, geometry, vertex, self.eps_g, lam, inflate)

        # Flip tier (Theorem 2).
        self.gamma = float(_gap_upper(v, pi, r, rho, geometry, q_hat, z, singleton).mean())
        a = np.sort(xnorm * cap_all)[::-1]
        g_m = self.eps_g + np.concatenate([[0.0], np.cumsum(a)]) / n  # m = 0..n
        r_f = inflate * (g_m + np.sqrt(g_m * g_m + 4.0 * lam * self.gamma)) / (2.0 * lam)
        self.r_flip = np.maximum.accumulate(r_f)  # non-decreasing in exact arithmetic; keep it so


def _test_side(Xt, coef, intercept, w_norm):
    """Prediction, nominal margin, ||x||, allowance tau and the radius threshold of (H7)."""
    # Scores as the estimator serves them (batch-invariant order); ties to the lowest index.
    from ._ridge import _ridge_scores

    scores = _ridge_scores(Xt[:, :-1], coef, intercept)
    pred = np.argmax(scores, axis=1)
    rows = np.arange(Xt.shape[0])
    rival = scores.copy()
    rival[rows, pred] = -np.inf
    margin = scores[rows, pred] - rival.max(axis=1)
    xt_norm = np.linalg.norm(Xt, axis=1)  # >= 1 (augmented)
    tau = _SAFETY * (Xt.shape[1] + 16) * _EPS * xt_norm * 2.0 * w_norm  # docs section 5, margins
    threshold = (margin - tau) / (_SQRT2 * xt_norm)  # the parameter radius must be below this
    return pred, margin, xt_norm, tau, threshold


def _certify(X, pi, r, rho, geometry, Xt, coef, intercept, grad_norm, lam, tier, m):
    """Private twin of :func:`certify_softmax_head` on validated arrays.

    Returns (pred, margin, worst_case_margin, certified, radius_scale, max_flips).
    """
    n = X.shape[0]
    W = np.vstack([coef, intercept[None, :]])
    bounds = _Bounds(X, pi, r, rho, geometry, W, grad_norm, lam)
    pred, margin, xt_norm, tau, threshold = _test_side(Xt, coef, intercept, bounds.w_norm)
    r_b1 = float(bounds.radius(np.ones(1))[0])
    certified_b = r_b1 < threshold
    radius_scale = _radius_scale(bounds.radius, threshold, certified_b)
    # Largest m with R_F(m) < threshold (Corollary 2); -1 when m = 0 already fails.
    max_flips = np.searchsorted(bounds.r_flip, threshold, side="left") - 1
    if tier == "bounded":
        wcm = margin - _SQRT2 * r_b1 * xt_norm - tau
        certified = certified_b
    else:
        r_fm = bounds.r_flip[min(m, n)]
        wcm = margin - _SQRT2 * r_fm * xt_norm - tau
        certified = r_fm < threshold
    return pred, margin, wcm, certified, radius_scale, max_flips.astype(np.int64)


def certify_softmax_head(F_train, budget, F_test, *, coef, intercept, grad_norm, alpha, geometry="l1",
                         tier="bounded", m=None, delta=0.05, scope="model", classes=None):
    """Certify a CNAT-trained linear softmax head on fixed features (engine "softmax_sensitivity").

    Statements and proofs: docs/certificates_softmax.md. Tier "bounded" (Theorem 1):
    the head retrained on any nominal labels ``pi'_i`` in the declared sets ``U_i`` (all
    rows at once, same radii) predicts the same class. Tier "flip" (Theorem 2): the
    head retrained after any ``m`` training rows are replaced by anything predicts the
    same class. Both are sufficient conditions from strong convexity: sound, not tight.

    Parameters
    ----------
    F_train : array-like of shape (n_samples, n_features)
        Training features the head was fitted on.
    budget : NoiseBudget
        The training budget (nominal labels and radii) the head was fitted with.
    F_test : array-like of shape (n_points, n_features)
        Points to certify.
    coef : array-like of shape (n_features, n_classes)
    intercept : array-like of shape (n_classes,)
        The head, e.g. from :func:`fit_robust_softmax_head`.
    grad_norm : float
        The subgradient norm reported by the fit. The certificate recomputes the
        subgradient itself and uses the larger of the two.
    alpha : float
        Regularisation the head was fitted with (``lam = alpha / n_samples``).
    geometry : {"l1", "kl", "kl_l1"}, default="l1"
    tier : {"bounded", "flip"}, default="bounded"
        ``"stochastic"`` raises :class:`~sklearn_cnat.exceptions.CertificationError`.
    m : int or None
        Number of replaced training rows; required for tier "flip", ignored otherwise.
    delta : float, default=0.05
        Unused (no stochastic tier).
    scope : {"model", "head"}, default="model"
        Whether the features depend on the training labels ("head") or not ("model").
    classes : array-like of shape (n_classes,) or None
        Class labels in column order; ``None``: ``budget.classes_``.

    Returns
    -------
    Certificate
        ``prediction`` is ``classes[argmax(F_test @ coef + intercept)]`` (ties to the
        lowest index). ``radius_scale`` (bounded tier, rounded down) and ``max_flips``
        (flip tier, ``-1`` when not even ``m = 0`` is certified) are reported for both
        tiers.

    Raises
    ------
    CertificationError
        For tier "stochastic".
    ValueError
        For invalid inputs.
    """
    if tier == "stochastic":
        raise CertificationError(
            "the softmax sensitivity engine cannot certify tier 'stochastic' soundly: the trained head is a "
            "non-linear function of the labels and no concentration bound is proved for it "
            "(docs/certificates_softmax.md, section 6); use tier 'bounded' or 'flip', or the ridge head")
    if tier not in ("bounded", "flip"):
        raise CNATValueError(f"tier must be 'bounded', 'flip' or 'stochastic', got {tier!r}")
    if scope not in ("model", "head"):
        raise CNATValueError(f"scope must be 'model' or 'head', got {scope!r}")
    _check_geometry(geometry)
    F_train = _check_matrix(F_train, "F_train")
    F_test = _check_matrix(F_test, "F_test")
    n, d = F_train.shape
    if F_test.shape[1] != d:
        raise CNATValueError(f"F_test has {F_test.shape[1]} features but F_train has {d}")
    pi, r, rho = _check_budget(budget, n)
    k = pi.shape[1]
    coef = _check_matrix(coef, "coef")
    if coef.shape != (d, k):
        raise CNATValueError(f"coef must have shape ({d}, {k}) (n_features, n_classes), got {coef.shape}")
    intercept = np.asarray(intercept, dtype=np.float64)
    if intercept.shape != (k,) or not np.all(np.isfinite(intercept)):
        raise CNATValueError(f"intercept must be finite with shape ({k},), got shape {intercept.shape}")
    if isinstance(grad_norm, bool) or not isinstance(grad_norm, numbers.Real) or not (
            np.isfinite(grad_norm) and grad_norm >= 0):
        raise CNATValueError(f"grad_norm must be a finite non-negative number, got {grad_norm!r}")
    alpha = _check_positive(alpha, "alpha")
    if tier == "flip":
        if m is None:
            raise CNATValueError("tier 'flip' needs m, the number of training rows that may be replaced")
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 0:
            raise CNATValueError(f"m must be a non-negative integer, got {m!r}")
        m = int(m)
    classes = np.asarray(budget.classes_ if classes is None else classes)
    if classes.shape != (k,):
        raise CNATValueError(f"classes must have shape ({k},) to match the budget, got {classes.shape}")
    pred, margin, wcm, certified, radius_scale, max_flips = _certify(
        _augment(F_train), pi, r, rho, geometry, _augment(F_test), coef, intercept, float(grad_norm),
        alpha / n, tier, m)
    return Certificate(tier=tier, scope=scope, engine="softmax_sensitivity", prediction=classes[pred],
                       certified=np.asarray(certified, dtype=bool), margin=margin, worst_case_margin=wcm,
                       radius_scale=radius_scale, max_flips=max_flips, delta=None, delta_min=None,
                       m=m if tier == "flip" else None, classes=classes)
