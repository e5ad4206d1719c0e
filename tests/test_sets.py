"""Tests of sklearn_cnat.sets: exact worst cases over l1, KL and l1 ∩ KL label sets.

Exactness is checked against generic solvers: ``scipy.optimize.linprog`` for
the l1 ball (auxiliary variables t >= |q - pi|) and multi-start SLSQP on the
smooth reformulation (same auxiliary variables, KL as a smooth constraint) for
the KL ball and the intersection.
"""

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog, minimize

from sklearn_cnat.sets import _l1_two_class_worst_case, _worst_case, worst_case_expectation

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True)


# --------------------------------------------------------------------------
# Reference solvers
# --------------------------------------------------------------------------


def _kl(q, pi):
    mask = q > 0
    return float(np.sum(q[mask] * np.log(q[mask] / pi[mask])))


def _feasible(q, pi, r, rho, slack=0.0):
    ok = True
    if rho is not None:
        ok &= bool(np.all(q[pi == 0] == 0)) and _kl(q, pi) <= rho + slack
    if r is not None:
        ok &= np.abs(q - pi).sum() <= r + slack
    return ok


def _pull_inside(x, pi, r, rho):
    """Largest step from pi towards x that is feasible (both constraints are convex)."""
    if _feasible(x, pi, r, rho):
        return x
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _feasible(pi + mid * (x - pi), pi, r, rho) else (lo, mid)
    return pi + lo * (x - pi)


def _slsqp_worst_case(v, pi, r=None, rho=None, restarts=6, seed=0):
    """Best strictly feasible value found by multi-start SLSQP (a lower bound on the sup)."""
    if r == 0 or rho == 0:  # the set is {pi}; rounding would let KL(q || pi) < 0 near pi
        return pi @ v
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(pi > 0) if rho is not None else np.arange(len(v))
    vs, ps, k = v[keep], pi[keep], len(keep)
    n_aux = k if r is not None else 0  # the l1 ball needs auxiliary |q - pi| variables, KL alone does not
    zeros = np.zeros(n_aux)
    cons = [{"type": "eq", "fun": lambda x: x[:k].sum() - 1, "jac": lambda x: np.r_[np.ones(k), zeros]}]
    if rho is not None:
        def kl_slack(x):
            q = np.maximum(x[:k], 1e-300)
            return rho - np.sum(q * np.log(q / ps))

        def kl_slack_jac(x):
            q = np.maximum(x[:k], 1e-300)
            return np.r_[-(np.log(q / ps) + 1.0), zeros]

        cons.append({"type": "ineq", "fun": kl_slack, "jac": kl_slack_jac})
    if r is not None:
        eye = np.eye(k)
        A = np.block([[-eye, eye], [eye, eye]])
        cons.append({"type": "ineq", "fun": lambda x: A @ x - np.r_[-ps, ps], "jac": lambda x: A})
        cons.append({"type": "ineq", "fun": lambda x: r - x[k:].sum(), "jac": lambda x: np.r_[zeros, -np.ones(k)]})
    best = -np.inf
    for j in range(restarts):
        # not pi itself: there the KL gradient is parallel to the simplex constraint
        q0 = 0.9 * ps + 0.1 / k if j == 0 else 0.5 * ps + 0.5 * rng.dirichlet(np.ones(k))
        x0 = np.r_[q0, np.abs(q0 - ps)] if n_aux else q0
        res = minimize(lambda x: -x[:k] @ vs, x0, jac=lambda x: np.r_[-vs, zeros],
                       bounds=[(0, 1)] * (k + n_aux), constraints=cons, method="SLSQP",
                       options={"ftol": 1e-15, "maxiter": 1000})
        q = np.clip(res.x[:k], 0, None)
        q = _pull_inside(q / q.sum(), ps, r, rho)
        best = max(best, q @ vs)
    return best


