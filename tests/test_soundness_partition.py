"""Soundness of PartitionAggregationClassifier's certificates under refits (Theorem P1's conditions).

Each test refits the aggregator on changed (or identical) label evidence and checks what
Theorem P1 promises: at most ``m`` base models change, and no prediction certified at ``m``
changes. The conditions it needs (deterministic learner, classes fixed independently of the
labels, a partition that depends on the inputs only, row-wise budgets) are enforced or the
certificate is refused.
"""

import dataclasses
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from sklearn_cnat import CNATClassifier, NoiseBudget, NoiseBudgetTransformer
from sklearn_cnat.exceptions import CertificationError, CNATValueError, NoiseBudgetError
from sklearn_cnat.partition import PartitionAggregationClassifier, _hash_partition


def _ridge(**budget):
    return CNATClassifier(module="linear", head="ridge", budget=NoiseBudgetTransformer(**budget) if budget else None)


def _blobs(n, k=3, d=4, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    centers = np.random.default_rng(100).normal(scale=scale, size=(k, d))
    y = rng.integers(k, size=n)
    return centers[y] + rng.normal(size=(n, d)), y


def _votes(y, k=3, seed=0):
    rng = np.random.default_rng(seed)
    votes = np.zeros((len(y), k), dtype=int)
    for _ in range(3):
        noisy = np.where(rng.random(len(y)) < 0.15, rng.integers(k, size=len(y)), y)
        votes[np.arange(len(y)), noisy] += 1
    return votes


def _check_refit(make, X, y, X2, y2, Xt, m, changed_rows):
    """Fit on (X, y), certify at m, refit on (X2, y2); check Theorem P1 and return the changed models."""
    pac = make().fit(X, y)
    cert = pac.certify(Xt, tier="flip", m=m)
    att = make().fit(X2, y2)
    np.testing.assert_array_equal(att.partition_, pac.partition_)
    np.testing.assert_array_equal(att.classes_, pac.classes_)
    changed = np.flatnonzero(np.any(pac._base_predictions(Xt) != att._base_predictions(Xt), axis=1))
    assert set(changed) <= set(pac.partition_[changed_rows].tolist()), (changed, pac.partition_[changed_rows])
    assert len(changed) <= m
    assert cert.certified.any()
    flipped = cert.certified & (att.predict(Xt) != cert.prediction)
    assert not flipped.any(), f"{flipped.sum()} certified predictions changed"
    return pac, att, changed


# --------------------------------------------------------------------------- end-to-end refits


def test_refit_on_identical_labels_reproduces_every_base_model():
    """(i) Same labels, fresh objects: identical partition, bit-identical base models, no change."""
    X, y = _blobs(300)
    votes = _votes(y)
    Xt, _ = _blobs(200, seed=1)
    pac, att, changed = _check_refit(lambda: PartitionAggregationClassifier(_ridge(radius=0.1), n_partitions=7),
                                     X, votes, X.copy(), votes.copy(), Xt, m=1, changed_rows=[])
    assert len(changed) == 0
    for a, b in zip(pac.estimators_, att.estimators_):
        np.testing.assert_array_equal(a.coef_, b.coef_)
        np.testing.assert_array_equal(a.intercept_, b.intercept_)


def _one_example_of_class_3():
    rng = np.random.default_rng(0)
    y = rng.integers(3, size=300)
    X = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])[y] + rng.normal(size=(300, 2))
    labels = y.copy()
    labels[7] = 3
    labels2 = labels.copy()
    labels2[7] = y[7]
    g = np.linspace(-2, 4, 30)
    return X, labels, labels2, np.array([[a, b] for a in g for b in g])


def _softmax():
    """A seeded linear softmax (skorch): its output layer has K units, so K matters to every part."""
    return CNATClassifier(lr=0.05, max_epochs=10, random_state=0, budget=NoiseBudgetTransformer(radius=0.1))


@pytest.mark.parametrize("base", ["softmax", "logistic"])
def test_relabel_removing_a_class_changes_at_most_one_base_model(base):
    """(ii) The only example of class 3 relabelled: with declared classes, K stays 4 in every part (before,
    K dropped to 3 and all 5 base models changed; 31 predictions certified at m=1 flipped)."""
    X, labels, labels2, Xt = _one_example_of_class_3()
    est = _softmax() if base == "softmax" else LogisticRegression(max_iter=500)
    make = lambda: PartitionAggregationClassifier(est, n_partitions=5, classes=[0, 1, 2, 3])  # noqa: E731
    pac, att, _ = _check_refit(make, X, labels, X, labels2, Xt, m=1, changed_rows=[7])
    assert pac.classes_.tolist() == att.classes_.tolist() == [0, 1, 2, 3]
    assert pac.vote_counts(Xt).shape == (len(Xt), 4)
    assert 3 not in att.predict(Xt)
    if base == "softmax":
        for model in pac.estimators_ + att.estimators_:
            assert model.classes_.tolist() == [0, 1, 2, 3] and model.predict_proba(Xt[:2]).shape == (2, 4)


