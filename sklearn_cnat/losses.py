"""CNAT loss: cross-entropy against the worst label distribution of an uncertainty set.

For logits ``z_i`` and a label uncertainty set ``U_i`` around the nominal
label distribution ``pi_i`` (an l1 ball, a KL ball or their intersection, see
:mod:`sklearn_cnat.sets` and ``docs/sets.md``), :class:`CNATLoss` computes the
robust cross-entropy (S15)

    L_i(z) = sup_{q in U_i} sum_k q_k * CE_k(z_i),   CE_k(z) = -log softmax(z)_k,

or, in ``mode="smooth"``, the cross-entropy against a label distribution drawn
at random inside ``U_i`` (S16).

The early-learning term (Liu et al., "Early-Learning Regularization Prevents
Memorization of Noisy Labels", NeurIPS 2020, eqs. 5-6) that
:class:`~sklearn_cnat.CNATClassifier` (``elr_lambda``) and
:class:`~sklearn_cnat.baselines.ELRLoss` add lives here as two pure functions:
:func:`_elr_update` (the temporal ensemble ``t_i``) and :func:`_elr_penalty`
(``log(1 - <t_i, p_i>)``).
"""

import numbers

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .sets import _validate_budget, _validate_pi, _warn_kl_support, worst_case_expectation
from .exceptions import CNATValueError

__all__ = ["CNATLoss"]

_GEOMETRIES = ("l1", "kl", "kl_l1")
_REDUCTIONS = ("mean", "sum", "none")
_MODES = ("worst", "smooth")
# Bisection steps for the KL step length of the sampler: 2**-60 of the segment.
_SAMPLER_BISECTIONS = 60