def _linprog_l1_worst_case(v, pi, r):
    """max <q, v> s.t. q in simplex, t >= q - pi, t >= pi - q, sum t <= r."""
    K = len(v)
    eye, zero = np.eye(K), np.zeros((1, K))
    A_ub = np.block([[eye, -eye], [-eye, -eye], [zero, np.ones((1, K))]])
    b_ub = np.r_[pi, -pi, r]
    A_eq = np.r_[np.ones(K), np.zeros(K)][None]
    res = linprog(np.r_[-v, np.zeros(K)], A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0],
                  bounds=[(0, None)] * (2 * K), method="highs",
                  options={"primal_feasibility_tolerance": 1e-10, "dual_feasibility_tolerance": 1e-10})
    assert res.status == 0
    return -res.fun


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------


@st.composite
def problems(draw, k_min=2, k_max=5, zeros=True):
    K = draw(st.integers(k_min, k_max))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.full(K, draw(st.sampled_from([0.3, 1.0, 5.0]))))
    if zeros and K > 2 and draw(st.booleans()):
        pi[rng.integers(K)] = 0.0
        pi /= pi.sum()
    v = rng.normal(size=K) * draw(st.sampled_from([0.1, 1.0, 5.0]))
    if draw(st.booleans()):
        v = np.round(v)  # ties
    r = draw(st.sampled_from([0.0, 0.01, 0.1, 0.4, 1.0, 1.9, 2.0]))
    rho = draw(st.sampled_from([0.0, 1e-4, 0.01, 0.1, 0.5, 2.0, "near saturation"]))
    if rho == "near saturation":  # just below -log pi(T), (S7): large tilts
        best = np.max(np.where(pi > 0, v, -np.inf))
        rho = -np.log(pi[(pi > 0) & (v == best)].sum()) * (1 - draw(st.sampled_from([1e-2, 1e-5])))
    return v, pi, r, rho


