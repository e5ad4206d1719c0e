"""Label evidence as users have it: one reader, names as keys, aggregators, pipelines, scikit-learn's tools."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.aggregation import DawidSkene
from sklearn_cnat.datasets import load_image_folder
from sklearn_cnat.evidence import LabelEvidence, read_evidence
from sklearn_cnat.exceptions import CertificationError, NoiseBudgetError

VOTES = np.array([[3, 0, 0], [2, 1, 0], [1, 1, 1], [0, 1, 2]])


def _crowd(n=60, k=3, n_workers=6, seed=0, reliability=(0.95, 0.9, 0.9, 0.4, 0.35, 0.35)):
    """Votes of annotators of known reliability: (truth, annotator matrix with NaN)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    ann = np.full((n, n_workers), np.nan)
    for i in range(n):
        for w in rng.choice(n_workers, size=3, replace=False):
            ann[i, w] = y[i] if rng.random() < reliability[w] else rng.integers(0, k)
    return y, ann


# --------------------------------------------------------------------------- one reader, one record


def test_every_format_gives_the_same_record(tmp_path):
    names = ["a.png", "b.png", "c.png", "d.png"]
    classes = np.array(["cat", "dog", "eel"])
    long = pd.DataFrame([(names[i], f"w{j}", classes[k]) for i, row in enumerate(VOTES)
                         for j, k in enumerate(np.repeat(np.arange(3), row))], columns=["image", "worker", "label"])
    shuffled = long.sample(frac=1.0, random_state=0)
    shuffled.to_csv(tmp_path / "long.csv", index=False)
    counts = pd.DataFrame(VOTES, columns=classes).assign(image=names)[["image", "eel", "cat", "dog"]]
    counts.to_csv(tmp_path / "counts.csv", index=False)
    wide = long.pivot(index="image", columns="worker", values="label").reset_index()
    wide.to_csv(tmp_path / "annotators.csv", index=False)
    for source in (shuffled, tmp_path / "long.csv", str(tmp_path / "counts.csv"), tmp_path / "annotators.csv"):
        ev = read_evidence(source, classes=classes).align(names)
        np.testing.assert_array_equal(ev.counts, VOTES)
        assert ev.classes.tolist() == classes.tolist() and ev.items.tolist() == names
    ev = read_evidence(tmp_path / "long.csv")
    assert ev.kind == "long" and ev.annotators.tolist() == ["w0", "w1", "w2"] and len(ev.votes) == VOTES.sum()
    np.testing.assert_array_equal(read_evidence(ev.to_frame()).align(ev.items).counts, ev.counts)


def test_integer_labels_and_headerless_counts(tmp_path):
    (tmp_path / "c.csv").write_text("3,0,0\n2,1,0\n")
    ev = read_evidence(tmp_path / "c.csv")
    assert ev.kind == "counts" and ev.items is None and ev.classes.tolist() == [0, 1, 2]
    (tmp_path / "l.csv").write_text("item,annotator,label\nx,1,2\nx,2,2\ny,1,0\n")
    ev = read_evidence(tmp_path / "l.csv")
    assert ev.classes.tolist() == [0, 2] and ev.classes.dtype.kind == "i"
    assert ev.to_classes([0, 1, 2]).counts.tolist() == [[0, 0, 2], [1, 0, 0]]


def test_align_by_path_file_name_or_stem():
    ev = read_evidence(pd.DataFrame({"image": ["b", "a"], "annotator": [1, 1], "label": ["x", "y"]}))
    assert ev.align(["dog/a.png", "cat/b.png"]).counts.tolist() == [[0, 1], [1, 0]]
    ev = read_evidence(pd.DataFrame({"file": ["./cat/b.png", "dog/a.png"], "annotator": [1, 1], "label": [0, 1]}))
    assert ev.align(["dog/a.png", "cat/b.png"]).counts.tolist() == [[0, 1], [1, 0]]


@pytest.mark.parametrize("odd", [np.nan, -1.0])
def test_one_odd_value_never_changes_the_reading(odd):
    rng = np.random.default_rng(0)
    votes = rng.integers(0, 4, (30, 3))
    votes[:, 0] += 1
    assert NoiseBudgetTransformer().fit(votes).evidence_ == "counts"
    for i, j in [(0, 0), (7, 2), (29, 1)]:
        broken = votes.astype(float)
        broken[i, j] = odd
        with pytest.raises(NoiseBudgetError, match=rf"ambiguous.*first at row {i}, column {j}"):
            NoiseBudgetTransformer().fit(broken)


