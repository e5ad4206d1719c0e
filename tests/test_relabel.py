import numpy as np
import pytest

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.budgets import NoiseBudget
from sklearn_cnat.certificates import certify_ridge
from sklearn_cnat.exceptions import CertificationError, CNATValueError
from sklearn_cnat.relabel import suggest_relabels


def _problem(seed=0, n=150, k=3, d=4):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=2.5, size=(k, d))
    y = rng.randint(0, k, n)
    X = centers[y] + rng.normal(size=(n, d))
    votes = np.zeros((n, k), dtype=int)
    n_votes = rng.randint(1, 4, n)
    for i in range(n):
        for _ in range(n_votes[i]):
            votes[i, y[i] if rng.rand() > 0.3 else rng.randint(k)] += 1
    Xe = centers[rng.randint(0, k, 200)] + rng.normal(size=(200, d))
    return X, votes, Xe


def _with_extra_votes(budget, i, k):
    counts = budget.counts.copy()
    counts[i, budget.labels[i]] += k
    pi = budget.pi.copy()
    pi[i] = counts[i] / counts[i].sum()
    return NoiseBudget(pi=pi, r=budget.r, rho=budget.rho, classes_=budget.classes_, counts=counts,
                       p_error=budget.p_error)


def test_gain_matches_recertifying_with_the_extra_votes():
    X, votes, Xe = _problem()
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    ranking = suggest_relabels(clf, Xe, k=2, strategy="assumed", chunk_size=37)
    assert len(ranking) == len(X)
    base = certify_ridge(clf.train_features_, clf.budget_, Xe, alpha=5.0, tier="stochastic").certified.sum()
    checked = 0
    for _, row in ranking.head(5).iterrows():
        i = int(row["index"])
        new = certify_ridge(clf.train_features_, _with_extra_votes(clf.budget_, i, 2), Xe, alpha=5.0,
                            tier="stochastic").certified.sum()
        assert (new - base) == row["newly_certified"] - row["lost"]
        checked += 1
    assert checked == 5
    assert ranking["coverage_gain"].iloc[0] > 0
    assert ranking["coverage_gain"].is_monotonic_decreasing


def test_top_choice_beats_random_choice():
    X, votes, Xe = _problem(seed=1)
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    ranking = suggest_relabels(clf, Xe, n=10)
    assert len(ranking) == 10
    full = suggest_relabels(clf, Xe)
    assert ranking["coverage_gain"].mean() >= full["coverage_gain"].mean()


def test_requires_ridge_head_and_valid_args():
    X, votes, Xe = _problem()
    soft = CNATClassifier(head="softmax", max_epochs=1).fit(X, votes)
    with pytest.raises(CertificationError, match="head='ridge'"):
        suggest_relabels(soft, Xe)
    clf = CNATClassifier(head="ridge", budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    with pytest.raises(ValueError, match="k must be"):
        suggest_relabels(clf, Xe, k=0)
    with pytest.raises(ValueError, match="delta"):
        suggest_relabels(clf, Xe, delta=1.5)


def test_model_assumption_moves_doubted_labels_towards_the_model():
    X, votes, Xe = _problem(seed=2)
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    plural = suggest_relabels(clf, Xe, strategy="assumed", assume="plurality")
    model = suggest_relabels(clf, Xe, strategy="assumed", assume="model")
    assert len(model) == len(plural) == len(X)
    gains = plural.set_index("index")["coverage_gain"], model.set_index("index")["coverage_gain"]
    doubted = np.flatnonzero(clf.predict(X) != clf.classes_[clf.budget_.labels])
    assert doubted.size > 0
    # where the model disagrees with the label, expected votes differ, so the gains differ
    assert not np.allclose(gains[0].loc[doubted], gains[1].loc[doubted])
    with pytest.raises(ValueError, match="assume"):
        suggest_relabels(clf, Xe, assume="oracle")


def test_gain_reads_the_sample_weights():
    """With fit(sample_weight=w) the ranking is that of the weighted head (docs/certificates.md, section 9)."""
    X, votes, Xe = _problem(1)
    w = np.random.RandomState(1).uniform(0.2, 3.0, len(X))
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes,
                                                                                                  sample_weight=w)
    ranking = suggest_relabels(clf, Xe, k=2, strategy="assumed")
    base = certify_ridge(clf.train_features_, clf.budget_, Xe, alpha=5.0, tier="stochastic",
                         sample_weight=w).certified.sum()
    for _, row in ranking.head(3).iterrows():
        i = int(row["index"])
        new = certify_ridge(clf.train_features_, _with_extra_votes(clf.budget_, i, 2), Xe, alpha=5.0,
                            tier="stochastic", sample_weight=w).certified.sum()
        assert (new - base) == row["newly_certified"] - row["lost"]


