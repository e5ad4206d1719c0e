"""Held-fixed training rows: ``certify_ridge(fixed_rows=)`` and ``CNATClassifier(split_head="all")``
(docs/certificates.md, Proposition 8.1), attacked by the independent solvers of
test_soundness_ridge.py (refits by least squares, linprog row attacks, brute force over flips,
Monte-Carlo re-draws of the free rows' votes)."""

import itertools

import numpy as np
import pytest
import torch

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.certificates import certify_ridge
from sklearn_cnat.exceptions import CertificationError, CNATValueError
from sklearn_cnat.models import FastCNN

from test_soundness_ridge import (_attack_margins, _Budget, _flip_candidates, _flipped_margins, _l1_row_attack,
                                  _problem, _refit_scores)
from test_strong_path import TINY, _images


def _fixed(n, seed, share=0.5):
    return np.random.default_rng(seed).random(n) < share


def test_bounded_with_held_rows_is_the_zero_radius_budget_and_survives_attack():
    n_cert = n_points = 0
    for seed, n, d, K in [(0, 40, 3, 3), (1, 60, 5, 4), (2, 80, 4, 2)]:
        F, budget, X = _problem(seed, n, d, K, n_test=80)
        fixed = _fixed(n, seed)
        held = certify_ridge(F, budget, X, alpha=1.0, tier="bounded", fixed_rows=fixed)
        zero = _Budget(budget.pi, np.where(fixed, 0.0, budget.r), budget.rho, budget.counts)
        same = certify_ridge(F, zero, X, alpha=1.0, tier="bounded")
        np.testing.assert_array_equal(held.certified, same.certified)
        np.testing.assert_array_equal(held.worst_case_margin, same.worst_case_margin)
        np.testing.assert_array_equal(held.radius_scale, same.radius_scale)
        np.testing.assert_array_equal(held.covers, ~fixed)
        pred = np.searchsorted(np.arange(K), held.prediction)
        attacked = _attack_margins(F, budget, X, 1.0, pred, lambda i, a, b: budget.pi[i] if fixed[i] else
                                   _l1_row_attack(budget.pi[i], a, b, budget.r[i]))
        assert np.all(attacked[held.certified] > 0)
        np.testing.assert_allclose(held.worst_case_margin, attacked, atol=1e-8)  # still exact
        free = certify_ridge(F, budget, X, alpha=1.0, tier="bounded")
        assert np.all(held.certified >= free.certified)
        n_cert += int(held.certified.sum() - free.certified.sum())
        n_points += len(X)
    assert n_cert > 0.05 * n_points  # holding rows fixed certifies more points


def test_flip_with_held_rows_matches_brute_force_over_the_free_rows():
    n, d, K = 10, 3, 3
    checked = violations = untight = 0
    for seed in range(3):
        F, budget, X = _problem(300 + seed, n, d, K, n_test=40)
        fixed = np.zeros(n, dtype=bool)
        fixed[np.random.default_rng(seed).permutation(n)[:4]] = True
        free_rows = np.flatnonzero(~fixed)
        cert = certify_ridge(F, budget, X, alpha=0.5, tier="flip", m=1, fixed_rows=fixed)
        loose = certify_ridge(F, budget, X, alpha=0.5, tier="flip", m=1)
        assert np.all(cert.max_flips >= loose.max_flips)
        candidates = _flip_candidates(free_rows, K)  # only the free rows change
        for t in range(len(X)):
            margins, sizes = _flipped_margins(F, budget.pi, 0.5, X[t:t + 1], int(cert.prediction[t]), candidates)
            for m in (1, 2, 3):
                broken = bool(np.any(margins[sizes <= m] <= 0))
                checked += 1
                violations += int(cert.max_flips[t] >= m and broken)
                if cert.max_flips[t] + 1 == m and cert.max_flips[t] >= 0:
                    untight += int(not broken)
    print(f"flip with held rows: {checked} (point, m) pairs, {violations} violations, {untight} not tight")
    assert violations == 0 and untight == 0


def test_flip_every_free_row_changed_can_be_certified():
    F, budget, X = _problem(9, 30, 3, 3, n_test=50)
    fixed = np.ones(30, dtype=bool)
    fixed[:2] = False  # two changeable rows among 30
    cert = certify_ridge(F, budget, X, alpha=1.0, tier="flip", m=30, fixed_rows=fixed)
    assert cert.certified.any() and np.all(cert.max_flips[cert.certified] == 30)
    for t in np.flatnonzero(cert.certified)[:10]:  # both free rows to every vertex pair
        c = int(cert.prediction[t])
        for v in itertools.product(range(3), repeat=2):
            Q = budget.pi.copy()
            Q[:2] = np.eye(3)[list(v)]
            assert np.argmax(_refit_scores(F, Q, 1.0, X[t:t + 1])[0]) == c


