"""Tests of sklearn_cnat.losses.CNATLoss (worst-case and smooth modes)."""

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

from sklearn_cnat.losses import CNATLoss, _kl_rows, _sample_in_set
from sklearn_cnat.sets import worst_case_expectation

GEOMETRIES = ["l1", "kl", "kl_l1"]
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)


def _batch(n=8, K=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, K, generator=g, dtype=dtype) * 2
    pi = torch.distributions.Dirichlet(torch.ones(K, dtype=dtype)).sample((n,))
    r = torch.rand(n, generator=g, dtype=dtype) * 0.8
    rho = torch.rand(n, generator=g, dtype=dtype) * 0.3
    return logits, pi, r, rho


def _generic_worst_case(v, pi, r=None, rho=None, restarts=6, seed=0):
    """Multi-start SLSQP over (q, t) with t >= |q - pi|; best feasible value found."""
    rng = np.random.default_rng(seed)
    K = len(v)
    zeros = np.zeros(K)
    cons = [{"type": "eq", "fun": lambda x: x[:K].sum() - 1, "jac": lambda x: np.r_[np.ones(K), zeros]}]
    if rho is not None:
        cons.append({"type": "ineq",
                     "fun": lambda x: rho - np.sum(np.maximum(x[:K], 1e-300) * np.log(np.maximum(x[:K], 1e-300) / pi)),
                     "jac": lambda x: np.r_[-(np.log(np.maximum(x[:K], 1e-300) / pi) + 1), zeros]})
    if r is not None:
        eye = np.eye(K)
        A = np.block([[-eye, eye], [eye, eye]])
        cons.append({"type": "ineq", "fun": lambda x: A @ x - np.r_[-pi, pi], "jac": lambda x: A})
        cons.append({"type": "ineq", "fun": lambda x: r - x[K:].sum(), "jac": lambda x: np.r_[zeros, -np.ones(K)]})
    best = -np.inf
    for j in range(restarts):
        q0 = 0.9 * pi + 0.1 / K if j == 0 else 0.5 * pi + 0.5 * rng.dirichlet(np.ones(K))
        res = minimize(lambda x: -x[:K] @ v, np.r_[q0, np.abs(q0 - pi)], jac=lambda x: np.r_[-v, zeros],
                       bounds=[(0, 1)] * (2 * K), constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 1000})
        q = np.clip(res.x[:K], 0, None)
        q /= q.sum()
        kl_ok = rho is None or np.sum(q[q > 0] * np.log(q[q > 0] / pi[q > 0])) <= rho + 1e-9
        l1_ok = r is None or np.abs(q - pi).sum() <= r + 1e-9
        if kl_ok and l1_ok:
            best = max(best, q @ v)
    return best


# --------------------------------------------------------------------------
# worst mode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("geometry,budgets", [
    ("l1", {}), ("l1", {"r": 0.0}), ("l1", {"r": 0.0, "rho": 0.5}),
    ("kl", {"rho": 0.0}), ("kl", {"rho": 0.0, "r": 0.5}),
    ("kl_l1", {"r": 0.0, "rho": 0.3}), ("kl_l1", {"r": 0.4, "rho": 0.0}),
])
@pytest.mark.parametrize("mode", ["worst", "smooth"])
def test_zero_budget_is_soft_cross_entropy(geometry, budgets, mode):
    logits, pi, _, _ = _batch()
    loss = CNATLoss(geometry=geometry, mode=mode, random_state=0)(logits, pi, **budgets)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, pi).item(), abs=1e-12)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_worst_case_matches_generic_solver(geometry):
    logits, pi, r, rho = _batch(n=6, K=4, seed=1)
    losses = CNATLoss(geometry=geometry, reduction="none")(logits, pi, r=r, rho=rho)
    v = -F.log_softmax(logits, dim=-1).numpy()
    for i in range(len(v)):
        ri = float(r[i]) if geometry != "kl" else None
        rhoi = float(rho[i]) if geometry != "l1" else None
        reference = _generic_worst_case(v[i], pi[i].numpy(), r=ri, rho=rhoi)
        assert losses[i].item() >= reference - 1e-8
        assert losses[i].item() == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gradcheck(geometry):
    logits, pi, r, rho = _batch(n=4, K=5, seed=2)
    criterion = CNATLoss(geometry=geometry, reduction="sum")
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: criterion(z, pi, r=r, rho=rho), (logits,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_gradient_is_cross_entropy_gradient_at_the_maximiser(geometry):
    logits, pi, r, rho = _batch(seed=3)
    logits.requires_grad_(True)
    CNATLoss(geometry=geometry, reduction="sum")(logits, pi, r=r, rho=rho).backward()
    _, q = worst_case_expectation(-F.log_softmax(logits.detach(), -1), pi,
                                  r=None if geometry == "kl" else r, rho=None if geometry == "l1" else rho)
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach(), -1) - q)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_worst_case_dominates_nominal_and_grows_with_budget(geometry):
    logits, pi, r, rho = _batch(seed=4)
    criterion = CNATLoss(geometry=geometry, reduction="none")
    small = criterion(logits, pi, r=r / 2, rho=rho / 2)
    large = criterion(logits, pi, r=r, rho=rho)
    nominal = F.cross_entropy(logits, pi, reduction="none")
    assert torch.all(small >= nominal - 1e-12)
    assert torch.all(large >= small - 1e-12)
    assert torch.any(large > nominal + 1e-3)


