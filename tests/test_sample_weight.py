"""Sample weights (docs/certificates.md, section 9).

* the weighted ridge head is scikit-learn's ``Ridge(alpha).fit(F, Q, sample_weight=w)``;
* integer weights equal repeated rows (predictions, bounded tier; flip and stochastic
  differ in the direction section 9 proves), zero weights equal removed rows;
* the weighted rounding allowance bounds the error of the computed influence against
  exact (mpmath) arithmetic;
* attacks: worst-case labels inside the budget and brute-force flips, retrained by an
  independent weighted least-squares solver, flip no certified prediction;
* plumbing (classifier, network loss, feature_split, Pipeline routing) and bad inputs.
"""

import itertools

import mpmath as mp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import Ridge

from sklearn_cnat import CNATClassifier
from sklearn_cnat.certificates import certify_ridge
from sklearn_cnat.certificates import _ridge
from sklearn_cnat.exceptions import CertificationError, CNATValueError

from test_ridge_numerics import _Budget
from test_soundness_ridge import _l1_row_attack

mp.mp.dps = 50


def _problem(seed=0, n=40, d=4, K=3, n_test=30, votes=3):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d)) * 1.5
    y = rng.integers(K, size=n)
    F = centers[y] + rng.normal(size=(n, d))
    counts = np.stack([rng.multinomial(votes, np.full(K, 0.1 / K) + 0.9 * np.eye(K)[k]) for k in y]).astype(float)
    pi = counts / votes
    X = centers[rng.integers(K, size=n_test)] + 1.2 * rng.normal(size=(n_test, d))
    return F, _Budget(pi=pi, r=rng.uniform(0, 0.2, n), rho=rng.uniform(0, 0.02, n), counts=counts), X


def _refit_scores(F, Y, alpha, X, w):
    """Weighted ridge (unpenalised intercept) by least squares on the augmented system with
    rows scaled by sqrt(w): a code path independent of ``_ridge_fit`` and of the influence."""
    n, d = F.shape
    s = np.sqrt(w)[:, None]
    M = np.zeros((n + d, d + 1))
    M[:n, :d] = F * s
    M[:n, d] = s[:, 0]
    M[n:, :d] = np.sqrt(alpha) * np.eye(d)
    rhs = np.vstack([Y * s, np.zeros((d, Y.shape[1]))])
    sol = np.linalg.lstsq(M, rhs, rcond=None)[0]
    return X @ sol[:d] + sol[d]


def _weights(rng, n, zeros=3):
    w = rng.uniform(0.2, 3.0, size=n)
    w[rng.choice(n, size=zeros, replace=False)] = 0.0
    return w