def test_relabel_removing_a_class_without_declared_classes_is_refused():
    X, labels, _, Xt = _one_example_of_class_3()
    pac = PartitionAggregationClassifier(_softmax(), n_partitions=5).fit(X, labels)
    with pytest.raises(CertificationError, match=r"pass classes=\["):
        pac.certify(Xt, tier="flip", m=1)


def test_dataframe_with_bool_column_keeps_its_partition():
    """(iii) A DataFrame (object array: floats and a bool): same rows, same parts, on any copy of it."""
    X, y = _blobs(300, d=2, scale=1.5)
    rng = np.random.default_rng(3)
    flag = rng.random(300) < 0.5
    df = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "flag": flag})
    assert np.asarray(df).dtype == object
    rebuilt = pd.DataFrame({"a": X[:, 0].copy(), "b": X[:, 1].copy(), "flag": flag.copy()})
    votes = np.eye(3, dtype=int)[y] * 3
    votes2 = votes.copy()
    votes2[[4, 9]] = np.roll(votes2[[4, 9]], 1, axis=1)
    g = np.linspace(-2, 3.5, 20)
    Xt = pd.DataFrame({"a": np.repeat(g, 20), "b": np.tile(g, 20), "flag": False})
    make = lambda: PartitionAggregationClassifier(_ridge(radius=0.1), n_partitions=7)  # noqa: E731
    _check_refit(make, df, votes, df.copy(deep=True), votes, Xt, m=1, changed_rows=[])
    _check_refit(make, df, votes, rebuilt, votes2, Xt, m=2, changed_rows=[4, 9])


@pytest.mark.parametrize("estimator", ["default", "softmax"])
def test_default_estimator_is_seeded_and_refits_reproduce(estimator):
    """(iv) estimator=None (CNATClassifier(), random_state=None), and an unseeded skorch-trained softmax:
    seeded per part, so a refit after other code used torch's global RNG reproduces every base model."""
    import torch

    base = None if estimator == "default" else CNATClassifier(head="softmax", max_epochs=10, random_state=None)

    X, y = _blobs(240, d=5)
    votes = _votes(y)
    votes2 = votes.copy()
    votes2[0] = np.roll(votes2[0], 1)
    Xt, _ = _blobs(150, d=5, seed=1)

    def make():
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))))
        return PartitionAggregationClassifier(base, n_partitions=5)

    pac, _, changed = _check_refit(make, X, votes, X, votes, Xt, m=1, changed_rows=[])
    assert len(changed) == 0
    seeds = [est.random_state for est in pac.estimators_ if not isinstance(est, tuple)]
    assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == len(seeds)
    _check_refit(make, X, votes, X, votes2, Xt, m=1, changed_rows=[0])


# --------------------------------------------------------------------------- classes


def test_classes_inferred_from_labels_refuse_tier_flip():
    X, y = _blobs(120)
    pac = PartitionAggregationClassifier(_ridge(radius=0.1), n_partitions=3).fit(X, y)
    with pytest.raises(CertificationError, match=r"classes=\["):
        pac.certify(X[:5], tier="flip", m=1)
    assert pac.certify(X[:5], tier="bounded").certified.shape == (5,)
    declared = PartitionAggregationClassifier(_ridge(radius=0.1), n_partitions=3, classes=[0, 1, 2]).fit(X, y)
    assert declared.certify(X[:5], tier="flip", m=1).certified.shape == (5,)
    via_transformer = PartitionAggregationClassifier(_ridge(radius=0.1, classes=[0, 1, 2]), n_partitions=3).fit(X, y)
    assert via_transformer.budget_.rowwise


def test_classes_parameter_is_validated_in_fit():
    X, y = _blobs(60)
    votes = _votes(y)
    classes = [0, 1, 2]
    pac = PartitionAggregationClassifier(_ridge(), classes=classes)
    assert pac.get_params()["classes"] is classes and clone(pac).get_params()["classes"] == classes
    with pytest.raises(CNATValueError, match="duplicates"):
        PartitionAggregationClassifier(_ridge(), classes=[0, 1, 1]).fit(X, y)
    with pytest.raises(CNATValueError, match="columns"):
        PartitionAggregationClassifier(_ridge(), classes=[0, 1, 2, 3]).fit(X, votes)
    with pytest.raises(CNATValueError, match="transformer declares"):
        PartitionAggregationClassifier(_ridge(classes=[0, 1, 2]), classes=[2, 1, 0]).fit(X, y)
    budget = NoiseBudgetTransformer().fit_transform(votes)
    with pytest.raises(CNATValueError, match="NoiseBudget has classes"):
        PartitionAggregationClassifier(_ridge(), classes=[1, 2, 3]).fit(X, budget)
    with pytest.raises(CNATValueError, match="labels outside the classes"):
        PartitionAggregationClassifier(_ridge(), classes=[0, 1]).fit(X, y)