def _solve(v, pi, r=None, rho=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        value, q = worst_case_expectation(v[None], pi[None], r=r, rho=rho)
    return value[0], q[0]


def _check_maximiser(value, q, v, pi, r, rho):
    assert np.all(q >= 0)
    assert q.sum() == pytest.approx(1.0, abs=1e-12)
    assert q @ v == pytest.approx(value, abs=1e-12)
    assert _feasible(q, pi, r, rho, slack=1e-8)


# --------------------------------------------------------------------------
# Exactness against generic solvers
# --------------------------------------------------------------------------


@SETTINGS
@given(problems())
def test_l1_matches_linprog(problem):
    v, pi, r, _ = problem
    value, q = _solve(v, pi, r=r)
    _check_maximiser(value, q, v, pi, r, None)
    assert value == pytest.approx(_linprog_l1_worst_case(v, pi, r), abs=1e-6)


@SETTINGS
@given(problems())
def test_kl_matches_generic_solver(problem):
    v, pi, _, rho = problem
    value, q = _solve(v, pi, rho=rho)
    _check_maximiser(value, q, v, pi, None, rho)
    reference = _slsqp_worst_case(v, pi, rho=rho)
    assert value >= reference - 1e-9  # the reference is feasible, so it cannot beat the sup
    assert value == pytest.approx(reference, abs=1e-6)


@SETTINGS
@given(problems())
def test_kl_l1_matches_generic_solver(problem):
    v, pi, r, rho = problem
    value, q = _solve(v, pi, r=r, rho=rho)
    _check_maximiser(value, q, v, pi, r, rho)
    reference = _slsqp_worst_case(v, pi, r=r, rho=rho)
    assert value >= reference - 1e-9
    assert value == pytest.approx(reference, abs=1e-6)


@SETTINGS
@given(problems(zeros=False), st.sampled_from(["l1", "kl", "kl_l1"]))
def test_value_between_nominal_and_max(problem, geometry):
    v, pi, r, rho = problem
    budgets = {"l1": (r, None), "kl": (None, rho), "kl_l1": (r, rho)}[geometry]
    value, _ = _solve(v, pi, *budgets)
    assert pi @ v - 1e-12 <= value <= v.max() + 1e-12


def test_intersection_is_tighter_than_each_ball():
    rng = np.random.default_rng(0)
    v, pi = rng.normal(size=(50, 6)), rng.dirichlet(np.ones(6), size=50)
    both, _ = worst_case_expectation(v, pi, r=0.3, rho=0.05)
    l1, _ = worst_case_expectation(v, pi, r=0.3)
    kl, _ = worst_case_expectation(v, pi, rho=0.05)
    assert np.all(both <= np.minimum(l1, kl) + 1e-12)
    assert np.any(both < np.minimum(l1, kl) - 1e-3)  # both constraints bind somewhere


def test_batched_rows_match_single_rows():
    rng = np.random.default_rng(1)
    n, K = 30, 5
    v, pi = rng.normal(size=(n, K)), rng.dirichlet(np.ones(K), size=n)
    r, rho = rng.uniform(0, 1, n), rng.uniform(0, 0.5, n)
    value, q = worst_case_expectation(v, pi, r=r, rho=rho)
    for i in range(0, n, 7):
        vi, qi = worst_case_expectation(v[i:i + 1], pi[i:i + 1], r=r[i], rho=rho[i])
        np.testing.assert_allclose(vi[0], value[i], atol=1e-12)


@pytest.mark.parametrize("geometry", ["l1", "kl", "kl_l1"])
def test_hundred_classes(geometry):
    rng = np.random.default_rng(2)
    K = 100
    v, pi = rng.normal(size=K), rng.dirichlet(np.ones(K))
    r, rho = {"l1": (0.3, None), "kl": (None, 0.1), "kl_l1": (0.3, 0.1)}[geometry]
    value, q = _solve(v, pi, r=r, rho=rho)
    _check_maximiser(value, q, v, pi, r, rho)
    if geometry == "l1":
        assert value == pytest.approx(_linprog_l1_worst_case(v, pi, r), abs=1e-6)
    else:
        # at K = 100 SLSQP takes minutes; an interior-point conic solver (cvxpy + Clarabel,
        # exponential cone for KL) is the generic reference here
        cp = pytest.importorskip("cvxpy")
        q_var = cp.Variable(K)
        cons = [cp.sum(q_var) == 1, q_var >= 0, cp.sum(cp.rel_entr(q_var, pi)) <= rho]
        if r is not None:
            cons.append(cp.norm1(q_var - pi) <= r)
        problem = cp.Problem(cp.Maximize(v @ q_var), cons)
        problem.solve(solver="CLARABEL")
        assert value == pytest.approx(problem.value, abs=1e-6)


# --------------------------------------------------------------------------
# Edge cases
# --------------------------------------------------------------------------


def test_no_budget_is_the_nominal_distribution():
    v, pi = np.array([[1.0, 2.0, 3.0]]), np.array([[0.2, 0.3, 0.5]])
    value, q = worst_case_expectation(v, pi)
    np.testing.assert_array_equal(q, pi)
    assert value[0] == pytest.approx(2.3)


@pytest.mark.parametrize("budgets", [{"r": 0.0}, {"rho": 0.0}, {"r": 0.0, "rho": 0.5}, {"r": 0.5, "rho": 0.0}])
def test_zero_budget_returns_pi(budgets):
    rng = np.random.default_rng(3)
    v, pi = rng.normal(size=(10, 4)), rng.dirichlet(np.ones(4), size=10)
    value, q = worst_case_expectation(v, pi, **budgets)
    np.testing.assert_allclose(q, pi, atol=1e-15)
    np.testing.assert_allclose(value, (pi * v).sum(1), atol=1e-14)


def test_l1_radius_two_or_more_reaches_the_best_class():
    v, pi = np.array([[0.5, -1.0, 2.0]]), np.array([[0.6, 0.4, 0.0]])
    for r in (2.0, 7.0):  # r > 2 is clipped: the l1 diameter of the simplex is 2
        value, q = worst_case_expectation(v, pi, r=r)
        np.testing.assert_allclose(q, [[0.0, 0.0, 1.0]])
        assert value[0] == 2.0


def test_l1_moves_mass_from_lowest_values_first():
    v = np.array([[3.0, 1.0, 0.0, 2.0]])
    pi = np.array([[0.1, 0.3, 0.2, 0.4]])
    value, q = worst_case_expectation(v, pi, r=0.6)  # move 0.3: 0.2 from class 2, 0.1 from class 1
    np.testing.assert_allclose(q, [[0.4, 0.2, 0.0, 0.4]])
    assert value[0] == pytest.approx(0.4 * 3 + 0.2 * 1 + 0.4 * 2)


def test_l1_mass_can_leave_the_support_of_pi():
    value, q = worst_case_expectation(np.array([[0.0, 1.0]]), np.array([[1.0, 0.0]]), r=0.5)
    np.testing.assert_allclose(q, [[0.75, 0.25]])


def test_l1_ties_are_deterministic():
    v = np.array([[1.0, 0.0, 1.0, 0.0]])
    pi = np.full((1, 4), 0.25)
    value, q = worst_case_expectation(v, pi, r=0.6)
    # receives: lowest index among the largest values; gives: lowest index first
    np.testing.assert_allclose(q, [[0.55, 0.0, 0.25, 0.2]])
    assert value[0] == pytest.approx(0.8)


def test_kl_ties_reweight_tied_classes_alike():
    v = np.array([[1.0, 0.0, 1.0]])
    pi = np.array([[0.2, 0.5, 0.3]])
    _, q = worst_case_expectation(v, pi, rho=0.1)
    assert q[0, 0] / pi[0, 0] == pytest.approx(q[0, 2] / pi[0, 2], rel=1e-12)


def test_kl_saturates_at_the_best_classes_of_the_support():
    v = np.array([[2.0, 1.0, 2.0, 5.0]])
    pi = np.array([[0.2, 0.5, 0.3, 0.0]])
    rho = -np.log(0.5)  # exactly the KL of pi restricted to {0, 2}
    with pytest.warns(UserWarning):
        value, q = worst_case_expectation(v, pi, rho=rho)
    np.testing.assert_allclose(q, [[0.4, 0.0, 0.6, 0.0]])
    assert value[0] == 2.0
    with pytest.warns(UserWarning):
        value_big, _ = worst_case_expectation(v, pi, rho=50.0)
    assert value_big[0] == 2.0  # class 3 is outside the support: unreachable


def test_kl_below_saturation_is_strictly_below_the_max():
    v = np.array([[2.0, 1.0, 0.0]])
    pi = np.array([[0.5, 0.3, 0.2]])
    value, q = worst_case_expectation(v, pi, rho=-np.log(0.5) * (1 - 1e-9))
    assert 2.0 - 1e-6 < value[0] < 2.0
    assert _kl(q[0], pi[0]) <= -np.log(0.5) + 1e-12


def test_constant_values_on_the_support():
    v = np.array([[1.0, 1.0, 9.0]])
    pi = np.array([[0.3, 0.7, 0.0]])
    with pytest.warns(UserWarning):
        value, q = worst_case_expectation(v, pi, r=0.5, rho=1.0)
    np.testing.assert_allclose(q, pi)
    assert value[0] == 1.0


@pytest.mark.parametrize("budgets", [{"rho": 3.0}, {"r": 1.0, "rho": 3.0}])
def test_one_hot_pi_makes_the_kl_ball_a_point(budgets):
    v = np.array([[0.0, 5.0, 1.0]])
    pi = np.array([[1.0, 0.0, 0.0]])
    with pytest.warns(UserWarning, match="only contains distributions supported where pi > 0"):
        value, q = worst_case_expectation(v, pi, **budgets)
    np.testing.assert_array_equal(q, pi)
    assert value[0] == 0.0


def test_support_warning_once_per_call_and_only_when_relevant():
    v = np.zeros((3, 3))
    pi = np.array([[1.0, 0.0, 0.0], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5]])
    with pytest.warns(UserWarning) as record:
        worst_case_expectation(v, pi, rho=0.1)
    assert len(record) == 1
    assert "2 row(s)" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        worst_case_expectation(v, pi, rho=0.0)
        worst_case_expectation(v, pi, r=0.5)
        worst_case_expectation(v, pi, r=0.0, rho=0.3)


