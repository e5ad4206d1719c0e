import numpy as np
import pytest

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.budgets import NoiseBudget
from sklearn_cnat.certificates import certify_ridge
from sklearn_cnat.exceptions import CertificationError
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
    ranking = suggest_relabels(clf, Xe, k=2, chunk_size=37)
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
    plural = suggest_relabels(clf, Xe, assume="plurality")
    model = suggest_relabels(clf, Xe, assume="model")
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
    ranking = suggest_relabels(clf, Xe, k=2)
    base = certify_ridge(clf.train_features_, clf.budget_, Xe, alpha=5.0, tier="stochastic",
                         sample_weight=w).certified.sum()
    for _, row in ranking.head(3).iterrows():
        i = int(row["index"])
        new = certify_ridge(clf.train_features_, _with_extra_votes(clf.budget_, i, 2), Xe, alpha=5.0,
                            tier="stochastic", sample_weight=w).certified.sum()
        assert (new - base) == row["newly_certified"] - row["lost"]