# ----------------------------------------------------------------------------- the learner


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weighted_coefficients_equal_sklearn_ridge(seed):
    F, budget, X = _problem(seed)
    w = _weights(np.random.default_rng(seed), len(F))
    coef, intercept = _ridge._ridge_fit(F, budget.pi, 3.0, w)
    ref = Ridge(alpha=3.0, fit_intercept=True).fit(F, budget.pi, sample_weight=w)
    np.testing.assert_allclose(coef, ref.coef_.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=1e-10, atol=1e-12)
    clf = CNATClassifier(alpha=3.0).fit(F, budget.counts.astype(int), sample_weight=w)
    ref = Ridge(alpha=3.0).fit(F, clf.budget_.pi, sample_weight=w)
    np.testing.assert_allclose(clf.coef_, ref.coef_.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(clf.sample_weight_, w)


def test_influence_is_linear_sums_to_one_and_zero_weight_has_none():
    F, budget, X = _problem(3)
    w = _weights(np.random.default_rng(3), len(F))
    H = np.vstack(list(_ridge._ridge_influence(F, X, 2.0, sample_weight=w)))
    coef, intercept = _ridge._ridge_fit(F, budget.pi, 2.0, w)
    np.testing.assert_allclose(H @ budget.pi, X @ coef + intercept, atol=1e-12)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(H[:, w == 0] == 0.0)


class _ExactWeighted:
    """Exact weighted influence (C31) at 50 digits from the float64 data."""

    def __init__(self, F, alpha, w):
        n, d = F.shape
        self.n, self.d = n, d
        self.w = [mp.mpf(float(v)) for v in w]
        S = mp.fsum(self.w)
        self.S = S
        self.fbar = [mp.fsum(self.w[i] * mp.mpf(float(F[i, j])) for i in range(n)) / S for j in range(d)]
        self.Fc = mp.matrix(n, d)
        for i in range(n):
            for j in range(d):
                self.Fc[i, j] = mp.mpf(float(F[i, j])) - self.fbar[j]
        A = mp.matrix(d, d)
        for j in range(d):
            for k in range(d):
                A[j, k] = mp.fsum(self.w[i] * self.Fc[i, j] * self.Fc[i, k] for i in range(n))
            A[j, j] += mp.mpf(float(alpha))
        self.Ainv = A ** -1

    def h(self, x):
        u = self.Ainv * mp.matrix([mp.mpf(float(x[j])) - self.fbar[j] for j in range(self.d)])
        return [self.w[i] * (mp.fsum(u[j] * self.Fc[i, j] for j in range(self.d)) + 1 / self.S)
                for i in range(self.n)]


@pytest.mark.parametrize("scale", [1.0, 2.0**-300, 1e-4])
@pytest.mark.parametrize("spread", ["uniform", "wide"])
def test_weighted_allowance_bounds_the_influence_error_exactly(scale, spread):
    """Proposition 5 with weights (section 9): ||h_hat - h_exact||_1 <= E_model + E_rh."""
    rng = np.random.default_rng(7)
    F, _, X = _problem(7, n=24, d=3, n_test=6)
    F = F * np.array([1.0, 1e3, 1e-3]) * scale
    X = X * np.array([1.0, 1e3, 1e-3]) * scale
    w = rng.uniform(0.5, 2.0, 24) if spread == "uniform" else 10.0 ** rng.uniform(-6, 6, 24)
    w[:2] = 0.0
    alpha = 0.7 * scale**2
    system = _ridge._RidgeSystem(F, alpha, torch.device("cpu"), sample_weight=w)
    U, e_model, e_rh, _ = system.canonical(X)
    H = system.influence(torch.as_tensor(U)).numpy()
    exact = _ExactWeighted(F, alpha, w)
    for t in range(len(X)):
        h = exact.h(X[t])
        err = mp.fsum(abs(mp.mpf(float(H[t, i])) - h[i]) for i in range(len(F)))
        assert err <= e_model[t] + e_rh[t], (t, err, e_model[t], e_rh[t])
        point = system.point_influence(U[t])
        err_p = mp.fsum(abs(mp.mpf(float(point[i])) - h[i]) for i in range(len(F)))
        assert err_p <= e_model[t] + e_rh[t]
        assert e_model[t] + e_rh[t] < 1e-8  # and the allowance is small


def test_unweighted_path_is_unchanged_by_the_weighted_code():
    F, budget, X = _problem(4)
    a = certify_ridge(F, budget, X, alpha=1.0, tier="bounded")
    b = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", sample_weight=None)
    np.testing.assert_array_equal(a.worst_case_margin, b.worst_case_margin)
    ones = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", sample_weight=np.ones(len(F)))
    np.testing.assert_allclose(ones.worst_case_margin, a.worst_case_margin, atol=1e-12)
    np.testing.assert_array_equal(ones.certified, a.certified)


# ----------------------------------------------------------------------------- repetition and removal


def _repeat(F, budget, counts):
    rows = np.repeat(np.arange(len(F)), counts)
    return F[rows], budget.take(rows)


@pytest.mark.parametrize("seed", [0, 5])
def test_integer_weights_equal_repetition(seed):
    F, budget, X = _problem(seed, n=30)
    k = np.random.default_rng(seed).integers(0, 4, size=len(F))
    Fr, br = _repeat(F, budget, k)
    w = k.astype(float)
    kw = dict(alpha=2.0)
    s_w = _ridge._ridge_scores(X, *_ridge._ridge_fit(F, budget.pi, 2.0, w))
    s_r = _ridge._ridge_scores(X, *_ridge._ridge_fit(Fr, br.pi, 2.0))
    np.testing.assert_allclose(s_w, s_r, atol=1e-12)
    # bounded: the same worst case (section 9); certified sets agree away from the allowance
    for geometry in ("l1", "kl"):
        cw = certify_ridge(F, budget, X, tier="bounded", geometry=geometry, sample_weight=w, **kw)
        cr = certify_ridge(Fr, br, X, tier="bounded", geometry=geometry, **kw)
        np.testing.assert_allclose(cw.worst_case_margin, cr.worst_case_margin, atol=1e-9)
        clear = np.abs(cr.worst_case_margin) > 1e-8
        np.testing.assert_array_equal(cw.certified[clear], cr.certified[clear])
        np.testing.assert_allclose(cw.radius_scale[clear], cr.radius_scale[clear], rtol=0.11)
    # flip: one flip moves all of a weighted row's mass, k flips the k copies
    fw = certify_ridge(F, budget, X, tier="flip", m=1, sample_weight=w, **kw)
    fr = certify_ridge(Fr, br, X, tier="flip", m=1, **kw)
    assert np.all(fw.max_flips <= fr.max_flips)
    assert np.any(fw.max_flips < fr.max_flips)
    # stochastic: the weighted row is one draw of votes, the copies k independent draws
    sw = certify_ridge(F, budget, X, tier="stochastic", sample_weight=w, **kw)
    sr = certify_ridge(Fr, br, X, tier="stochastic", **kw)
    assert np.all(sw.delta_min >= sr.delta_min * (1 - 1e-9))
    assert np.all(sw.certified <= sr.certified)


@pytest.mark.parametrize("tier", ["bounded", "flip", "stochastic"])
def test_zero_weight_equals_removed_row(tier):
    F, budget, X = _problem(2, n=36)
    w = np.ones(len(F))
    w[[1, 4, 9, 20]] = 0.0
    keep = np.flatnonzero(w > 0)
    kw = dict(alpha=1.5, tier=tier, m=2 if tier == "flip" else None)
    cw = certify_ridge(F, budget, X, sample_weight=w, **kw)
    ck = certify_ridge(F[keep], budget.take(keep), X, **kw)
    np.testing.assert_array_equal(cw.prediction, ck.prediction)
    np.testing.assert_allclose(cw.worst_case_margin, ck.worst_case_margin, atol=1e-10)
    clear = np.abs(ck.worst_case_margin) > 1e-8
    np.testing.assert_array_equal(cw.certified[clear], ck.certified[clear])
    if tier == "flip":  # a zero-weight row has d_i = 0: it never helps the adversary
        np.testing.assert_array_equal(cw.max_flips, ck.max_flips)
    clf_w = CNATClassifier(alpha=1.5).fit(F, budget.counts.astype(int), sample_weight=w)
    clf_k = CNATClassifier(alpha=1.5, budget=clf_w.budget_transformer_).fit(F[keep], budget.counts[keep].astype(int))
    np.testing.assert_allclose(clf_w.decision_function(X), clf_k.decision_function(X), atol=1e-12)
    np.testing.assert_allclose(clf_w.predict_proba(X), clf_k.predict_proba(X), atol=1e-8)


def test_alpha_grid_uses_the_weighted_leave_one_out():
    F, budget, X = _problem(6, n=60)
    counts = budget.counts.astype(int)
    grid = [0.1, 1.0, 10.0, 100.0]
    k = np.random.default_rng(6).integers(0, 3, size=len(F))
    rows = np.repeat(np.arange(len(F)), k)
    clf_w = CNATClassifier(alpha=grid).fit(F, counts, sample_weight=k)
    clf_r = CNATClassifier(alpha=grid, budget=clf_w.budget_transformer_).fit(F[rows], counts[rows])
    assert clf_w.alpha_ == clf_r.alpha_
    for a in grid:
        assert clf_w.alpha_scores_[a] == pytest.approx(clf_r.alpha_scores_[a], abs=1e-12)
    assert clf_w.temperature_ == pytest.approx(clf_r.temperature_, rel=1e-5)
    ones = CNATClassifier(alpha=grid).fit(F, counts, sample_weight=np.ones(len(F)))
    plain = CNATClassifier(alpha=grid).fit(F, counts)
    assert ones.alpha_ == plain.alpha_
    assert ones.temperature_ == pytest.approx(plain.temperature_, rel=1e-6)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), log_scale=st.integers(-20, 20))