class CNATLoss(nn.Module):
    """Robust cross-entropy over per-example label uncertainty sets.

    ``mode="worst"`` computes exactly ``sup_{q in U_i} <q, CE(z_i)>`` (S15) with
    :func:`~sklearn_cnat.sets.worst_case_expectation`; its gradient is the
    cross-entropy gradient against the maximiser ``q*`` (held fixed: envelope
    theorem, docs/sets.md (S14)). ``mode="smooth"`` draws, per example and per
    call, a label distribution ``q`` inside ``U_i`` (sampler (S16), which never
    leaves the set) and returns the cross-entropy against it; it never exceeds
    the worst-case loss.

    Parameters
    ----------
    geometry : {"l1", "kl", "kl_l1"}, default="l1"
        The set: l1 ball of radius ``r`` (S1), KL ball ``KL(q || pi) <= rho``
        (S3), or their intersection (S8). Only the budget(s) of the geometry
        are used; the other is ignored.
    reduction : {"mean", "sum", "none"}, default="mean"
        Reduction over the batch.
    mode : {"worst", "smooth"}, default="worst"
        Exact worst case, or a random point of the set.
    random_state : int, numpy random state/generator or None, default=None
        Seeds the ``torch.Generator`` of ``mode="smooth"`` (one per device,
        created at the first call). ``None`` uses torch's global generator.

    Notes
    -----
    The KL ball only contains distributions supported where ``pi > 0`` (see
    :func:`~sklearn_cnat.sets.worst_case_expectation`): with one-hot ``pi`` and
    ``geometry="kl"`` the loss is the plain cross-entropy.

    Examples
    --------
    >>> import torch
    >>> from sklearn_cnat.losses import CNATLoss
    >>> logits = torch.tensor([[2.0, 0.0, -1.0]])
    >>> pi = torch.tensor([[0.8, 0.2, 0.0]])
    >>> loss = CNATLoss(geometry="l1")(logits, pi, r=0.2)
    >>> round(float(loss), 4)  # 0.1 of mass moved from class 0 to class 2
    0.8698
    """

    def __init__(self, geometry="l1", reduction="mean", mode="worst", random_state=None):
        super().__init__()
        self.geometry = geometry
        self.reduction = reduction
        self.mode = mode
        self.random_state = random_state
        self._generators = {}

    def extra_repr(self):
        return f"geometry={self.geometry!r}, reduction={self.reduction!r}, mode={self.mode!r}"

    def forward(self, logits, pi, r=None, rho=None):
        """Robust cross-entropy of ``logits`` against the sets around ``pi``.

        Parameters
        ----------
        logits : torch.Tensor of shape (n, K)
            Unnormalised scores; must be finite.
        pi : torch.Tensor or array-like of shape (n, K)
            Nominal label distributions (rows on the simplex).
        r : torch.Tensor of shape (n,), float or None, default=None
            l1 radii (used by ``"l1"`` and ``"kl_l1"``; ``None`` means 0 for
            ``"l1"``). Values above 2 are clipped to 2.
        rho : torch.Tensor of shape (n,), float or None, default=None
            KL radii (needed by ``"kl"`` and ``"kl_l1"``).

        Returns
        -------
        loss : torch.Tensor
            Scalar for ``reduction="mean"`` or ``"sum"``, shape (n,) for
            ``"none"``.
        """
        self._check_params()
        pi = _check_logits_and_pi(logits, pi)
        r, rho = self._select_budgets(r, rho)
        log_p = F.log_softmax(logits, dim=-1)
        if self.mode == "worst":
            losses, _ = worst_case_expectation(-log_p, pi, r=r, rho=rho)
        else:
            q = self._sample(pi, r, rho, logits.device)
            losses = -(q.to(log_p.dtype) * log_p).sum(dim=-1)
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def _check_params(self):
        for name, allowed in (("geometry", _GEOMETRIES), ("reduction", _REDUCTIONS), ("mode", _MODES)):
            value = getattr(self, name)
            if value not in allowed:
                raise CNATValueError(f"{name} must be one of {allowed}; got {value!r}.")

    def _select_budgets(self, r, rho):
        if self.geometry == "l1":
            return (0.0 if r is None else r), None
        if rho is None:
            raise CNATValueError(f"geometry={self.geometry!r} needs rho, the KL radius; got rho=None.")
        if self.geometry == "kl":
            return None, rho
        if r is None:
            raise CNATValueError("geometry='kl_l1' needs r, the l1 radius; got r=None.")
        return r, rho

    def _sample(self, pi, r, rho, device):
        pi_np = _validate_pi(pi.detach().cpu().numpy().astype(np.float64))
        n = pi_np.shape[0]
        r_np = _validate_budget(r, "r", n)
        rho_np = _validate_budget(rho, "rho", n)
        _warn_kl_support(pi_np, r_np, rho_np, stacklevel=4)
        as_t = lambda a: None if a is None else torch.as_tensor(a, dtype=torch.float64, device=device)  # noqa: E731
        r_t = None if r_np is None else as_t(np.minimum(r_np, 2.0))
        return _sample_in_set(as_t(pi_np), r_t, as_t(rho_np), self._generator(device))

    def _generator(self, device):
        if self.random_state is None:
            return None
        device = torch.device(device)
        if device not in self._generators:
            seed = self.random_state
            if not isinstance(seed, numbers.Integral):
                from sklearn.utils import check_random_state

                seed = check_random_state(seed).randint(np.iinfo(np.int32).max)
            self._generators[device] = torch.Generator(device=device).manual_seed(int(seed))
        return self._generators[device]


def _elr_probabilities(logits):
    """Softmax of ``logits`` (n, K) clipped to ``[1e-4, 1 - 1e-4]`` (Liu et al. 2020, section 4)."""
    return torch.softmax(logits, dim=-1).clamp(1e-4, 1.0 - 1e-4)


def _elr_update(memory, index, p, beta):
    """Temporal ensemble, in place: ``t_i <- beta t_i + (1 - beta) p_i / sum(p_i)`` (eq. 5).

    ``memory`` (n_samples, K) holds ``t``; ``index`` (n,) the rows of the batch; ``p``
    (n, K) the clipped probabilities (detached here).
    """
    p = p.detach()
    memory[index] = beta * memory[index] + (1.0 - beta) * (p / p.sum(dim=-1, keepdim=True)).to(memory.dtype)


def _elr_penalty(t, p):
    """Per-example ``log(1 - <t_i, p_i>)`` (eq. 6) for targets ``t`` and probabilities ``p`` (n, K)."""
    return torch.log(1.0 - (t.to(p.dtype) * p).sum(dim=-1))