def test_two_classes():
    v = np.array([[1.0, 0.0]])
    pi = np.array([[0.3, 0.7]])
    value, q = worst_case_expectation(v, pi, r=0.2)
    np.testing.assert_allclose(q, [[0.4, 0.6]])
    # KL(q || pi) for q = (s, 1 - s) is monotone in s on [0.3, 1]: the sup sits on the sphere
    value, q = worst_case_expectation(v, pi, rho=0.05)
    assert _kl(q[0], pi[0]) == pytest.approx(0.05, abs=1e-12)
    assert value[0] == pytest.approx(q[0, 0])


def test_empty_batch():
    value, q = worst_case_expectation(np.zeros((0, 3)), np.zeros((0, 3)), r=0.1, rho=0.1)
    assert value.shape == (0,) and q.shape == (0, 3)


def test_pi_is_renormalised_within_tolerance():
    pi = np.array([[0.3, 0.7 + 5e-7]])
    _, q = worst_case_expectation(np.array([[1.0, 0.0]]), pi, r=0.2)
    assert q.sum() == pytest.approx(1.0, abs=1e-15)


# --------------------------------------------------------------------------
# numpy / torch
# --------------------------------------------------------------------------


@pytest.mark.parametrize("budgets", [{}, {"r": 0.3}, {"rho": 0.2}, {"r": 0.3, "rho": 0.05}])
def test_torch_matches_numpy(budgets):
    rng = np.random.default_rng(4)
    v, pi = rng.normal(size=(20, 5)), rng.dirichlet(np.ones(5), size=20)
    value, q = worst_case_expectation(v, pi, **budgets)
    tv = torch.tensor(v, requires_grad=True)
    t_budgets = {k: torch.full((20,), b, dtype=torch.float64) for k, b in budgets.items()}
    t_value, t_q = worst_case_expectation(tv, torch.tensor(pi), **t_budgets)
    assert isinstance(t_value, torch.Tensor) and t_value.dtype == torch.float64
    np.testing.assert_allclose(t_value.detach().numpy(), value, atol=1e-12)
    np.testing.assert_allclose(t_q.numpy(), q, atol=1e-12)
    t_value.sum().backward()  # envelope theorem: d value / d v = q*
    np.testing.assert_allclose(tv.grad.numpy(), q, atol=1e-12)
    assert not t_q.requires_grad