def test_scaling_weights_and_alpha_together_changes_nothing(seed, log_scale):
    """(w, alpha) -> (t w, t alpha) is the same learner (C29): same predictions, same decisions."""
    F, budget, X = _problem(seed % 50, n=20, n_test=10)
    w = _weights(np.random.default_rng(seed), len(F), zeros=2)
    t = 2.0**log_scale
    a = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", sample_weight=w)
    b = certify_ridge(F, budget, X, alpha=t, tier="bounded", sample_weight=t * w)
    np.testing.assert_array_equal(a.prediction, b.prediction)
    np.testing.assert_array_equal(a.certified, b.certified)
    np.testing.assert_array_equal(a.worst_case_margin, b.worst_case_margin)


# ----------------------------------------------------------------------------- attacks


@pytest.mark.parametrize("seed", range(6))
def test_bounded_attack_with_weights(seed):
    """Worst-case labels inside every U_i (the row-wise maximisers of Theorem 1 (b), found by
    linprog), retrained by weighted least squares: no certified prediction changes, and the
    uncertified points of the exact l1 engine are flipped (tightness)."""
    F, budget, X = _problem(seed, n=8, d=2, K=3, n_test=25)
    budget.r = np.random.default_rng(seed).uniform(0.0, 0.6, 8)
    w = np.random.default_rng(seed + 100).uniform(0.0, 3.0, 8)
    w[seed % 8] = 0.0
    alpha = 0.5
    cert = certify_ridge(F, budget, X, alpha=alpha, tier="bounded", geometry="l1", sample_weight=w)
    H = np.vstack(list(_ridge._ridge_influence(F, X, alpha, sample_weight=w)))
    base = _refit_scores(F, budget.pi, alpha, X, w)
    for t in range(len(X)):
        c = int(np.argmax(base[t]))
        assert c == int(np.flatnonzero(cert.classes == cert.prediction[t])[0])
        flipped = False
        for b in range(3):
            if b == c:
                continue
            Q = np.array([_l1_row_attack(budget.pi[i], *((c, b) if H[t, i] >= 0 else (b, c)), budget.r[i])
                          for i in range(8)])
            s = _refit_scores(F, Q, alpha, X[t:t + 1], w)[0]
            if s[b] >= s[c] - 1e-9:
                flipped = True
            if cert.certified[t]:
                assert s[c] > s[b], (t, b, s)
        if not cert.certified[t] and cert.worst_case_margin[t] < -1e-9:
            assert flipped