def test_transformer_takes_a_record_and_a_positional_long_frame():
    ev = read_evidence(VOTES)
    b = NoiseBudgetTransformer(pi="votes").fit_transform(ev)
    np.testing.assert_array_equal(b.counts, VOTES)
    long = pd.DataFrame({"task": [1, 0, 0, 1], "worker": ["a", "a", "b", "b"], "label": ["y", "x", "x", "x"]})
    t = NoiseBudgetTransformer(classes=["x", "y"])
    b = t.fit_transform(long)
    assert t.evidence_ == "long" and b.rowwise
    np.testing.assert_array_equal(b.counts, [[2, 0], [1, 1]])


def test_load_image_folder_flat_and_classes(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt", ".hidden.png"):
        path = tmp_path / "flat" / name
        path.parent.mkdir(exist_ok=True)
        if name.endswith("txt"):
            path.write_text("x")
        else:
            Image.fromarray(np.full((3, 5, 3), 7, dtype=np.uint8)).save(path)
    data = load_image_folder(tmp_path / "flat")
    assert data.layout == "flat" and data.names.tolist() == ["a.jpg", "b.png"] and data.target is None
    assert data.images.shape == (2, 3, 5, 3) and data.images.dtype == np.uint8
    assert load_image_folder(tmp_path / "flat", image_size=4).images.shape == (2, 4, 4, 3)


# --------------------------------------------------------------------------- aggregators


def test_dawid_skene_finds_the_reliable_annotators():
    y, ann = _crowd(n=200)
    ev = read_evidence(ann, evidence="annotators")
    ds = DawidSkene().fit(ev.to_frame())
    assert ds.n_iter_ < 100 and ds.probas_.shape == (200, 3)
    good = np.mean(ds.labels_.reindex(range(200)).to_numpy() == y)
    assert good > np.mean(ev.plurality == y)
    diag = ds.errors_[:, [0, 1, 2], [0, 1, 2]].mean(axis=1)  # P(says c | true c) per worker
    assert diag[:3].min() > diag[3:].max()
    np.testing.assert_allclose(ds.probas_.sum(axis=1), 1.0)
    np.testing.assert_array_equal(DawidSkene().fit_predict_proba(ev.to_frame()), ds.probas_)  # deterministic


def test_dawid_skene_matches_crowd_kit():
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    _, ann = _crowd(n=150, seed=3)
    frame = read_evidence(ann, evidence="annotators").to_frame()
    theirs = crowdkit.DawidSkene(n_iter=100).fit_predict_proba(frame)
    ours = DawidSkene(n_iter=100).fit_predict_proba(frame).reindex(theirs.index)[theirs.columns]
    np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), atol=1e-9)


def test_crowd_kit_aggregator_in_the_transformer():
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    _, ann = _crowd()
    b = NoiseBudgetTransformer(evidence="annotators", aggregator=crowdkit.DawidSkene(n_iter=100),
                               pi="votes").fit_transform(ann)
    assert b.aggregator == "DawidSkene"


def test_aggregator_sets_pi_and_tiers_follow():
    y, ann = _crowd(n=120)
    X = np.eye(3)[y] + np.random.default_rng(1).normal(0, 0.6, (120, 3))
    t = NoiseBudgetTransformer(evidence="annotators", aggregator=DawidSkene(), pi="votes", classes=[0, 1, 2])
    b = t.fit_transform(ann)
    ref = DawidSkene().fit(read_evidence(ann, evidence="annotators").to_frame()).probas_
    np.testing.assert_allclose(b.pi, ref.reindex(range(120)).to_numpy())
    np.testing.assert_allclose(b.p_error, 1 - b.pi.max(axis=1))
    np.testing.assert_array_equal(b.counts, read_evidence(ann, evidence="annotators").counts)  # counts stay votes
    assert b.aggregator == "DawidSkene" and not b.rowwise
    assert b[:10].aggregator == "DawidSkene" and b.scaled(2.0).aggregator == "DawidSkene"
    clf = CNATClassifier(head="ridge", alpha=1.0, budget=t).fit(X, ann)
    assert clf.certify(X[:20], tier="bounded").tier == "bounded"
    assert clf.certify(X[:20], tier="flip", m=1).tier == "flip"
    with pytest.raises(CertificationError, match="set by the aggregator DawidSkene"):
        clf.certify(X[:20], tier="stochastic")
    # the same votes without the aggregator: the stochastic tier is available
    plain = CNATClassifier(head="ridge", alpha=1.0, budget=NoiseBudgetTransformer(
        evidence="annotators", pi="votes", classes=[0, 1, 2])).fit(X, ann)
    assert plain.certify(X[:20], tier="stochastic").tier == "stochastic"