# --------------------------------------------------------------------------- strategy="expected"


def _tiny(seed, n=10, K=3, T=60):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=2.0, size=(K, 2))
    y = np.arange(n) % K
    X = centers[y] + rng.normal(scale=0.8, size=(n, 2))
    votes = np.zeros((n, K), dtype=int)
    for i in range(n):
        for _ in range(rng.randint(1, 4)):
            votes[i, y[i] if rng.rand() > 0.3 else rng.randint(K)] += 1
    Xe = centers[rng.randint(0, K, T)] + rng.normal(scale=0.8, size=(T, 2))
    return X, votes, Xe, rng.dirichlet(np.ones(K), size=n), y


def _n_certified(clf, Xe, counts, delta, sample_weight=None):
    """Refit the ridge head on ``counts`` (vote mean, weighted by ``sample_weight``) and count the certified points."""
    budget = NoiseBudget(pi=counts / counts.sum(axis=1, keepdims=True), r=clf.budget_.r, rho=clf.budget_.rho,
                         classes_=clf.budget_.classes_, counts=counts, p_error=clf.budget_.p_error)
    return int(certify_ridge(clf.train_features_, budget, Xe, alpha=clf.alpha_, tier="stochastic",
                             delta=delta, sample_weight=sample_weight).certified.sum())


def _brute_force_gain(clf, Xe, law, rows, delta, sample_weight=None):
    """E[certified after one new vote on each of ``rows``] - certified now, by enumeration of the votes."""
    import itertools

    counts0 = clf.budget_.counts.astype(int)
    K = counts0.shape[1]
    total = 0.0
    for outcome in itertools.product(range(K), repeat=len(rows)):
        prob = np.prod([law[i, a] for i, a in zip(rows, outcome)])
        if prob == 0:
            continue
        counts = counts0.copy()
        for i, a in zip(rows, outcome):
            counts[i, a] += 1
        total += prob * _n_certified(clf, Xe, counts, delta, sample_weight)
    return total - _n_certified(clf, Xe, counts0, delta, sample_weight)