@pytest.mark.parametrize("seed", range(4))
def test_flip_brute_force_with_weights(seed):
    """Every set of <= 2 rows replaced by every vertex (the worst case of a linear score is at a
    vertex), retrained: no certified prediction changes; max_flips is exact."""
    F, budget, X = _problem(seed + 10, n=8, d=2, K=3, n_test=20)
    w = np.random.default_rng(seed).uniform(0.2, 3.0, 8)
    w[[seed % 8, (seed + 3) % 8]] = 0.0
    alpha = 0.5
    cert = certify_ridge(F, budget, X, alpha=alpha, tier="flip", m=2, sample_weight=w)
    base = _refit_scores(F, budget.pi, alpha, X, w)
    pred = base.argmax(axis=1)
    smallest = np.full(len(X), 99)  # fewest flips that make a rival tie or win
    eye = np.eye(3)
    for size in (1, 2):
        for rows in itertools.combinations(range(8), size):
            for labels in itertools.product(range(3), repeat=size):
                Q = budget.pi.copy()
                Q[list(rows)] = eye[list(labels)]
                s = _refit_scores(F, Q, alpha, X, w)
                top = s[np.arange(len(X)), pred]
                s[np.arange(len(X)), pred] = -np.inf
                beaten = s.max(axis=1) >= top - 1e-9
                smallest[beaten] = np.minimum(smallest[beaten], size)
                if set(rows) <= set(np.flatnonzero(w == 0)):
                    assert not beaten[cert.max_flips >= 0].any()  # zero-weight rows change nothing
    for t in range(len(X)):
        if cert.max_flips[t] >= 0:
            assert smallest[t] > cert.max_flips[t]  # sound
        if cert.max_flips[t] < 2 and abs(cert.worst_case_margin[t]) > 1e-9:
            assert smallest[t] == cert.max_flips[t] + 1  # exact
    assert cert.max_flips.max() <= int((w > 0).sum()) - 1