@pytest.mark.parametrize("budgets", [{"r": 0.3}, {"rho": 0.2}, {"r": 0.3, "rho": 0.05}])
def test_torch_float32(budgets):
    rng = np.random.default_rng(5)
    v, pi = rng.normal(size=(20, 5)), rng.dirichlet(np.ones(5), size=20)
    value, _ = worst_case_expectation(v, pi, **budgets)
    t_value, t_q = worst_case_expectation(torch.tensor(v, dtype=torch.float32),
                                          torch.tensor(pi, dtype=torch.float32), **budgets)
    assert t_value.dtype == torch.float32 and t_q.dtype == torch.float32
    np.testing.assert_allclose(t_value.numpy(), value, atol=1e-5)
    np.testing.assert_allclose(t_q.sum(1).numpy(), 1.0, atol=1e-6)


# --------------------------------------------------------------------------
# Two-class l1 helper
# --------------------------------------------------------------------------


@SETTINGS
@given(st.integers(2, 5), st.integers(0, 2**32 - 1), st.floats(-3, 3), st.sampled_from([0.0, 0.1, 0.5, 1.0, 2.0]))
def test_two_class_helper_matches_general(K, seed, w, r):
    rng = np.random.default_rng(seed)
    pi = rng.dirichlet(np.ones(K) * 0.7)
    a, b = rng.choice(K, size=2, replace=False)
    v = np.zeros(K)
    v[a], v[b] = -w, w
    expected, _ = _worst_case(v[None], pi[None], r=np.array([r]))
    got = _l1_two_class_worst_case(w, pi[a], pi[b], r)
    assert got == pytest.approx(expected[0], abs=1e-12)