@pytest.mark.parametrize("seed", [1, 2, 8])
def test_expected_gain_matches_enumerating_refitting_and_certifying(seed):
    X, votes, Xe, law, _ = _tiny(seed)
    clf = CNATClassifier(head="ridge", alpha=1.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    ranking = suggest_relabels(clf, Xe, k=1, delta=0.3, vote_model=law, bandwidth=None).set_index("index")
    assert ranking.shape[0] == len(X) and (ranking["coverage_gain"] != 0).any()
    for i in range(len(X)):
        expected = _brute_force_gain(clf, Xe, law, [i], 0.3) / len(Xe)
        assert ranking.loc[i, "coverage_gain"] == pytest.approx(expected, abs=1e-12)


def test_two_votes_of_the_confusion_model_match_enumeration():
    from scipy.special import softmax

    from sklearn_cnat._calibration import _noise_channel, _ridge_loo_scores
    from sklearn_cnat.relabel import _confusion_posterior, _multinomial_pmf, _outcome_probs, _vote_outcomes

    outcomes = _vote_outcomes(3, 2)
    assert outcomes.shape == (6, 3) and np.all(outcomes.sum(axis=1) == 2)
    X, votes, Xe, _, _ = _tiny(2, n=30)
    clf = CNATClassifier(head="ridge", alpha=1.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    b = clf.budget_
    prior = softmax(_ridge_loo_scores(clf.train_features_, b.pi, clf.alpha_, clf.coef_, clf.intercept_)
                    / clf.temperature_, axis=1)
    channel = _noise_channel(b.counts, prior)
    post = _confusion_posterior(prior, b.counts, channel)
    P = _outcome_probs(outcomes, posterior=post, channel=channel)
    for i in range(5):  # two votes i.i.d. given the latent class j: sum_j post_j N[a, j] N[c, j]
        brute = np.zeros(len(outcomes))
        for a in range(3):
            for c in range(3):
                brute[np.flatnonzero((outcomes == np.bincount([a, c], minlength=3)).all(axis=1))[0]] += \
                    np.sum(post[i] * channel[a] * channel[c])
        np.testing.assert_allclose(P[i], brute, atol=1e-12)
    np.testing.assert_allclose(_multinomial_pmf(outcomes, np.full((1, 3), 1 / 3)).sum(), 1.0)
    # the same expectation, run through the public function on two votes per row
    ranking = suggest_relabels(clf, Xe, k=2, delta=0.3, vote_model="confusion", bandwidth=None).set_index("index")
    i = int(ranking.index[0])
    total = 0.0
    for o, prob in zip(outcomes, P[i]):
        counts = b.counts.astype(int).copy()
        counts[i] += o
        total += prob * _n_certified(clf, Xe, counts, 0.3)
    gain = (total - _n_certified(clf, Xe, b.counts.astype(int), 0.3)) / len(Xe)
    assert ranking.loc[i, "coverage_gain"] == pytest.approx(gain, abs=1e-12) and gain > 0


def test_plurality_vote_model_reproduces_the_assumed_ranking():
    X, votes, Xe = _problem()
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    old = suggest_relabels(clf, Xe, strategy="assumed").set_index("index")["coverage_gain"]
    new = suggest_relabels(clf, Xe, vote_model="plurality", bandwidth=None).set_index("index")["coverage_gain"]
    np.testing.assert_allclose(new.loc[old.index].to_numpy(), old.to_numpy(), atol=1e-12)


def test_greedy_second_pick_is_the_best_given_the_first():
    # deterministic new votes (the true class), so the scenarios are exact
    X, votes, Xe, _, y = _tiny(8)
    law = np.eye(3)[y]
    clf = CNATClassifier(head="ridge", alpha=1.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    independent = suggest_relabels(clf, Xe, k=1, delta=0.3, vote_model=law, bandwidth=None)
    greedy = suggest_relabels(clf, Xe, n=3, k=1, delta=0.3, vote_model=law, bandwidth=None, block_size=1,
                              random_state=0)
    first = int(greedy["index"][0])
    assert first == int(independent["index"][0])
    assert int(greedy["index"][1]) != int(independent["index"][1])
    marginal = {j: _brute_force_gain(clf, Xe, law, [first, j], 0.3) - _brute_force_gain(clf, Xe, law, [first], 0.3)
                for j in range(len(X)) if j != first}
    second = int(greedy["index"][1])
    assert marginal[second] == max(marginal.values())
    assert greedy["coverage_gain"][1] * len(Xe) == pytest.approx(marginal[second], abs=1e-9)


def test_expected_ranking_is_deterministic_under_random_state():
    X, votes, Xe = _problem(seed=3)
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    for bandwidth in (None, 3.0):
        runs = [suggest_relabels(clf, Xe, n=30, bandwidth=bandwidth, block_size=3, n_scenarios=4, random_state=7)
                for _ in range(2)]
        assert runs[0].equals(runs[1])
        assert runs[0]["index"].is_unique and len(runs[0]) == 30


@pytest.mark.parametrize("kwargs, match", [
    ({"strategy": "oracle"}, "strategy must be"),
    ({"vote_model": "crowd"}, "vote_model must be"),
    ({"vote_model": np.ones((3, 3))}, "vote_model as an array"),
    ({"n": 0}, "n must be"),
    ({"block_size": 0}, "block_size must be"),
    ({"n_scenarios": 0}, "n_scenarios must be"),
    ({"bandwidth": 0.0}, "bandwidth must be"),
    ({"bandwidth": "wide"}, "bandwidth must be"),
    ({"k": 1.5}, "k must be"),
])
def test_expected_strategy_rejects_bad_inputs(kwargs, match):
    X, votes, Xe = _problem()
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    with pytest.raises(ValueError, match=match):
        suggest_relabels(clf, Xe, **kwargs)


def _dense_first_order_gain(H, pi, v, bandwidth=3.0, delta=0.05):
    """Scores, variances, a seeded expected change of every row and the first-order gain summed densely over H."""
    import math

    from sklearn_cnat.relabel import _slack, _smoothed_weight

    n, K = pi.shape
    S, sigma2 = H @ pi, (H**2) @ v
    d_mean = np.random.RandomState(0).dirichlet(np.ones(K), size=n) - pi
    dv = -v / 3
    log_ratio = math.log((K - 1) / delta)
    w = _smoothed_weight(S, sigma2, log_ratio, bandwidth)
    top, second, _, t = _slack(S, sigma2, log_ratio)
    dense = (w[:, None] * (H * (d_mean[:, top] - d_mean[:, second]).T - log_ratio / t[:, None] * H**2 * dv)).sum(0)
    return S, sigma2, d_mean, dv, log_ratio, w, dense


def test_first_order_gain_matches_the_dense_sum_and_the_smoothed_coverage():
    from scipy.stats import norm

    from sklearn_cnat.relabel import _first_order_gain, _influence_factors, _slack

    X, votes, Xe = _problem(seed=4)
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes)
    pi = clf.budget_.pi
    n, K = pi.shape
    v = 1.0 / clf.budget_.counts.sum(axis=1)
    G, Fc = _influence_factors(clf.train_features_, clf.feature_map(Xe), clf.alpha_)
    H = G @ Fc.T + 1.0 / n
    S, sigma2, d_mean, dv, log_ratio, w, dense = _dense_first_order_gain(H, pi, v)
    np.testing.assert_allclose(S, clf.feature_map(Xe) @ clf.coef_ + clf.intercept_, atol=1e-9)  # (C1)
    top, second, slack, t = _slack(S, sigma2, log_ratio)
    rows = np.arange(len(S))
    gain = _first_order_gain(G, Fc, S, sigma2, d_mean, dv, log_ratio, w)
    np.testing.assert_allclose(gain, dense, rtol=1e-8, atol=1e-12)

    def smoothed(step, j):  # sum_x Phi(slack / (3 sigma)) with the 3 sigma held at the current sigma
        S2 = S + step * H[:, [j]] * d_mean[j]
        s2 = sigma2 + step * H[:, j] ** 2 * dv[j]
        m = np.sort(S2, axis=1)
        slack2 = m[:, -1] - m[:, -2] - np.sqrt(2 * s2 * log_ratio)
        return norm.cdf(slack2 / (3.0 * np.sqrt(sigma2))).sum()

    j = int(np.argmax(np.abs(gain)))
    eps = 1e-6
    assert (smoothed(eps, j) - smoothed(-eps, j)) / (2 * eps) == pytest.approx(gain[j], rel=1e-4)


# --------------------------------------------------------------------------- strategy="expected" with weights


@pytest.mark.parametrize("seed", [1, 2, 8])
def test_weighted_expected_gain_matches_enumerating_refitting_and_certifying(seed):
    """Exact mode on a weighted fit: the weighted influence (C31) against refitting the weighted head."""
    X, votes, Xe, law, _ = _tiny(seed)
    w = np.random.RandomState(seed).uniform(0.2, 3.0, len(X))
    w[seed % len(X)] = 0.0
    clf = CNATClassifier(head="ridge", alpha=1.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes,
                                                                                                  sample_weight=w)
    ranking = suggest_relabels(clf, Xe, k=1, delta=0.3, vote_model=law, bandwidth=None).set_index("index")
    assert ranking.shape[0] == len(X) and (ranking["coverage_gain"] != 0).any()
    for i in range(len(X)):
        expected = _brute_force_gain(clf, Xe, law, [i], 0.3, w) / len(Xe)
        assert ranking.loc[i, "coverage_gain"] == pytest.approx(expected, abs=1e-10)
    assert ranking.loc[seed % len(X), "coverage_gain"] == 0.0
    # two votes of the (weighted leave-one-out) confusion model, on the best row
    from sklearn_cnat.relabel import _outcome_probs, _vote_law, _vote_outcomes

    outcomes = _vote_outcomes(3, 2)
    P = _outcome_probs(outcomes, **_vote_law(clf, clf.budget_, "confusion"))
    ranking = suggest_relabels(clf, Xe, k=2, delta=0.3, bandwidth=None).set_index("index")
    i = int(ranking.index[0])
    counts0 = clf.budget_.counts.astype(int)
    total = sum(prob * _n_certified(clf, Xe, counts0 + np.eye(len(X), dtype=int)[:, [i]] * o, 0.3, w)
                for o, prob in zip(outcomes, P[i]))
    gain = (total - _n_certified(clf, Xe, counts0, 0.3, w)) / len(Xe)
    assert ranking.loc[i, "coverage_gain"] == pytest.approx(gain, abs=1e-10)


def test_weighted_vote_models_use_the_weighted_leave_one_out():
    from scipy.special import softmax

    from sklearn_cnat._calibration import _ridge_loo_scores
    from sklearn_cnat.relabel import _expected_new_votes, _vote_law

    X, votes, Xe = _problem(seed=5, n=60)
    w = np.random.RandomState(5).uniform(0.2, 3.0, len(X))
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes,
                                                                                                  sample_weight=w)
    b = clf.budget_
    loo = _ridge_loo_scores(clf.train_features_, b.pi, clf.alpha_, clf.coef_, clf.intercept_, w)
    law = _vote_law(clf, b, "model")["vote_law"]
    np.testing.assert_allclose(law, softmax(loo / clf.temperature_, axis=1), rtol=1e-12)
    np.testing.assert_allclose(law, _expected_new_votes(clf, "model", b.labels), rtol=1e-12)
    unweighted = _ridge_loo_scores(clf.train_features_, b.pi, clf.alpha_, clf.coef_, clf.intercept_)
    assert not np.allclose(law, softmax(unweighted / clf.temperature_, axis=1))


@pytest.mark.parametrize("bandwidth", [None, 1.0])
def test_zero_weight_row_has_no_gain(bandwidth):
    X, votes, Xe = _problem(seed=6, n=80)
    w = np.random.RandomState(6).uniform(0.2, 3.0, len(X))
    zero = [3, 17, 40]
    w[zero] = 0.0
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes,
                                                                                                  sample_weight=w)
    full = suggest_relabels(clf, Xe, k=2, bandwidth=bandwidth, random_state=0).set_index("index")
    assert (full.loc[zero, "coverage_gain"] == 0).all() and (full.loc[zero, "slack_gain"] == 0).all()
    assert (full["coverage_gain"] != 0).any()
    greedy = suggest_relabels(clf, Xe, n=20, k=2, bandwidth=bandwidth, block_size=4, random_state=0)
    assert (greedy.set_index("index").reindex(zero)["coverage_gain"].fillna(0) == 0).all()