def test_stochastic_with_weights_is_sound_by_sampling():
    """Monte Carlo of (C13) with weights: fresh votes, certified and differing from the
    learner on the expected labels happens at most delta of the time (plus sampling slack)."""
    rng = np.random.default_rng(0)
    n, K, votes, delta = 30, 3, 3, 0.2
    F, _, X = _problem(11, n=n, d=2, K=K, n_test=15)
    p = rng.dirichlet(np.ones(K) * 2, size=n)
    w = rng.uniform(0, 3, n)
    w[:3] = 0.0
    alpha = 1.0
    target = _refit_scores(F, p, alpha, X, w).argmax(axis=1)
    bad = np.zeros(len(X))
    draws = 150
    for _ in range(draws):
        counts = np.stack([rng.multinomial(votes, p[i]) for i in range(n)]).astype(float)
        cert = certify_ridge(F, _Budget(pi=counts / votes, counts=counts), X, alpha=alpha, tier="stochastic",
                             delta=delta, sample_weight=w)
        bad += cert.certified & (cert.prediction != target)
    assert np.all(bad / draws <= delta + 3 * np.sqrt(delta * (1 - delta) / draws))


# ----------------------------------------------------------------------------- plumbing


def test_network_loss_is_the_weighted_mean():
    from sklearn_cnat.datasets import load_digits_votes

    X, votes = load_digits_votes(return_X_y=True)
    X, votes = X[:120].astype(np.float32), votes[:120]
    w = np.random.default_rng(0).uniform(0, 2, 120)
    clf = CNATClassifier(head="softmax", max_epochs=1, random_state=0).fit(X, votes, sample_weight=w)
    net = clf.net_
    assert net.criterion_.reduction == "none"
    targets = clf._targets(clf.budget_, w)
    with torch.no_grad():
        logits = net.module_(torch.as_tensor(X))
        loss = net.get_loss(logits, targets)
    k = len(clf.classes_)
    with torch.no_grad():
        per_row = net.criterion_(logits, targets[:, :k], r=targets[:, k], rho=targets[:, k + 1])
    expected = (per_row * torch.as_tensor(w / w.mean(), dtype=torch.float32)).mean()
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    # a weighted fit differs from an unweighted one (the weights are not ignored)
    plain = CNATClassifier(head="softmax", max_epochs=1, random_state=0).fit(X, votes)
    assert not np.allclose(plain.predict_proba(X), clf.predict_proba(X))


class _TinyNet(torch.nn.Module):
    def __init__(self, n_features=64, num_classes=10):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(n_features, 16), torch.nn.ReLU())
        self.fc = torch.nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))


def test_feature_split_routes_weights_to_backbone_and_head():
    from sklearn_cnat.datasets import load_digits_votes

    X, votes = load_digits_votes(return_X_y=True)
    X, votes = X[:200].astype(np.float32), votes[:200]
    w = np.random.default_rng(1).integers(1, 4, 200).astype(float)
    kw = dict(module=lambda: _TinyNet(), feature_split=0.5, max_epochs=1, random_state=0, alpha=5.0)
    clf = CNATClassifier(**kw).fit(X, votes, sample_weight=w)
    head = clf.head_rows_
    ref = Ridge(alpha=5.0).fit(clf.train_features_, clf.budget_.pi[head], sample_weight=w[head])
    np.testing.assert_allclose(clf.coef_, ref.coef_.T, rtol=1e-8, atol=1e-10)
    # the covered rows' weights do not reach the backbone (Proposition 8 with weights held fixed)
    w2 = w.copy()
    w2[clf.covered_rows_] = 1.0
    clf2 = CNATClassifier(**kw).fit(X, votes, sample_weight=w2)
    for a, b in zip(clf.net_.module_.state_dict().values(), clf2.net_.module_.state_dict().values()):
        assert torch.equal(a, b)
    cert = clf.certify(X[:20], tier="bounded")
    assert cert.scope == "model"
    assert clf.split_head_ == "all" and head.all()  # the default for the ridge head
    zero_covered = w.copy()
    zero_covered[clf.covered_rows_] = 0.0  # the head on every row is still defined by the backbone rows'
    assert CNATClassifier(**kw).fit(X, votes, sample_weight=zero_covered).coef_.any()
    with pytest.raises(CNATValueError, match="head rows"):  # the disjoint head is not
        CNATClassifier(split_head="disjoint", **kw).fit(X, votes, sample_weight=zero_covered)