def test_two_class_helper_vectorised_numpy_and_torch():
    rng = np.random.default_rng(6)
    n, K = 200, 6
    pi = rng.dirichlet(np.ones(K), size=n)
    w, r = rng.normal(size=n), rng.uniform(0, 2, size=n)
    a = rng.integers(0, K, size=n)
    b = (a + rng.integers(1, K, size=n)) % K
    rows = np.arange(n)
    v = np.zeros((n, K))
    v[rows, a], v[rows, b] = -w, w
    expected, _ = _worst_case(v, pi, r=r)
    got = _l1_two_class_worst_case(w, pi[rows, a], pi[rows, b], r)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    got_t = _l1_two_class_worst_case(torch.tensor(w), torch.tensor(pi[rows, a]), torch.tensor(pi[rows, b]), 0.5)
    expected_t, _ = _worst_case(v, pi, r=np.full(n, 0.5))
    assert isinstance(got_t, torch.Tensor)
    np.testing.assert_allclose(got_t.numpy(), expected_t, atol=1e-12)


# --------------------------------------------------------------------------
# Errors: one test per message
# --------------------------------------------------------------------------

V = np.zeros((2, 3))
PI = np.full((2, 3), 1 / 3)


def test_error_v_not_2d():
    with pytest.raises(ValueError, match=r"v must be 2-D of shape \(n, K\)"):
        worst_case_expectation(np.zeros(3), np.full(3, 1 / 3))


def test_error_shape_mismatch():
    with pytest.raises(ValueError, match="v and pi must have the same shape"):
        worst_case_expectation(V, np.full((2, 4), 0.25))


def test_error_v_not_finite():
    with pytest.raises(ValueError, match="v contains NaN or infinite values"):
        worst_case_expectation(np.array([[0.0, np.inf, 0.0], [0, 0, 0]]), PI)


def test_error_pi_not_finite():
    with pytest.raises(ValueError, match="pi contains NaN or infinite values"):
        worst_case_expectation(V, np.array([[np.nan, 0.5, 0.5], [1 / 3] * 3]))


def test_error_pi_negative():
    with pytest.raises(ValueError, match=r"pi must be non-negative; pi\[0, 0\]"):
        worst_case_expectation(V, np.array([[-0.1, 0.6, 0.5], [1 / 3] * 3]))


def test_error_pi_rows_do_not_sum_to_one():
    with pytest.raises(ValueError, match="rows of pi must sum to 1 .* row 1 sums to"):
        worst_case_expectation(V, np.array([[1 / 3] * 3, [0.5, 0.5, 0.5]]))


def test_error_non_numeric():
    with pytest.raises(ValueError, match="v must be numeric"):
        worst_case_expectation([["a", "b"]], [[0.5, 0.5]])


@pytest.mark.parametrize("name", ["r", "rho"])
def test_error_budget_shape(name):
    with pytest.raises(ValueError, match=f"{name} must be None, a scalar or of shape"):
        worst_case_expectation(V, PI, **{name: np.zeros(3)})


@pytest.mark.parametrize("name", ["r", "rho"])
def test_error_budget_not_finite(name):
    with pytest.raises(ValueError, match=f"{name} contains NaN or infinite values"):
        worst_case_expectation(V, PI, **{name: np.nan})


@pytest.mark.parametrize("name", ["r", "rho"])
def test_error_budget_negative(name):
    with pytest.raises(ValueError, match=f"{name} must be non-negative"):
        worst_case_expectation(V, PI, **{name: -0.1})