@pytest.mark.parametrize("bandwidth", [None, 1.0])
def test_equal_weights_scale_out(bandwidth):
    """Weights 3 with alpha 3a are the unweighted learner with alpha a (section 9): the same ranking and gains."""
    X, votes, Xe = _problem(seed=7, n=80)
    law = np.random.RandomState(7).dirichlet(np.ones(3), size=len(X))
    budget = NoiseBudgetTransformer(pi="votes")
    plain = CNATClassifier(head="ridge", alpha=2.0, budget=budget).fit(X, votes)
    weighted = CNATClassifier(head="ridge", alpha=6.0, budget=budget).fit(X, votes,
                                                                          sample_weight=np.full(len(X), 3.0))
    for n in (None, 25):
        a, b = (suggest_relabels(clf, Xe, n=n, k=2, vote_model=law, bandwidth=bandwidth, block_size=5,
                                 random_state=0) for clf in (plain, weighted))
        np.testing.assert_array_equal(a["index"], b["index"])
        np.testing.assert_allclose(b["coverage_gain"], a["coverage_gain"], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b["slack_gain"], a["slack_gain"], rtol=1e-9, atol=1e-9)


def test_weighted_first_order_gain_matches_the_dense_influence():
    from sklearn_cnat.certificates._ridge import _ridge_influence
    from sklearn_cnat.relabel import _first_order_gain, _influence_factors, _influence_offsets

    X, votes, Xe = _problem(seed=4)
    w = np.random.RandomState(4).uniform(0.2, 3.0, len(X))
    w[[0, 9]] = 0.0
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, votes,
                                                                                                  sample_weight=w)
    pi = clf.budget_.pi
    n, K = pi.shape
    v = 1.0 / clf.budget_.counts.sum(axis=1)
    F_eval = clf.feature_map(Xe)
    G, Fc = _influence_factors(clf.train_features_, F_eval, clf.alpha_, w)
    c = _influence_offsets(w)
    H = G @ Fc.T + c
    dense_H = np.concatenate(list(_ridge_influence(clf.train_features_, F_eval, clf.alpha_, sample_weight=w)))
    np.testing.assert_allclose(H, dense_H, atol=1e-12)  # (C31)
    assert np.all(H[:, [0, 9]] == 0)
    np.testing.assert_allclose(H.sum(axis=1), 1.0, atol=1e-12)
    S, sigma2, d_mean, dv, log_ratio, wt, dense = _dense_first_order_gain(H, pi, v)
    np.testing.assert_allclose(S, F_eval @ clf.coef_ + clf.intercept_, atol=1e-9)
    gain = _first_order_gain(G, Fc, S, sigma2, d_mean, dv, log_ratio, wt, c)
    np.testing.assert_allclose(gain, dense, rtol=1e-8, atol=1e-12)
    assert gain[0] == gain[9] == 0.0