def test_stochastic_with_held_rows_sums_the_free_rows_only():
    rng = np.random.default_rng(4)
    n, d, K, votes, alpha, delta = 40, 3, 3, 4, 1.0, 0.1
    F = rng.normal(size=(n, d))
    counts = np.stack([rng.multinomial(votes, p) for p in rng.dirichlet(np.ones(K), size=n)]).astype(float)
    pi = counts / votes
    X = rng.normal(size=(60, d))
    fixed = _fixed(n, 1)
    cert = certify_ridge(F, _Budget(pi, None, None, counts), X, alpha=alpha, tier="stochastic", delta=delta,
                         fixed_rows=fixed)
    H = _refit_scores(F, np.eye(n), alpha, X)  # (T, n): influence by an independent path
    scores = H @ pi
    rival = scores.copy()
    rival[np.arange(len(X)), cert.prediction] = -np.inf
    M = scores[np.arange(len(X)), cert.prediction] - rival.max(axis=1)
    sigma2 = (H[:, ~fixed] ** 2 / votes).sum(axis=1)  # (C12) over the free rows
    np.testing.assert_allclose(cert.worst_case_margin, M - np.sqrt(2 * sigma2 * np.log((K - 1) / delta)),
                               atol=1e-9)
    np.testing.assert_array_equal(cert.covers, ~fixed)


def test_stochastic_with_held_rows_violation_rate():
    """Re-draw only the free rows' votes: P(certified and pred != pred(Pi*)) <= delta per point."""
    rng = np.random.default_rng(7)
    n, d, K, votes, alpha, delta, draws = 40, 3, 3, 3, 1.0, 0.5, 1500
    F = rng.normal(size=(n, d))
    P = rng.dirichlet(np.ones(K) * 0.7, size=n)
    fixed = _fixed(n, 2)
    held_counts = np.stack([rng.multinomial(votes, p) for p in P]).astype(float)
    target = np.where(fixed[:, None], held_counts / votes, P)  # Pi*: held rows at their observed votes
    cand = F[rng.integers(n, size=2000)] + 0.8 * rng.normal(size=(2000, d))
    s = np.sort(_refit_scores(F, target, alpha, cand), axis=1)
    X = cand[np.argsort(s[:, -1] - s[:, -2])[:30]]
    truth = np.argmax(_refit_scores(F, target, alpha, X), axis=1)
    bad = np.zeros(len(X))
    for _ in range(draws):
        counts = np.stack([rng.multinomial(votes, p) for p in P]).astype(float)
        counts[fixed] = held_counts[fixed]
        cert = certify_ridge(F, _Budget(counts / votes, None, None, counts), X, alpha=alpha, tier="stochastic",
                             delta=delta, fixed_rows=fixed)
        bad += cert.certified & (cert.prediction != truth)
    rate = bad / draws
    assert np.all(rate <= delta + 3 * np.sqrt(delta * (1 - delta) / draws))


def test_fixed_rows_are_validated():
    F, budget, X = _problem(0, 20, 3, 3, n_test=5)
    for bad in (np.zeros(19, dtype=bool), np.zeros(20), [0, 1] * 10):
        with pytest.raises(CertificationError, match="fixed_rows must be a boolean mask of shape \\(20,\\)"):
            certify_ridge(F, budget, X, alpha=1.0, tier="bounded", fixed_rows=bad)


# ----------------------------------------------------------------------------- the estimator


def _all_clf(**kw):
    return CNATClassifier(module=FastCNN, module_kwargs=TINY, max_epochs=2, feature_split=0.5, split_head="all",
                          alpha=1.0, budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.1),
                          random_state=0, **kw)