def test_pipeline_routes_sample_weight():
    import sklearn
    from sklearn.preprocessing import StandardScaler

    from sklearn_cnat.pipeline import make_pipeline

    F, budget, X = _problem(8, n=50)
    counts = budget.counts.astype(int)
    w = _weights(np.random.default_rng(8), 50)
    direct = CNATClassifier(alpha=2.0).fit(StandardScaler().fit_transform(F), counts, sample_weight=w)
    pipe = make_pipeline(StandardScaler(), CNATClassifier(alpha=2.0)).fit(F, counts, cnatclassifier__sample_weight=w)
    np.testing.assert_allclose(pipe[-1].coef_, direct.coef_, atol=1e-12)
    np.testing.assert_array_equal(pipe.certify(X, tier="bounded").certified,
                                  direct.certify(StandardScaler().fit(F).transform(X), tier="bounded").certified)
    with sklearn.config_context(enable_metadata_routing=True):
        routed = make_pipeline(StandardScaler().set_fit_request(sample_weight=False),
                               CNATClassifier(alpha=2.0).set_fit_request(sample_weight=True))
        routed.fit(F, counts, sample_weight=w)
    np.testing.assert_allclose(routed[-1].coef_, direct.coef_, atol=1e-12)


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("weights, match", [
    (np.ones(7), "shape"),
    (np.r_[np.ones(9), np.nan], "NaN"),
    (np.r_[np.ones(9), np.inf], "infinity"),
    (np.r_[np.ones(9), -1.0], "Negative"),
    (np.zeros(10), "non-zero"),
])
def test_classifier_refuses_bad_weights(weights, match):
    F, budget, _ = _problem(0, n=10)
    with pytest.raises(CNATValueError, match=match):
        CNATClassifier().fit(F, budget.counts.astype(int), sample_weight=weights)


@pytest.mark.parametrize("weights, match", [
    (np.ones(7), "shape"),
    (np.r_[np.ones(9), np.nan], "NaN"),
    (np.r_[np.ones(9), -1.0], ">= 0"),
    (np.zeros(10), "sums to 0"),
])
def test_certify_ridge_refuses_bad_weights(weights, match):
    F, budget, X = _problem(0, n=10)
    with pytest.raises(CertificationError, match=match):
        certify_ridge(F, budget, X, alpha=1.0, tier="bounded", sample_weight=weights)


def test_heads_that_cannot_honour_weights_refuse_them():
    F, budget, _ = _problem(0, n=30)
    counts = budget.counts.astype(int)
    w = np.ones(30)
    with pytest.raises(CNATValueError, match="robust_softmax"):
        CNATClassifier(head="robust_softmax").fit(F, counts, sample_weight=w)
    with pytest.raises(CNATValueError, match="noise_corrected"):
        CNATClassifier(calibration="noise_corrected").fit(F, counts, sample_weight=w)
    # the unweighted fit of those heads still works
    CNATClassifier(head="robust_softmax").fit(F, counts)