def _check_logits_and_pi(logits, pi):
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise CNATValueError(f"logits must be a floating-point torch.Tensor; got {type(logits).__name__}.")
    if logits.ndim != 2:
        raise CNATValueError(f"logits must be 2-D of shape (n, K); got shape {tuple(logits.shape)}.")
    if not torch.isfinite(logits).all():
        raise CNATValueError("logits contain NaN or infinite values (diverged training or a bad input?).")
    pi = torch.as_tensor(pi, device=logits.device)
    if pi.ndim != 2:
        raise CNATValueError(f"pi must be 2-D of shape (n, K); got shape {tuple(pi.shape)}.")
    if pi.shape[1] != logits.shape[1]:
        raise CNATValueError(f"mismatched K: logits have {logits.shape[1]} classes but pi has {pi.shape[1]}.")
    if pi.shape[0] != logits.shape[0]:
        raise CNATValueError(f"mismatched n: logits have {logits.shape[0]} rows but pi has {pi.shape[0]}.")
    return pi


def _kl_rows(q, pi):
    """KL(q || pi) row-wise, for q vanishing where pi does."""
    return (torch.xlogy(q, q) - torch.xlogy(q, pi)).sum(dim=-1)


def _sample_in_set(pi, r, rho, generator=None):
    """Draw one label distribution per row inside the uncertainty set (S16).

    ``q = pi + t (d - pi)`` with ``d`` uniform on the simplex over the allowed
    classes (all classes, or the support of ``pi`` when ``rho`` is given), and
    ``t = u * t_max``, ``u ~ U(0, 1)``, where ``t_max`` is the largest step
    keeping ``q`` in the set: ``r / ||d - pi||_1`` for the l1 ball (the
    distance is linear in ``t``), the root of ``KL(q(t) || pi) = rho`` found by
    bisection from the feasible side for the KL ball (KL is convex along the
    segment and 0 at ``t = 0``), the smaller of both for the intersection.

    Parameters
    ----------
    pi : torch.Tensor of shape (n, K), float64, validated rows on the simplex
    r, rho : torch.Tensor of shape (n,), float64, or None
    generator : torch.Generator or None

    Returns
    -------
    q : torch.Tensor of shape (n, K), float64
    """
    n, K = pi.shape
    allowed = pi > 0 if rho is not None else torch.ones_like(pi, dtype=torch.bool)
    uniform = torch.rand(n, K, generator=generator, dtype=pi.dtype, device=pi.device)
    exponential = -torch.log1p(-uniform).clamp_min(torch.finfo(pi.dtype).tiny)
    exponential = exponential * allowed
    d = exponential / exponential.sum(dim=-1, keepdim=True)  # Dirichlet(1, ..., 1) on the allowed face
    direction = d - pi
    t_max = torch.ones(n, dtype=pi.dtype, device=pi.device)
    if r is not None:
        dist = direction.abs().sum(dim=-1)
        t_max = torch.where(dist > r, r / dist.clamp_min(torch.finfo(pi.dtype).tiny), t_max)
    if rho is not None:
        t_max = torch.minimum(t_max, _kl_step(pi, direction, rho))
    t = torch.rand(n, generator=generator, dtype=pi.dtype, device=pi.device) * t_max
    q = pi + t[:, None] * direction
    return q.clamp_min(0.0)


def _kl_along(pi, direction, t):
    """KL(pi + t * direction || pi) row-wise, accurate for small t (log1p form)."""
    support = pi > 0
    ratio = torch.where(support, t[:, None] * direction / torch.where(support, pi, 1.0), 0.0)
    q = pi + t[:, None] * direction
    return torch.where(support, q * torch.log1p(ratio), 0.0).sum(dim=-1)


def _kl_step(pi, direction, rho):
    """Largest t in [0, 1] with KL(pi + t * direction || pi) <= rho, from below (S16)."""
    ones = torch.ones_like(rho)
    full = _kl_along(pi, direction, ones) <= rho
    lo = torch.zeros_like(rho)
    hi = ones
    for _ in range(_SAMPLER_BISECTIONS):
        mid = 0.5 * (lo + hi)
        inside = _kl_along(pi, direction, mid) <= rho
        lo = torch.where(inside, mid, lo)
        hi = torch.where(inside, hi, mid)
    step = torch.where(full, ones, lo)
    return torch.where(rho > 0, step, torch.zeros_like(step))
