"""Tests of sklearn_cnat.budgets: NoiseBudget and NoiseBudgetTransformer."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.base import clone
from sklearn.utils import estimator_checks

from sklearn_cnat.budgets import (
    NoiseBudget,
    NoiseBudgetError,
    NoiseBudgetTransformer,
    _mc_level,
    _weissman_l1_radius,
)
from sklearn_cnat.exceptions import CNATError, CNATValueError, NotFittedError

VOTES = np.array([[3, 0, 0], [2, 1, 0], [1, 1, 1], [0, 1, 2]])


def _budget(n=3, k=2, **kw):
    args = dict(pi=np.full((n, k), 1.0 / k), r=np.full(n, 0.1), rho=np.full(n, 0.01),
                classes_=np.arange(k), counts=np.ones((n, k)), p_error=np.zeros(n))
    args.update(kw)
    return NoiseBudget(**args)


def _noisy_annotators(n=40, k=3, m=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    ann = np.where(rng.random((n, m)) < 0.8, y[:, None], rng.integers(0, k, (n, m))).astype(float)
    ann[rng.random((n, m)) < 0.3] = np.nan
    ann[np.isnan(ann).all(axis=1), 0] = 0
    pred_probs = rng.dirichlet(np.ones(k), n)
    return y, ann, pred_probs


# --------------------------------------------------------------------------- NoiseBudget


def test_noise_budget_basics():
    counts = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 3.0]])
    b = _budget(n=2, k=3, counts=counts, classes_=np.array(["a", "b", "c"]))
    assert len(b) == 2 and b.n_classes == 3
    np.testing.assert_array_equal(b.n_votes, [2, 5])
    np.testing.assert_array_equal(b.labels, [0, 2])  # tie -> lowest index
    assert b.pi.dtype == np.float64 and b.classes_.tolist() == ["a", "b", "c"]
    assert "n_samples=2" in repr(b)


@pytest.mark.parametrize("index, rows", [
    (1, [1]), (-1, [4]), (slice(1, 3), [1, 2]), ([0, 4], [0, 4]), (np.array([3]), [3]),
    (np.array([True, False, True, False, False]), [0, 2]), ([], []),
])
def test_noise_budget_getitem(index, rows):
    b = _budget(n=5, r=np.arange(5) / 10, p_error=np.arange(5) / 10)
    sub = b[index]
    assert isinstance(sub, NoiseBudget) and len(sub) == len(rows)
    np.testing.assert_allclose(sub.r, np.arange(5)[rows] / 10)
    np.testing.assert_allclose(sub.p_error, np.arange(5)[rows] / 10)
    assert sub.pi.shape == (len(rows), 2)


def test_noise_budget_getitem_bad_mask():
    with pytest.raises(NoiseBudgetError, match="boolean mask has shape"):
        _budget(n=3)[np.array([True, False])]
    with pytest.raises(NoiseBudgetError, match="index must be integers"):
        _budget(n=3)[np.array([0.5])]


def test_noise_budget_scaled():
    b = _budget(n=3, r=np.array([0.0, 0.5, 1.5]), rho=np.array([0.0, 0.1, 1.0]))
    s = b.scaled(2.0)
    np.testing.assert_allclose(s.r, [0.0, 1.0, 2.0])  # clipped to 2
    np.testing.assert_allclose(s.rho, [0.0, 0.2, 2.0])
    np.testing.assert_allclose(b.r, [0.0, 0.5, 1.5])  # original untouched
    np.testing.assert_allclose(b.scaled(0).r, 0)
    with pytest.raises(NoiseBudgetError, match="scale must be finite and >= 0"):
        b.scaled(-1.0)


@pytest.mark.parametrize("kw, match", [
    (dict(pi=np.array([[0.5, 0.6]] * 3)), "simplex"),
    (dict(pi=np.array([[1.5, -0.5]] * 3)), "simplex"),
    (dict(pi=np.ones(3)), "pi must be 2-D"),
    (dict(r=np.array([0.1, 2.5, 0.0])), r"r \(l1 radius\) must lie in \[0, 2\]"),
    (dict(r=np.array([0.1, -0.1, 0.0])), r"must lie in \[0, 2\]"),
    (dict(rho=np.array([0.1, -0.1, 0.0])), r"rho \(KL radius\) must be >= 0"),
    (dict(rho=np.array([0.1, np.nan, 0.0])), "rho contains NaN or infinite"),
    (dict(r=np.array([0.1, np.nan, 0.0])), "r contains NaN or infinite"),
    (dict(r=np.zeros(2)), r"r must have shape \(3,\)"),
    (dict(counts=np.ones((3, 3))), "counts must have shape"),
    (dict(counts=-np.ones((3, 2))), "counts must be non-negative"),
    (dict(classes_=np.arange(3)), "classes_ must have shape"),
    (dict(p_error=np.array([0.0, 1.2, 0.0])), r"p_error must lie in \[0, 1\]"),
    (dict(p_error=np.array(["a", "b", "c"])), "p_error must be numeric"),
])
def test_noise_budget_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        _budget(**kw)


def test_noise_budget_error_is_package_error():
    assert issubclass(NoiseBudgetError, CNATError) and issubclass(NoiseBudgetError, ValueError)


# --------------------------------------------------------------------------- evidence formats


def test_counts_onehot_and_votes():
    t = NoiseBudgetTransformer()
    b = t.fit_transform(VOTES)
    assert t.evidence_ == "counts" and t.classes_.tolist() == [0, 1, 2] and t.n_classes_ == 3
    np.testing.assert_array_equal(b.pi, np.eye(3)[[0, 0, 0, 2]])  # ties -> lowest index
    np.testing.assert_allclose(b.p_error, [0, 1 / 3, 2 / 3, 1 / 3])
    np.testing.assert_allclose(b.r, 0.1)
    np.testing.assert_allclose(b.rho, 0.005)  # r^2 / 2
    np.testing.assert_array_equal(b.counts, VOTES)
    b = NoiseBudgetTransformer(pi="votes").fit_transform(VOTES)
    np.testing.assert_allclose(b.pi, VOTES / 3)


def test_counts_integral_floats_and_classes_names():
    b = NoiseBudgetTransformer(classes=["cat", "dog", "eel"]).fit_transform(VOTES.astype(float))
    assert b.classes_.tolist() == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(b.labels, [0, 0, 0, 2])


@pytest.mark.parametrize("missing", [np.nan, -1])
def test_annotators(missing):
    ann = np.array([[0, 0, missing], [1, 2, 2], [missing, missing, 1], [0, 1, 2]], dtype=float)
    t = NoiseBudgetTransformer(pi="votes", evidence="annotators")
    b = t.fit_transform(ann)
    assert t.evidence_ == "annotators"
    assert t.classes_.tolist() == [0, 1, 2] and t.classes_.dtype.kind == "i"
    np.testing.assert_array_equal(b.counts, [[2, 0, 0], [0, 1, 2], [0, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(b.pi[1], [0, 1 / 3, 2 / 3])
    np.testing.assert_allclose(b.p_error, [0, 1 / 3, 0, 2 / 3])
    np.testing.assert_array_equal(b.labels, [0, 2, 1, 0])


def test_annotators_strings_dataframe_and_explicit_kind():
    df = pd.DataFrame({"ann1": ["cat", "dog", None], "ann2": ["cat", None, "eel"]})
    b = NoiseBudgetTransformer().fit_transform(df)
    assert b.classes_.tolist() == ["cat", "dog", "eel"]
    np.testing.assert_array_equal(b.counts, [[2, 0, 0], [0, 1, 0], [0, 0, 1]])
    # a complete annotator matrix looks like counts to "auto": say what it is
    complete = np.array([[0, 1, 1], [2, 2, 2]])
    assert NoiseBudgetTransformer().fit(complete).evidence_ == "counts"
    b = NoiseBudgetTransformer(evidence="annotators").fit_transform(complete)
    np.testing.assert_array_equal(b.counts, [[1, 2, 0], [0, 0, 3]])


def test_transform_reads_fit_kind():
    ann = np.array([[0, np.nan], [1, 1], [2, 0]])
    t = NoiseBudgetTransformer(evidence="annotators").fit(ann)
    b = t.transform(np.array([[0, 1], [2, 2]]))  # no missing entry, still annotators
    np.testing.assert_array_equal(b.counts, [[1, 1, 0], [0, 0, 2]])


@pytest.mark.parametrize("labels", [np.array([2, 0, 2]), np.array([[2], [0], [2]]), [2.0, 0.0, 2.0]])
def test_labels(labels):
    t = NoiseBudgetTransformer(mapping="linear")
    b = t.fit_transform(labels)
    assert t.evidence_ == "labels" and t.classes_.tolist() == [0, 2]
    np.testing.assert_array_equal(b.pi, [[0, 1], [1, 0], [0, 1]])
    np.testing.assert_array_equal(b.counts, b.pi)
    np.testing.assert_array_equal(b.p_error, 0)  # single labels without pred_probs
    np.testing.assert_array_equal(b.r, 0)


def test_labels_full_class_list_and_strings():
    t = NoiseBudgetTransformer(classes=[0, 1, 2, 3])
    b = t.fit_transform([3, 0, 3])
    assert b.n_classes == 4
    np.testing.assert_array_equal(b.labels, [3, 0, 3])
    b = NoiseBudgetTransformer().fit_transform(np.array(["b", "a", "b"]))
    assert b.classes_.tolist() == ["a", "b"] and b.labels.tolist() == [1, 0, 1]


def test_labels_with_pred_probs_match_cleanlab():
    from cleanlab.rank import get_label_quality_scores

    y, _, pred_probs = _noisy_annotators()
    t = NoiseBudgetTransformer(mapping="linear", c=2.0, r_max=1.5)
    b = t.fit_transform(y, pred_probs=pred_probs)
    expected = 1 - get_label_quality_scores(y, pred_probs)
    np.testing.assert_allclose(b.p_error, expected)
    np.testing.assert_allclose(b.r, np.minimum(2 * expected, 1.5))
    np.testing.assert_allclose(t.transform(y[:5], pred_probs=pred_probs[:5]).r, b.r[:5])
    # pred_probs fixes the classes to its K columns even when a class is unseen
    b = NoiseBudgetTransformer().fit_transform(np.zeros(3, dtype=int), pred_probs=np.full((3, 2), 0.5))
    assert b.classes_.tolist() == [0, 1]


def test_cleanlab_multiannotator_paths():
    from cleanlab.multiannotator import get_label_quality_multiannotator

    _, ann, pred_probs = _noisy_annotators()
    out = get_label_quality_multiannotator(ann, pred_probs, verbose=False)
    table = out["label_quality"]
    p_error = 1 - table["consensus_quality_score"].to_numpy()
    consensus = table["consensus_label"].to_numpy()
    for evidence in (out, table):
        t = NoiseBudgetTransformer()
        b = t.fit_transform(evidence)
        assert t.evidence_ == "multiannotator"
        np.testing.assert_allclose(b.p_error, p_error)
        np.testing.assert_array_equal(b.pi, np.eye(3)[consensus])
        np.testing.assert_array_equal(b.counts, np.eye(3)[consensus])  # one vote at the consensus
    b = NoiseBudgetTransformer(pi="votes").fit_transform({**out, "labels_multiannotator": ann})
    votes = np.stack([(ann == k).sum(axis=1) for k in range(3)], axis=1)
    np.testing.assert_array_equal(b.counts, votes)
    np.testing.assert_allclose(b.pi, votes / votes.sum(axis=1, keepdims=True))
    # an annotator matrix with pred_probs runs the same CROWDLAB scoring internally
    b2 = NoiseBudgetTransformer(evidence="annotators").fit_transform(ann, pred_probs=pred_probs)
    np.testing.assert_allclose(b2.p_error, p_error)
    np.testing.assert_array_equal(b2.pi, np.eye(3)[consensus])
    np.testing.assert_array_equal(b2.counts, votes)


def test_annotators_single_label_each_with_pred_probs_falls_back_to_rank():
    from cleanlab.rank import get_label_quality_scores

    y, _, pred_probs = _noisy_annotators(n=10)
    ann = np.full((10, 2), np.nan)
    ann[::2, 0] = y[::2]
    ann[1::2, 1] = y[1::2]
    b = NoiseBudgetTransformer(evidence="annotators").fit_transform(ann, pred_probs=pred_probs)
    np.testing.assert_allclose(b.p_error, 1 - get_label_quality_scores(y, pred_probs))


@pytest.mark.parametrize("X, kind", [
    ([0, 1, 1], "labels"), ([[0], [1]], "labels"), ([[1, 0], [0, 2]], "counts"),
    (np.array([["a", "b"], ["b", "b"]], dtype=object), "annotators"),
    (pd.DataFrame({"consensus_label": [0, 1], "consensus_quality_score": [0.9, 0.4]}), "multiannotator"),
])
def test_auto_rule(X, kind):
    assert NoiseBudgetTransformer().fit(X).evidence_ == kind


@pytest.mark.parametrize("X", [[[1, np.nan], [0, 1]], [[1, -1], [0, 1]], [[3, 0, 0], [2, 1, 0], [np.nan, 1, 2]]])
def test_auto_refuses_counts_or_annotators(X):
    # one NaN or -1 never turns counts into an annotator matrix: "auto" asks which it is
    with pytest.raises(NoiseBudgetError, match="ambiguous.*vote counts.*annotator label matrix.*evidence='annotators'"):
        NoiseBudgetTransformer().fit(X)
    assert NoiseBudgetTransformer(evidence="annotators").fit(X).evidence_ == "annotators"


# --------------------------------------------------------------------------- nominal and mappings


def test_smoothing():
    b = NoiseBudgetTransformer(smoothing=0.3).fit_transform(VOTES)
    np.testing.assert_allclose(b.pi[0], [0.7 + 0.1, 0.1, 0.1])
    np.testing.assert_allclose(b.pi.sum(axis=1), 1)


def test_flat_and_scale():
    b = NoiseBudgetTransformer(radius=0.4, scale=3.0).fit_transform(VOTES)
    np.testing.assert_allclose(b.r, 1.2)
    np.testing.assert_allclose(b.rho, 3.0 * 0.4**2 / 2)  # as NoiseBudget.scaled
    np.testing.assert_allclose(NoiseBudgetTransformer(radius=0.4, scale=10.0).fit_transform(VOTES).r, 2.0)


def test_linear():
    b = NoiseBudgetTransformer(mapping="linear", c=1.2, r_max=0.5).fit_transform(VOTES)
    np.testing.assert_allclose(b.r, [0, 0.4, 0.5, 0.4])
    np.testing.assert_allclose(b.rho, b.r**2 / 2)


def test_piecewise_threshold_learned_in_fit():
    votes = np.zeros((10, 2), dtype=int)
    votes[:, 0] = 20
    votes[:, 1] = np.arange(10)  # p_error = i / (20 + i), increasing
    t = NoiseBudgetTransformer(mapping="piecewise", hard_fraction=0.3, radius_hard=0.8, radius_easy=0.1)
    b = t.fit_transform(votes)
    np.testing.assert_allclose(b.r, [0.1] * 7 + [0.8] * 3)
    assert t.threshold_ == pytest.approx(np.quantile(np.arange(10) / (20 + np.arange(10)), 0.7))
    # transform reuses the fitted threshold: one easy row alone stays easy
    np.testing.assert_allclose(t.transform(votes[:1]).r, [0.1])
    np.testing.assert_allclose(t.transform(votes[-1:]).r, [0.8])
    assert np.all(NoiseBudgetTransformer(mapping="piecewise", hard_fraction=0).fit_transform(votes).r == 0)
    assert np.all(NoiseBudgetTransformer(mapping="piecewise", hard_fraction=1).fit_transform(votes).r == 0.5)
    assert NoiseBudgetTransformer(mapping="flat").fit(votes).threshold_ is None


def _posterior(**kw):
    return NoiseBudgetTransformer(mapping="posterior", smoothing=0.01, n_draws=2000, **kw)


def test_posterior_tightens_with_agreeing_votes():
    votes = np.zeros((5, 10))
    votes[:, 0] = [1, 3, 10, 30, 100]
    b = _posterior().fit_transform(votes)
    assert np.all(np.diff(b.r) < 0) and np.all(np.diff(b.rho) < 0)
    assert b.r[1] < 2  # K = 10, 3 votes: non-vacuous, unlike the Weissman bound
    assert _weissman_l1_radius(3, 10, 0.05) > 2


def test_weissman_radius_numbers():
    # eps = sqrt(2/m * log((2^K - 2)/delta)); K=10, m=3, delta=0.05 -> 2.572 (vacuous)
    assert _weissman_l1_radius(3, 10, 0.05) == pytest.approx(2.5723, abs=1e-4)
    assert _weissman_l1_radius(5, 10, 0.05) < 2 < _weissman_l1_radius(4, 10, 0.05)
    assert _weissman_l1_radius(0, 10, 0.05) == np.inf


def test_posterior_matches_precise_quantile():
    """The MC radius is the posterior quantile, up to the (conservative) MC error."""
    counts = np.array([2.0, 1.0, 0.0])
    rng = np.random.default_rng(123)
    draws = rng.dirichlet(1.0 + counts, size=400_000)
    t = NoiseBudgetTransformer(mapping="posterior", pi="votes", smoothing=0.3, n_draws=4000, delta=0.1)
    b = t.fit_transform(counts[None, :])
    np.testing.assert_allclose(b.pi[0], (0.7 * counts / 3 + 0.1))
    pi = b.pi[0]
    l1 = np.abs(draws - pi).sum(axis=1)
    kl = (draws * np.log(draws / pi)).sum(axis=1)
    lo, hi = np.quantile(l1, [0.95, 0.99])
    assert lo - 0.01 <= b.r[0] <= hi  # level 1 - delta/2 = 0.95, inflated by 2 MC s.e.
    lo, hi = np.quantile(kl, [0.95, 0.99])
    assert lo * 0.97 <= b.rho[0] <= hi
    assert np.mean((l1 <= b.r[0]) & (kl <= b.rho[0])) >= 0.9 - 0.01  # joint coverage >= 1 - delta
    assert _mc_level(0.95, 4000) == pytest.approx(0.95 + 2 * np.sqrt(0.95 * 0.05 / 4000))


def test_posterior_deterministic_and_subset_invariant():
    _, ann, _ = _noisy_annotators(n=60, k=4, m=5)
    t = _posterior(pi="votes", random_state=7, evidence="annotators")
    b = t.fit_transform(ann)
    np.testing.assert_array_equal(t.transform(ann[10:20]).r, b.r[10:20])
    np.testing.assert_array_equal(clone(t).fit_transform(ann).rho, b.rho)
    assert not np.array_equal(_posterior(pi="votes", random_state=8, evidence="annotators").fit_transform(ann).r,
                              b.r)
    same = np.all(b.counts[:, None, :] == b.counts[None, :, :], axis=2)  # identical count rows
    assert np.all((b.r[:, None] == b.r[None, :])[same])
    assert _posterior(random_state=None, evidence="annotators").fit(ann).seed_ >= 0


def test_posterior_prior_concentration():
    votes = np.zeros((1, 10))
    votes[0, 0] = 3
    r_strong = _posterior(prior=1.0).fit_transform(votes).r[0]
    r_weak = _posterior(prior=0.1).fit_transform(votes).r[0]
    assert r_weak < r_strong < 2


def test_posterior_without_full_support_has_l1_radii_and_no_kl_radius():
    budget = NoiseBudgetTransformer(mapping="posterior", random_state=0).fit_transform(VOTES)
    no_support = np.any(budget.pi <= 0, axis=1)
    assert no_support.any() and np.all(np.isinf(budget.rho[no_support]))
    assert np.all(np.isfinite(budget.r)) and np.all(budget.r > 0)
    smoothed = NoiseBudgetTransformer(mapping="posterior", smoothing=0.01, random_state=0).fit_transform(VOTES)
    assert np.all(np.isfinite(smoothed.rho))
    from sklearn_cnat import CNATClassifier

    X = np.random.default_rng(0).normal(size=(len(VOTES), 2))
    with pytest.raises(CNATValueError, match="smoothing"):
        CNATClassifier(geometry="kl", budget=NoiseBudgetTransformer(mapping="posterior")).fit(X, VOTES)
    CNATClassifier(budget=NoiseBudgetTransformer(mapping="posterior")).fit(X, VOTES).certify(X, tier="bounded")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("X, evidence, match", [
    ([[1, np.nan], [0, 1]], "counts", "NaN or infinite"),
    ([[1, np.inf], [0, 1]], "auto", "NaN or infinite"),
    ([[1, -2], [0, 1]], "auto", "must be non-negative"),
    ([[1.5, 0], [0, 1]], "auto", "must be integers"),
    ([[1, 0], [0, 0]], "auto", "zero votes"),
    ([[np.nan, np.nan], [0, 1]], "annotators", "zero votes"),
    ([[np.inf, 0], [0, 1]], "annotators", "infinite"),
    ([0.0, np.nan, 1.0], "auto", "labels contain NaN"),
    (np.array([["a", None], ["b", "a"]], dtype=object), "labels", "must be 1-D"),
    (np.zeros((2, 2, 2)), "auto", "must be 1-D or 2-D"),
    ([0, 1], "counts", "must be 2-D"),
    ([0, 1], "annotators", "must be 2-D"),
    ({"foo": 1}, "auto", "'label_quality'"),
    (pd.DataFrame({"consensus_label": [0, 1]}), "multiannotator", "consensus_quality_score"),
    (pd.DataFrame({"consensus_label": [0, 1], "consensus_quality_score": [0.5, 1.5]}), "auto",
     r"in \[0, 1\]"),
    ([["a", "b"], ["b", "a"]], "counts", "must be numeric"),
])
def test_bad_evidence(X, evidence, match):
    with pytest.raises(NoiseBudgetError, match=match):
        NoiseBudgetTransformer(evidence=evidence).fit(X)


def test_labels_outside_classes():
    t = NoiseBudgetTransformer().fit([0, 1, 1])
    with pytest.raises(NoiseBudgetError, match=r"labels outside the classes \[0, 1\]: 5"):
        t.transform([0, 5])
    with pytest.raises(NoiseBudgetError, match="labels outside the classes"):
        NoiseBudgetTransformer(classes=[0, 1]).fit([0, 2])
    with pytest.raises(NoiseBudgetError, match="annotator labels contain labels outside"):
        NoiseBudgetTransformer(classes=[0, 1], evidence="annotators").fit([[0, np.nan], [2, 1]])


def test_class_count_mismatch():
    t = NoiseBudgetTransformer().fit(VOTES)
    with pytest.raises(NoiseBudgetError, match="3 columns but the transformer was fitted with 2"):
        NoiseBudgetTransformer().fit([[1, 0], [0, 1]]).transform(VOTES)
    with pytest.raises(NoiseBudgetError, match=r"pred_probs must have shape \(n_samples, 3\)"):
        NoiseBudgetTransformer().fit([0, 1, 2]).transform([0, 1], pred_probs=np.full((2, 2), 0.5))
    with pytest.raises(NoiseBudgetError, match="classes has 2 entries"):
        NoiseBudgetTransformer(classes=["a", "b"]).fit(VOTES)
    with pytest.raises(NoiseBudgetError, match="duplicates"):
        NoiseBudgetTransformer(classes=[0, 0, 1]).fit(VOTES)
    assert t.transform(VOTES[:2]).n_classes == 3


@pytest.mark.parametrize("pred_probs, match", [
    (np.full((3, 2), 0.4), "sum to 1"),
    (np.array([[1.5, -0.5]] * 3), "non-negative"),
    (np.full((3, 3), 1 / 3), r"shape \(n_samples, 2\)"),
    (np.full(3, 0.5), r"shape \(n_samples, 2\)"),
    (np.full((4, 2), 0.5), "has 4 rows but the label evidence has 3"),
    (np.array([[np.nan, 1.0]] * 3), "NaN or infinite"),
])
def test_bad_pred_probs(pred_probs, match):
    t = NoiseBudgetTransformer(classes=[0, 1])
    with pytest.raises(NoiseBudgetError, match=match):
        t.fit([0, 1, 1], pred_probs=pred_probs)


def test_pred_probs_refused_where_unused():
    with pytest.raises(NoiseBudgetError, match="pred_probs cannot be combined with vote counts"):
        NoiseBudgetTransformer().fit(VOTES, pred_probs=np.full((4, 3), 1 / 3))
    table = pd.DataFrame({"consensus_label": [0, 1], "consensus_quality_score": [0.9, 0.4]})
    with pytest.raises(NoiseBudgetError, match="already scored"):
        NoiseBudgetTransformer().fit(table, pred_probs=np.full((2, 2), 0.5))


@pytest.mark.parametrize("params, match", [
    (dict(mapping="gaussian"), "'mapping' parameter"),
    (dict(evidence="votes"), "'evidence' parameter"),
    (dict(pi="uniform"), "'pi' parameter"),
    (dict(radius=2.5), "'radius' parameter"),
    (dict(radius=-0.1), "'radius' parameter"),
    (dict(r_max=3.0), "'r_max' parameter"),
    (dict(radius_hard=2.1), "'radius_hard' parameter"),
    (dict(delta=0.0), "'delta' parameter"),
    (dict(delta=1.0), "'delta' parameter"),
    (dict(smoothing=1.0), "'smoothing' parameter"),
    (dict(scale=-1.0), "'scale' parameter"),
    (dict(prior=0.0), "'prior' parameter"),
    (dict(hard_fraction=1.5), "'hard_fraction' parameter"),
    (dict(n_draws=10), "'n_draws' parameter"),
    (dict(c=-1.0), "'c' parameter"),
])
def test_bad_params(params, match):
    t = NoiseBudgetTransformer(**params)  # __init__ validates nothing
    with pytest.raises(ValueError, match=match):
        t.fit(VOTES)


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        NoiseBudgetTransformer().transform(VOTES)


# --------------------------------------------------------------------------- sklearn API


def test_clone_get_set_params_round_trip():
    t = NoiseBudgetTransformer(mapping="piecewise", hard_fraction=0.1, classes=[0, 1, 2], scale=2.0)
    params = t.get_params()
    assert params["mapping"] == "piecewise" and params["scale"] == 2.0
    c = clone(t)
    assert c.get_params()["hard_fraction"] == 0.1 and c is not t
    c.set_params(mapping="linear", c=0.5)
    assert c.mapping == "linear" and t.mapping == "piecewise"
    assert NoiseBudgetTransformer(**params).get_params() == params
    fitted = clone(t).fit(VOTES)
    assert hasattr(fitted, "threshold_") and not hasattr(clone(fitted), "classes_")


@pytest.mark.parametrize("check", [
    estimator_checks.check_no_attributes_set_in_init,
    estimator_checks.check_parameters_default_constructible,
    estimator_checks.check_get_params_invariance,
    estimator_checks.check_set_params,
    estimator_checks.check_estimator_cloneable,
    estimator_checks.check_estimator_repr,
    estimator_checks.check_do_not_raise_errors_in_init_or_set_params,
])
def test_applicable_sklearn_checks(check):
    check("NoiseBudgetTransformer", NoiseBudgetTransformer())


def test_grid_search_scale_param():
    from sklearn.pipeline import Pipeline

    pipe = Pipeline([("budget", NoiseBudgetTransformer())])
    pipe.set_params(budget__scale=0.5, budget__mapping="linear")
    np.testing.assert_allclose(pipe.fit_transform(VOTES).r, 0.5 * np.array([0, 1, 2, 1]) / 3)


# --------------------------------------------------------------------------- properties

_counts = st.integers(1, 6).flatmap(lambda k: arrays(np.int64, st.tuples(st.integers(1, 8), st.just(k)),
                                                       elements=st.integers(0, 5)))


@settings(max_examples=40, deadline=None)
@given(counts=_counts, mapping=st.sampled_from(["flat", "linear", "piecewise", "posterior"]),
       pi=st.sampled_from(["onehot", "votes"]), smoothing=st.sampled_from([0.0, 0.05, 0.5]),
       scale=st.floats(0, 30), s1=st.floats(0, 5), s2=st.floats(0, 5))
def test_budget_properties(counts, mapping, pi, smoothing, scale, s1, s2):
    counts[counts.sum(axis=1) == 0, 0] = 1
    if mapping == "posterior" and smoothing == 0:
        smoothing = 0.05
    t = NoiseBudgetTransformer(mapping=mapping, pi=pi, smoothing=smoothing, scale=scale,
                               radius=0.3, c=1.5, radius_hard=1.0, n_draws=200)
    b = t.fit_transform(counts)
    assert np.all((b.r >= 0) & (b.r <= 2)) and np.all(b.rho >= 0) and np.all(np.isfinite(b.rho))
    assert np.all(b.pi >= 0) and np.allclose(b.pi.sum(axis=1), 1)
    assert np.all((b.p_error >= 0) & (b.p_error <= 1))
    lo, hi = sorted((s1, s2))
    a, z = b.scaled(lo), b.scaled(hi)
    assert np.all(a.r <= z.r) and np.all(a.rho <= z.rho)