@pytest.mark.parametrize("loss", ["ce", "gce", "elr"])
def test_baseline_losses_are_weighted(loss):
    from sklearn_cnat.baselines import BaselineClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    w = rng.uniform(0, 2, 80)
    kw = dict(loss=loss, max_epochs=3, batch_size=16, lr=0.1, optimizer="sgd", random_state=0)
    clf = BaselineClassifier(**kw).fit(X, y, sample_weight=w)
    net = clf.net_
    targets = clf._targets(y, 2, w)
    assert targets.shape[1] == 4
    with torch.no_grad():
        logits = net.module_(torch.as_tensor(X))
        net.criterion_.eval()  # ELR: no update of its memory in this check
        got = float(net.get_loss(logits, targets))
        if loss != "elr":
            per_row = type(net.criterion_)(**({"q": net.criterion_.q, "reduction": "none"} if loss == "gce" else {}))
            per_row = per_row(logits, targets[:, :2], index=targets[:, 2], sample_weight=None)
            if per_row.ndim == 1:
                expected = float((per_row * torch.as_tensor(w / w.mean(), dtype=torch.float32)).mean())
                assert got == pytest.approx(expected, rel=1e-6)
    plain = BaselineClassifier(**kw).fit(X, y)
    assert not np.allclose(plain.predict_proba(X), clf.predict_proba(X))
    with pytest.raises(CNATValueError, match="sample_weight"):
        BaselineClassifier(loss=loss).fit(X, y, sample_weight=-w)


def test_partition_aggregation_passes_weights_to_the_parts():
    from sklearn_cnat.partition import PartitionAggregationClassifier

    F, budget, X = _problem(9, n=120)
    counts = budget.counts.astype(int)
    w = np.random.default_rng(9).integers(0, 3, size=120).astype(float)
    pac = PartitionAggregationClassifier(CNATClassifier(alpha=2.0), n_partitions=3).fit(F, counts, sample_weight=w)
    for p, est in enumerate(pac.estimators_):
        rows = np.flatnonzero(pac.partition_ == p)
        ref = Ridge(alpha=2.0).fit(F[rows], est.budget_.pi, sample_weight=w[rows])
        np.testing.assert_allclose(est.coef_, ref.coef_.T, atol=1e-10)
    keep = np.flatnonzero(w > 0)
    removed = PartitionAggregationClassifier(CNATClassifier(alpha=2.0), n_partitions=3).fit(
        F[keep], counts[keep], sample_weight=w[keep])
    np.testing.assert_array_equal(pac.predict(X), removed.predict(X))
    np.testing.assert_array_equal(pac.certify(X, tier="flip", m=1).certified,
                                  removed.certify(X, tier="flip", m=1).certified)
    from sklearn.neighbors import KNeighborsClassifier

    with pytest.raises(CNATValueError, match="does not accept sample_weight"):
        PartitionAggregationClassifier(KNeighborsClassifier(), n_partitions=2).fit(F, counts, sample_weight=w)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), zeros=st.integers(0, 5), log_spread=st.floats(0.0, 8.0))
def test_weighted_influence_properties(seed, zeros, log_spread):
    """(C31): scores are H @ Q, sum_i h_i = 1, a zero weight has h_i = 0 exactly."""
    rng = np.random.default_rng(seed)
    F, budget, X = _problem(seed % 30, n=16, d=3, n_test=5)
    w = 10.0 ** rng.uniform(-log_spread, log_spread, 16)
    w[rng.choice(16, size=zeros, replace=False)] = 0.0
    H = next(_ridge._ridge_influence(F, X, 0.5, sample_weight=w))
    assert np.all(H[:, w == 0] == 0.0)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-9)
    coef, intercept = _ridge._ridge_fit(F, budget.pi, 0.5, w)
    np.testing.assert_allclose(H @ budget.pi, X @ coef + intercept, atol=1e-8)


def test_weights_beyond_float64_are_refused_or_rescaled_exactly():
    F, budget, X = _problem(0, n=12)
    huge = certify_ridge(F, budget, X, alpha=1e300, tier="bounded", sample_weight=np.full(12, 1e300))
    plain = certify_ridge(F, budget, X, alpha=1.0, tier="bounded")
    np.testing.assert_array_equal(huge.certified, plain.certified)  # (t w, t alpha): the same learner
    w = np.ones(12)
    w[0] = 2.0**-1074  # a subnormal weight: no exact power-of-two normalisation, used as given
    cert = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", sample_weight=w)
    assert cert.certified.shape == (len(X),)