def test_aggregator_is_a_parameter():
    from sklearn.base import clone

    t = NoiseBudgetTransformer(aggregator=DawidSkene(n_iter=5))
    assert clone(t).get_params()["aggregator__n_iter"] == 5
    with pytest.raises(ValueError, match="aggregator"):
        NoiseBudgetTransformer(aggregator="dawid-skene").fit(VOTES)


# --------------------------------------------------------------------------- pipelines and scikit-learn's tools


def _digits(n=300):
    from sklearn_cnat.datasets import load_digits_votes

    X, votes = load_digits_votes(return_X_y=True)
    return X[:n], votes[:n]


def test_pipeline_certify_is_the_final_step_on_transformed_inputs():
    from sklearn.preprocessing import StandardScaler

    from sklearn_cnat.pipeline import Pipeline, make_pipeline

    X, votes = _digits()
    pipe = make_pipeline(StandardScaler(), CNATClassifier(head="ridge", alpha=10.0)).fit(X[:200], votes[:200])
    assert isinstance(pipe, Pipeline)
    for tier, kw in (("bounded", {}), ("flip", {"m": 2}), ("stochastic", {"delta": 0.1})):
        ours = pipe.certify(X[200:], tier=tier, **kw)
        direct = pipe[-1].certify(pipe[:-1].transform(X[200:]), tier=tier, **kw)
        np.testing.assert_array_equal(ours.certified, direct.certified)
        assert ours.scope == direct.scope == "model"
    np.testing.assert_array_equal(pipe.predict(X[200:]), pipe[-1].predict(pipe[:-1].transform(X[200:])))


def test_sklearn_own_cross_val_score_and_grid_search_with_vote_matrices():
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    from sklearn_cnat.metrics import (
        certified_accuracy_scorer,
        cnr_coverage_scorer,
        neg_brier_votes_scorer,
        neg_ece_scorer,
        neg_log_loss_votes_scorer,
        plurality_accuracy_scorer,
    )
    from sklearn_cnat.model_selection import PluralityStratifiedKFold

    X, votes = _digits(240)
    clf = CNATClassifier(head="ridge", alpha=10.0)
    for scorer in (plurality_accuracy_scorer, neg_log_loss_votes_scorer, neg_brier_votes_scorer, neg_ece_scorer,
                   cnr_coverage_scorer, certified_accuracy_scorer):
        scores = cross_val_score(clf, X, votes, scoring=scorer, cv=PluralityStratifiedKFold(3), error_score="raise")
        assert scores.shape == (3,) and np.all(np.isfinite(scores))
    assert np.all(cross_val_score(clf, X, votes, scoring=plurality_accuracy_scorer, cv=KFold(3)) > 0.7)
    search = GridSearchCV(clf, {"alpha": [1.0, 10.0]}, cv=PluralityStratifiedKFold(3), error_score="raise",
                          scoring={"acc": plurality_accuracy_scorer, "cov": cnr_coverage_scorer}, refit="acc")
    search.fit(X, votes)
    assert np.all(np.isfinite(search.cv_results_["mean_test_cov"])) and search.best_params_["alpha"] in (1.0, 10.0)


def test_certificate_repr_is_short():
    X, votes = _digits(200)
    clf = CNATClassifier(head="ridge", alpha=10.0).fit(X[:150], votes[:150])
    cert = clf.certify(X[150:], tier="flip", m=1)
    text = repr(cert)
    assert text.startswith("Certificate(tier='flip', m=1, engine=") and "n_points=50" in text
    assert f"coverage={cert.coverage:.3f}" in text and "scope='model'" in text and ".to_frame()" in text
    assert "training rows" in text and len(text) < 300 and "[" not in text
    assert "delta=0.05" in repr(clf.certify(X[150:], tier="stochastic"))


def test_label_evidence_validates_and_subsets():
    ev = LabelEvidence(counts=VOTES, classes=[0, 1, 2], items=list("abcd"))
    assert ev.take([2, 0]).items.tolist() == ["c", "a"] and len(ev) == 4
    with pytest.raises(NoiseBudgetError, match="classes must have shape"):
        LabelEvidence(counts=VOTES, classes=[0, 1])
