import itertools

import numpy as np
import pytest

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.exceptions import CertificationError
from sklearn_cnat.partition import (
    PartitionAggregationClassifier,
    _hash_partition,
    _max_flips,
    _plurality,
    _survives_free_votes,
)


def _plural_after(counts, moves):
    c = counts.copy()
    for src, dst in moves:
        c[src] -= 1
        c[dst] += 1
    return int(np.argmax(c))


@pytest.mark.parametrize("k", [2, 3, 4])
def test_max_flips_matches_brute_force(k):
    """Moving m votes between classes (any sources/targets) never changes the winner iff m <= max_flips."""
    rng = np.random.RandomState(k)
    for _ in range(150):
        counts = rng.multinomial(rng.randint(1, 9), np.ones(k) / k)
        pred = int(np.argmax(counts))
        mf = int(_max_flips(counts[None], np.array([pred]))[0])
        for m in range(0, 4):
            # every way to move m votes from voters (with their class) to any class
            voters = [c for c in range(k) for _ in range(counts[c])]
            changed = False
            for srcs in itertools.combinations(range(len(voters)), min(m, len(voters))):
                for dsts in itertools.product(range(k), repeat=len(srcs)):
                    moves = [(voters[s], d) for s, d in zip(srcs, dsts)]
                    if _plural_after(counts, moves) != pred:
                        changed = True
                        break
                if changed:
                    break
            assert (m <= mf) == (not changed), (counts, m, mf)


@pytest.mark.parametrize("k", [2, 3])
def test_survives_free_votes_matches_brute_force(k):
    rng = np.random.RandomState(10 + k)
    for _ in range(200):
        fixed = rng.multinomial(rng.randint(0, 7), np.ones(k) / k)
        u = rng.randint(0, 4)
        pred = int(np.argmax(fixed + 0))
        ok, _ = _survives_free_votes(fixed[None], np.array([pred]), np.array([u]))
        brute = all(
            _plurality((fixed + np.bincount(assign, minlength=k))[None])[0] == pred
            for assign in itertools.product(range(k), repeat=u)
        ) if u else _plurality(fixed[None])[0] == pred
        assert bool(ok[0]) == brute, (fixed, u)


def test_hash_partition_is_label_independent_and_deterministic():
    X = np.random.RandomState(0).rand(200, 5)
    a = _hash_partition(X, 7, seed=3)
    assert np.array_equal(a, _hash_partition(X.copy(), 7, seed=3))
    assert set(a) == set(range(7))
    perm = np.random.RandomState(1).permutation(200)
    assert np.array_equal(_hash_partition(X[perm], 7, seed=3), a[perm])  # a function of the input only


def _data(n=300, k=3, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=4.0, size=(k, 4))
    y = rng.randint(0, k, n)
    X = centers[y] + rng.normal(size=(n, 4))
    votes = np.zeros((n, k), dtype=int)
    for _ in range(3):
        noisy = np.where(rng.rand(n) < 0.15, rng.randint(0, k, n), y)
        votes[np.arange(n), noisy] += 1
    return X, votes, y


def test_flip_certificate_survives_retraining_attack():
    X, votes, y = _data()
    base = CNATClassifier(head="ridge", budget=NoiseBudgetTransformer(mapping="flat", radius=0.1))
    pac = PartitionAggregationClassifier(base, n_partitions=9).fit(X, votes)
    Xt, _, yt = _data(n=120, seed=1)
    cert = pac.certify(Xt, tier="flip", m=2)
    assert cert.scope == "model" and cert.engine == "partition"
    np.testing.assert_array_equal(cert.prediction, pac.predict(Xt))
    assert 0 < cert.certified.mean() <= 1
    # Attack: for each part, relabel its examples of the predicted majority class to another class
    # and retrain two parts (m = 2); no certified prediction may change.
    rng = np.random.RandomState(0)
    violations = 0
    for trial in range(6):
        parts = rng.choice(9, 2, replace=False)
        v2 = votes.copy()
        for p in parts:
            idx = np.flatnonzero(pac.partition_ == p)
            v2[idx] = np.roll(v2[idx], shift=trial % 2 + 1, axis=1)
        attacked = PartitionAggregationClassifier(base, n_partitions=9).fit(X, v2)
        changed = attacked.predict(Xt) != cert.prediction
        violations += int(np.sum(changed & cert.certified))
    assert violations == 0


def test_bounded_counts_only_budgeted_parts():
    X, votes, _ = _data()
    budget_tf = NoiseBudgetTransformer(mapping="linear", c=1.0)
    base = CNATClassifier(head="ridge")
    pac = PartitionAggregationClassifier(base, n_partitions=10, budget=budget_tf, budgeted_partitions=2)
    pac.fit(X, votes)
    budgeted = pac.budget_.r > 0
    assert set(pac.partition_[budgeted]) <= {0, 1}
    cert = pac.certify(X[:50], tier="bounded")
    # parts 0 and 1 may vote anything: certified iff the winner survives two free votes
    base_pred = pac._base_predictions(X[:50])
    fixed = np.stack([np.bincount(col, minlength=3) for col in base_pred[2:].T])
    pred = np.argmax(np.stack([np.bincount(col, minlength=3) for col in base_pred.T]), 1)
    expected = [all(np.argmax(f + np.bincount(a, minlength=3)) == p
                    for a in itertools.product(range(3), repeat=2)) for f, p in zip(fixed, pred)]
    np.testing.assert_array_equal(cert.certified, expected)
    with pytest.raises(CertificationError, match="budgeted_partitions"):
        pac.certify(X[:5], tier="flip", m=1)
    with pytest.raises(CertificationError, match="stochastic"):
        pac.certify(X[:5], tier="stochastic")


def test_piecewise_mapping_refuses_flip_tier():
    X, votes, _ = _data(n=120)
    pac = PartitionAggregationClassifier(CNATClassifier(head="ridge"), n_partitions=3,
                                         budget=NoiseBudgetTransformer(mapping="piecewise")).fit(X, votes)
    with pytest.raises(CertificationError, match="piecewise"):
        pac.certify(X[:5], tier="flip", m=1)


def test_sklearn_base_estimator_and_errors():
    from sklearn.linear_model import LogisticRegression

    X, votes, _ = _data(n=150)
    pac = PartitionAggregationClassifier(LogisticRegression(max_iter=200), n_partitions=3).fit(X, votes)
    assert pac.predict(X).shape == (150,)
    with pytest.raises(ValueError, match="n_partitions"):
        PartitionAggregationClassifier(n_partitions=0).fit(X, votes)
    with pytest.raises(ValueError, match="samples"):
        PartitionAggregationClassifier(n_partitions=2).fit(X[:10], votes)