def test_reductions():
    logits, pi, r, rho = _batch(seed=5)
    none = CNATLoss(geometry="kl_l1", reduction="none")(logits, pi, r=r, rho=rho)
    assert none.shape == (8,)
    total = CNATLoss(geometry="kl_l1", reduction="sum")(logits, pi, r=r, rho=rho)
    mean = CNATLoss(geometry="kl_l1", reduction="mean")(logits, pi, r=r, rho=rho)
    assert total.ndim == 0 and mean.ndim == 0
    assert total.item() == pytest.approx(none.sum().item(), abs=1e-12)
    assert mean.item() == pytest.approx(none.mean().item(), abs=1e-12)


def test_geometry_selects_its_budget():
    logits, pi, r, rho = _batch(seed=6)
    l1 = CNATLoss(geometry="l1")
    kl = CNATLoss(geometry="kl")
    assert l1(logits, pi, r=r, rho=rho).item() == l1(logits, pi, r=r).item()
    assert kl(logits, pi, r=r, rho=rho).item() == kl(logits, pi, rho=rho).item()
    assert l1(logits, pi, r=0.3).item() == pytest.approx(l1(logits, pi, r=torch.full((8,), 0.3)).item())


def test_float32_inputs_like_skorch_batches():
    logits, pi, r, rho = _batch(seed=7, dtype=torch.float32)
    loss = CNATLoss(geometry="kl_l1")(logits.requires_grad_(True), pi, r=r, rho=rho)
    assert loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == torch.float32 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("mode", ["worst", "smooth"])
def test_one_hot_pi_with_kl_is_plain_cross_entropy(mode):
    logits, _, _, _ = _batch(seed=8)
    pi = F.one_hot(torch.arange(8) % 5, 5).double()
    with pytest.warns(UserWarning, match="KL ball"):
        loss = CNATLoss(geometry="kl", mode=mode)(logits, pi, rho=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, pi).item(), abs=1e-12)


def test_module_pickles():
    criterion = CNATLoss(geometry="kl", mode="smooth", random_state=0)
    logits, pi, r, rho = _batch(seed=9)
    criterion(logits, pi, rho=rho)
    clone = pickle.loads(pickle.dumps(criterion))
    assert clone(logits, pi, rho=rho).item() == criterion(logits, pi, rho=rho).item()


# --------------------------------------------------------------------------
# smooth mode
# --------------------------------------------------------------------------


@st.composite
def sampler_problems(draw):
    n = draw(st.integers(1, 6))
    K = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pi = rng.dirichlet(np.full(K, draw(st.sampled_from([0.2, 1.0, 5.0]))), size=n)
    if draw(st.booleans()):
        pi[:, 0] = 0.0
        pi[:, 1] += 1e-3
        pi /= pi.sum(1, keepdims=True)
    r = rng.choice([0.0, 1e-3, 0.1, 0.5, 2.0], size=n)
    rho = rng.choice([0.0, 1e-4, 0.05, 0.5, 5.0], size=n)
    return pi, r, rho, draw(st.sampled_from(GEOMETRIES)), draw(st.integers(0, 1000))


@SETTINGS
@given(sampler_problems())
def test_sampled_targets_stay_in_the_set(problem):
    pi, r, rho, geometry, seed = problem
    r_t = None if geometry == "kl" else torch.tensor(r)
    rho_t = None if geometry == "l1" else torch.tensor(rho)
    pi_t = torch.tensor(pi)
    q = _sample_in_set(pi_t, r_t, rho_t, torch.Generator().manual_seed(seed))
    assert torch.all(q >= 0)
    torch.testing.assert_close(q.sum(-1), torch.ones(len(pi), dtype=torch.float64), atol=1e-12, rtol=0)
    if r_t is not None:
        assert torch.all((q - pi_t).abs().sum(-1) <= r_t + 1e-12)
    if rho_t is not None:
        assert torch.all(q[pi_t == 0] == 0)
        assert torch.all(_kl_rows(q, pi_t) <= rho_t + 1e-12)