def test_split_head_all_fits_every_row_covers_the_others_and_refuses_what_it_cannot_hold():
    X, votes, _ = _images(100, seed=5)
    clf = _all_clf().fit(X, votes)
    disjoint = _all_clf().set_params(split_head="disjoint").fit(X, votes)
    assert clf.scope_ == "model" and clf.head_rows_.all() and clf.train_features_.shape[0] == 100
    np.testing.assert_array_equal(clf.covered_rows_, disjoint.covered_rows_)
    np.testing.assert_array_equal(disjoint.covered_rows_, disjoint.head_rows_)
    assert clf.covered_rows_.sum() == 50
    for p, q in zip(clf.net_.module_.state_dict().values(), disjoint.net_.module_.state_dict().values()):
        assert torch.equal(p, q)  # the same backbone: only the head differs
    for tier, kw in (("bounded", {}), ("flip", {"m": 1}), ("stochastic", {})):
        cert = clf.certify(X[:8], tier=tier, **kw)
        np.testing.assert_array_equal(cert.covers, clf.covered_rows_)
    with pytest.raises(CNATValueError, match="split_head='all' needs feature_split"):
        _all_clf().set_params(feature_split=None).fit(X, votes)
    with pytest.raises(CNATValueError, match="split_head='all' needs feature_split and head='ridge'"):
        _all_clf(head="robust_softmax").fit(X, votes)
    with pytest.raises(CNATValueError, match="split_head must be"):
        _all_clf().set_params(split_head="both").fit(X, votes)
    assert clf.split_head_ == "all" and disjoint.split_head_ == "disjoint"
    from sklearn_cnat.relabel import suggest_relabels

    for strategy in ("expected", "assumed"):  # only the covered rows are ranked (new votes on a
        ranked = suggest_relabels(clf, X[:10], n=8, strategy=strategy, random_state=0)  # backbone row
        assert len(ranked) == 8 and clf.covered_rows_[ranked["index"]].all()        # would retrain it)
    full = suggest_relabels(clf, X[:10], strategy="expected", bandwidth=None, random_state=0)
    assert sorted(full["index"]) == list(np.flatnonzero(clf.covered_rows_))


def test_split_head_all_certificates_survive_whole_estimator_attacks():
    X, votes, _ = _images(160, seed=6)
    Xt = _images(40, seed=7)[0]
    clf = _all_clf().fit(X, votes)
    covered = np.flatnonzero(clf.covered_rows_)
    # 1. the covered rows' labels never reach the backbone
    changed = votes.copy()
    changed[covered] = np.eye(3, dtype=int)[np.random.default_rng(0).integers(3, size=covered.size)] * 3
    other = _all_clf().fit(X, changed)
    np.testing.assert_array_equal(clf.feature_map(Xt), other.feature_map(Xt))
    # 2. bounded: worst case over the covered rows, backbone rows held, by linprog and a refit
    cert = clf.certify(Xt, tier="bounded")
    assert cert.certified.any()
    F, budget = clf.train_features_, clf._head_budget()
    held = ~clf.covered_rows_
    pred = np.searchsorted(clf.classes_, cert.prediction)
    attacked = _attack_margins(F, budget, clf.feature_map(Xt), 1.0, pred,
                               lambda i, a, b: budget.pi[i] if held[i] else
                               _l1_row_attack(budget.pi[i], a, b, budget.r[i]))
    assert np.all(attacked[cert.certified] > 0)
    # 3. flip: the m covered rows of largest influence moved to the runner-up, whole estimator refit
    flip = clf.certify(Xt, tier="flip", m=2)
    assert flip.certified.any()
    scores = clf.decision_function(Xt)
    for t in np.flatnonzero(flip.certified)[:5]:
        c, runner = pred[t], np.argsort(scores[t])[-2]
        h = _refit_scores(F, np.eye(len(F)), 1.0, clf.feature_map(Xt[t:t + 1]))[0]
        top = covered[np.argsort(-np.abs(h[covered]))[:2]]
        attacked_votes = votes.copy()
        for i in top:
            attacked_votes[i] = np.eye(3, dtype=int)[runner if h[i] > 0 else c] * 3
        assert _all_clf().fit(X, attacked_votes).predict(Xt[t:t + 1])[0] == flip.prediction[t]


def test_split_head_auto_is_all_for_the_ridge_head_and_disjoint_otherwise():
    X, votes, _ = _images(100, seed=5)
    auto = _all_clf().set_params(split_head="auto")
    assert CNATClassifier().split_head == "auto" and "split_head_" not in vars(auto)
    auto.fit(X, votes)
    explicit = _all_clf().fit(X, votes)
    assert auto.split_head == "auto" and auto.split_head_ == "all"
    np.testing.assert_array_equal(auto.head_rows_, explicit.head_rows_)
    np.testing.assert_array_equal(auto.covered_rows_, explicit.covered_rows_)
    np.testing.assert_array_equal(auto.coef_, explicit.coef_)
    Xt = X[:8]
    a, b = auto.certify(Xt, tier="flip", m=1), explicit.certify(Xt, tier="flip", m=1)
    np.testing.assert_array_equal(a.max_flips, b.max_flips)
    np.testing.assert_array_equal(a.covers, auto.covered_rows_)
    robust = _all_clf(head="robust_softmax").set_params(split_head="auto").fit(X, votes)
    assert robust.split_head_ == "disjoint" and robust.head_rows_.sum() == 50
    np.testing.assert_array_equal(robust.head_rows_, robust.covered_rows_)
    plain = _all_clf().set_params(split_head="auto", feature_split=None).fit(X, votes)
    assert plain.split_head_ == "disjoint" and plain.head_rows_.all()