# --------------------------------------------------------------------------- determinism


def test_unset_random_states_are_seeded_from_part_and_random_state():
    X, y = _blobs(150)
    pipe = make_pipeline(StandardScaler(), SGDClassifier(random_state=None, max_iter=50, tol=None))
    pac = PartitionAggregationClassifier(pipe, n_partitions=3, classes=[0, 1, 2]).fit(X, y)
    seeds = [est.get_params()["sgdclassifier__random_state"] for est in pac.estimators_]
    assert all(isinstance(s, int) for s in seeds) and len(set(seeds)) == 3
    other = PartitionAggregationClassifier(pipe, n_partitions=3, classes=[0, 1, 2], random_state=1).fit(X, y)
    assert [est.get_params()["sgdclassifier__random_state"] for est in other.estimators_] != seeds
    kept = PartitionAggregationClassifier(SGDClassifier(random_state=5), n_partitions=3).fit(X, y)
    assert [est.random_state for est in kept.estimators_] == [5, 5, 5]
    assert pipe.get_params()["sgdclassifier__random_state"] is None
    with pytest.raises(CNATValueError, match="random_state"):
        PartitionAggregationClassifier(pipe, random_state=None).fit(X, y)


class _NoisyVoter(ClassifierMixin, BaseEstimator):
    """Declares itself non-deterministic and has no random_state to seed."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = True
        return tags

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return self.classes_[np.random.randint(len(self.classes_), size=len(X))]


def test_declared_nondeterministic_estimator_refuses_certificates():
    X, y = _blobs(90)
    pac = PartitionAggregationClassifier(_NoisyVoter(), n_partitions=3, classes=[0, 1, 2]).fit(X, y)
    assert not pac.deterministic_
    for tier in ("flip", "bounded"):
        with pytest.raises(CertificationError, match="non-deterministic"):
            pac.certify(X[:5], tier=tier, m=0)
    assert pac.predict(X[:5]).shape == (5,)


# --------------------------------------------------------------------------- the hash


def _canonical_pairs():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3))
    X[::5, 0] = 0.0
    X[1::7, 1] = np.nan
    twin = X.copy()
    twin[::5, 0] = -0.0
    bits = twin.view(np.uint64)
    bits[1::7, 1] = np.uint64(0xFFF8000000000123)
    ints = rng.integers(-5, 5, size=(60, 3))
    f32 = rng.normal(size=(60, 3)).astype(np.float32)
    return [(X, twin), (ints, ints.astype(np.float64)), (ints, ints.astype(object)),
            (f32, f32.astype(np.float64)), (X, pd.DataFrame(X)),
            (np.array([[True, 2], [False, 0]]), np.array([[1.0, 2.0], [0.0, 0.0]]))]


@pytest.mark.parametrize("pair", range(6))
def test_hash_depends_on_values_not_on_representation(pair):
    a, b = _canonical_pairs()[pair]
    np.testing.assert_array_equal(_hash_partition(a, 11, seed=2), _hash_partition(b, 11, seed=2))


def _mixed_frame():
    rng = np.random.default_rng(5)
    n = 80
    return pd.DataFrame({"x": rng.normal(size=n), "flag": rng.random(n) < 0.5,
                         "city": rng.choice(["Paris", "Zürich", "Lagos"], n),
                         "count": pd.array(rng.integers(0, 4, n), dtype="Int64")})


def test_hash_of_object_rows_is_stable_across_copies_and_processes(tmp_path):
    df = _mixed_frame()
    parts = _hash_partition(df, 7, seed=4)
    assert len(set(parts.tolist())) > 1
    np.testing.assert_array_equal(parts, _hash_partition(df.copy(deep=True), 7, seed=4))
    np.testing.assert_array_equal(parts, _hash_partition(pd.DataFrame(df.to_dict("list")), 7, seed=4))
    np.testing.assert_array_equal(parts, _hash_partition(np.asarray(df, dtype=object), 7, seed=4))
    path = tmp_path / "frame.pkl"
    path.write_bytes(pickle.dumps(df))
    code = ("import pickle, sys; from sklearn_cnat.partition import _hash_partition; "
            "print(_hash_partition(pickle.load(open(sys.argv[1], 'rb')), 7, seed=4).tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert eval(out.stdout) == parts.tolist()


def test_hash_refuses_values_without_a_canonical_encoding():
    X = np.empty((3, 2), dtype=object)
    X[:] = 1.0
    X[1, 1] = {"a": 1}
    with pytest.raises(CNATValueError, match="canonical"):
        _hash_partition(X, 3, seed=0)
    with pytest.raises(CNATValueError, match="complex"):
        _hash_partition(np.ones((3, 2), dtype=complex), 3, seed=0)


# --------------------------------------------------------------------------- budgets used, not how built


def test_label_dependent_precomputed_budget_refuses_tier_flip():
    """A precomputed piecewise NoiseBudget: one changed vote row moves the threshold and the radii in every
    part, so the flip tier must be refused; the bounded tier (declaration held fixed) is still issued."""
    X, y = _blobs(300, d=2)
    votes = np.zeros((300, 3), int)
    noisy = np.random.default_rng(1).random(300) < 0.3
    votes[np.arange(300), y] = np.where(noisy, 2, 3)
    votes[np.flatnonzero(noisy), (y[noisy] + 1) % 3] = 1
    tf = dict(mapping="piecewise", hard_fraction=noisy.sum() / 299, radius_hard=1.0, radius_easy=0.0)
    budget = NoiseBudgetTransformer(**tf).fit_transform(votes)
    i = int(np.flatnonzero(~noisy)[0])
    votes2 = votes.copy()
    votes2[i] = 0
    votes2[i, y[i]], votes2[i, (y[i] + 1) % 3] = 2, 1
    budget2 = NoiseBudgetTransformer(**tf).fit_transform(votes2)
    pac = PartitionAggregationClassifier(_ridge(), n_partitions=3).fit(X, budget)
    assert len(np.unique(pac.partition_[budget.r != budget2.r])) == 3
    with pytest.raises(CertificationError, match="rowwise=False"):
        pac.certify(X[:5], tier="flip", m=1)
    assert pac.certify(X[:5], tier="bounded").certified.shape == (5,)
    hand = NoiseBudget(pi=budget.pi, r=budget.r, rho=budget.rho, classes_=budget.classes_,
                       counts=budget.counts, p_error=budget.p_error)
    with pytest.raises(CertificationError, match="rowwise=False"):
        PartitionAggregationClassifier(_ridge(), n_partitions=3).fit(X, hand).certify(X[:5], tier="flip", m=1)
    flat = NoiseBudgetTransformer(mapping="linear").fit_transform(votes)
    cert = PartitionAggregationClassifier(_ridge(), n_partitions=3).fit(X, flat).certify(X[:5], tier="flip", m=1)
    assert cert.m == 1


def test_noise_budget_records_rowwise_provenance():
    votes = np.array([[3, 0, 0], [2, 1, 0], [1, 1, 1], [0, 0, 2]])
    labels = np.array([0, 2, 2, 1])
    annot = np.array([[0, 1, np.nan], [2, 2, 2], [1, 1, 0], [0, 0, 0]])
    probs = np.full((4, 3), 1 / 3)
    T = NoiseBudgetTransformer
    assert T().fit_transform(votes).rowwise
    assert T(mapping="linear", scale=2.0).fit_transform(votes).rowwise
    assert T(mapping="posterior", smoothing=0.1, n_draws=100).fit_transform(votes).rowwise
    assert not T(mapping="posterior", smoothing=0.1, n_draws=100, random_state=None).fit_transform(votes).rowwise
    assert not T(mapping="piecewise").fit_transform(votes).rowwise
    assert not T().fit_transform(labels).rowwise
    assert T(classes=[0, 1, 2]).fit_transform(labels).rowwise
    assert not T(classes=[0, 1, 2]).fit_transform(labels, pred_probs=probs).rowwise
    with pytest.raises(NoiseBudgetError, match="ambiguous"):  # auto no longer reads NaN as 'annotators'
        T(classes=[0, 1, 2]).fit_transform(annot)
    assert T(classes=[0, 1, 2], evidence="annotators").fit_transform(annot).rowwise
    fitted = T(classes=[0, 1, 2]).fit(labels)
    assert fitted.transform(labels[:2]).rowwise
    budget = T().fit_transform(votes)
    assert budget[1:3].rowwise and budget.scaled(0.5).rowwise
    assert not budget.scaled(np.array([1.0, 0.5, 2.0, 1.0])).rowwise
    assert not NoiseBudget(pi=np.eye(2), r=[0.1, 0.1], rho=[0, 0], classes_=[0, 1], counts=np.eye(2),
                           p_error=[0, 0]).rowwise
    assert not dataclasses.replace(budget, pi=budget.pi[:, ::-1]).rowwise
    assert pickle.loads(pickle.dumps(budget)).rowwise