@SETTINGS
@given(sampler_problems())
def test_smooth_loss_never_exceeds_worst_case(problem):
    pi, r, rho, geometry, seed = problem
    logits = torch.tensor(np.random.default_rng(seed).normal(size=pi.shape) * 3)
    kwargs = {"r": torch.tensor(r), "rho": torch.tensor(rho)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # KL support restriction
        smooth = CNATLoss(geometry, reduction="none", mode="smooth", random_state=seed)(logits, pi, **kwargs)
        worst = CNATLoss(geometry, reduction="none")(logits, pi, **kwargs)
    nominal = F.cross_entropy(logits, torch.tensor(pi), reduction="none")
    assert torch.all(smooth <= worst + 1e-10)
    assert torch.all(torch.minimum(nominal, smooth) <= worst + 1e-10)


def test_smooth_is_reproducible_and_random_across_calls():
    logits, pi, r, rho = _batch(seed=10)
    a = CNATLoss(geometry="kl_l1", mode="smooth", random_state=3)
    b = CNATLoss(geometry="kl_l1", mode="smooth", random_state=3)
    first = a(logits, pi, r=r, rho=rho)
    assert first.item() == b(logits, pi, r=r, rho=rho).item()
    assert a(logits, pi, r=r, rho=rho).item() != first.item()
    seeded_np = CNATLoss(geometry="l1", mode="smooth", random_state=np.random.RandomState(0))
    assert torch.isfinite(seeded_np(logits, pi, r=r))


def test_smooth_gradient_is_cross_entropy_gradient():
    logits, pi, r, _ = _batch(seed=11)
    logits.requires_grad_(True)
    CNATLoss(geometry="l1", mode="smooth", reduction="sum", random_state=0)(logits, pi, r=r).backward()
    q = _sample_in_set(pi, r, None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits.grad, torch.softmax(logits.detach(), -1) - q)


def test_smooth_uses_global_generator_without_random_state():
    logits, pi, r, _ = _batch(seed=12)
    criterion = CNATLoss(geometry="l1", mode="smooth")
    torch.manual_seed(5)
    first = criterion(logits, pi, r=r).item()
    torch.manual_seed(5)
    assert criterion(logits, pi, r=r).item() == first


# --------------------------------------------------------------------------
# Errors: one test per message
# --------------------------------------------------------------------------


@pytest.mark.parametrize("param", ["geometry", "reduction", "mode"])
def test_error_bad_parameter(param):
    logits, pi, r, rho = _batch()
    with pytest.raises(ValueError, match=f"{param} must be one of"):
        CNATLoss(**{param: "bogus"})(logits, pi, r=r, rho=rho)


@pytest.mark.parametrize("geometry", ["kl", "kl_l1"])
def test_error_missing_rho(geometry):
    logits, pi, r, _ = _batch()
    with pytest.raises(ValueError, match=f"geometry='{geometry}' needs rho"):
        CNATLoss(geometry=geometry)(logits, pi, r=r)


def test_error_missing_r():
    logits, pi, _, rho = _batch()
    with pytest.raises(ValueError, match="geometry='kl_l1' needs r"):
        CNATLoss(geometry="kl_l1")(logits, pi, rho=rho)


def test_error_logits_not_a_float_tensor():
    _, pi, _, _ = _batch()
    with pytest.raises(ValueError, match="logits must be a floating-point torch.Tensor"):
        CNATLoss()(np.zeros((8, 5)), pi)


def test_error_logits_not_2d():
    with pytest.raises(ValueError, match=r"logits must be 2-D of shape \(n, K\)"):
        CNATLoss()(torch.zeros(5), torch.full((5,), 0.2))


def test_error_logits_not_finite():
    logits, pi, _, _ = _batch()
    logits[0, 0] = float("nan")
    with pytest.raises(ValueError, match="logits contain NaN or infinite values"):
        CNATLoss()(logits, pi)


def test_error_pi_not_2d():
    logits, _, _, _ = _batch()
    with pytest.raises(ValueError, match=r"pi must be 2-D of shape \(n, K\)"):
        CNATLoss()(logits, torch.full((5,), 0.2))


def test_error_mismatched_k():
    logits, _, _, _ = _batch()
    with pytest.raises(ValueError, match="mismatched K: logits have 5 classes but pi has 4"):
        CNATLoss()(logits, torch.full((8, 4), 0.25))


def test_error_mismatched_n():
    logits, _, _, _ = _batch()
    with pytest.raises(ValueError, match="mismatched n: logits have 8 rows but pi has 3"):
        CNATLoss()(logits, torch.full((3, 5), 0.2))


@pytest.mark.parametrize("mode", ["worst", "smooth"])
def test_error_pi_not_distributions(mode):
    logits, _, _, _ = _batch()
    with pytest.raises(ValueError, match="rows of pi must sum to 1"):
        CNATLoss(mode=mode)(logits, torch.full((8, 5), 0.3), r=0.1)
