"""Baselines: losses against hand-computed values, classifiers on digits, the patch features."""

import math

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_cnat.baselines import BaselineClassifier, CleanlabFilterClassifier, ELRLoss, GCELoss
from sklearn_cnat.features import KMeansPatchFeatures

# --------------------------------------------------------------------------- losses


def test_gce_hand_computed():
    # p = softmax([log 3, 0]) = [3/4, 1/4]; q = 0.5: (1 - sqrt(3/4)) / 0.5 and (1 - sqrt(1/4)) / 0.5
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    loss = GCELoss(q=0.5, reduction="none")(logits, torch.tensor([0, 1]))
    expected = [(1 - math.sqrt(0.75)) / 0.5, (1 - math.sqrt(0.25)) / 0.5]
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-6)
    mean = GCELoss(q=0.5)(logits, torch.tensor([0, 1]))
    assert float(mean) == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_gce_soft_targets_and_limits():
    logits = torch.tensor([[1.0, -0.5, 0.2]])
    p = torch.softmax(logits, -1)[0]
    soft = torch.tensor([[0.5, 0.25, 0.25]])
    expected = sum(float(t) * (1 - float(pk) ** 0.7) / 0.7 for t, pk in zip(soft[0], p))
    assert float(GCELoss(q=0.7)(logits, soft)) == pytest.approx(expected, rel=1e-6)
    # q = 1 is the mean absolute error on the true class, 1 - p_y
    assert float(GCELoss(q=1.0)(logits, torch.tensor([2]))) == pytest.approx(1 - float(p[2]), rel=1e-6)
    # q -> 0 tends to cross-entropy
    ce = float(torch.nn.functional.cross_entropy(logits, torch.tensor([1])))
    assert float(GCELoss(q=1e-4)(logits, torch.tensor([1]))) == pytest.approx(ce, rel=1e-3)


def test_gce_rejects_bad_q():
    with pytest.raises(ValueError, match="q must be in"):
        GCELoss(q=0.0)


def test_elr_hand_computed_two_steps():
    crit = ELRLoss(n_samples=2, n_classes=2, lam=3.0, beta=0.7)
    logits = torch.zeros(1, 2)  # p = [1/2, 1/2]
    # step 1: t = 0.3 * [1/2, 1/2]; <t, p> = 0.15; CE = log 2
    loss1 = crit(logits, torch.tensor([0]), index=torch.tensor([1]))
    assert float(loss1) == pytest.approx(math.log(2) + 3 * math.log(1 - 0.15), rel=1e-6)
    np.testing.assert_allclose(crit.target_memory.numpy(), [[0, 0], [0.15, 0.15]], rtol=1e-6)
    # step 2 on the same example: t = 0.7 * 0.15 + 0.3 * 0.5 = 0.255 per class; <t, p> = 0.255
    loss2 = crit(logits, torch.tensor([0]), index=torch.tensor([1]))
    assert float(loss2) == pytest.approx(math.log(2) + 3 * math.log(1 - 0.255), rel=1e-6)
    # eval mode leaves the memory alone
    crit.eval()
    crit(logits, torch.tensor([0]), index=torch.tensor([1]))
    np.testing.assert_allclose(crit.target_memory[1].numpy(), [0.255, 0.255], rtol=1e-6)


def test_elr_gradient_pushes_towards_memory():
    crit = ELRLoss(n_samples=1, n_classes=2, lam=3.0, beta=0.0)
    crit.eval()
    crit.target_memory[0] = torch.tensor([0.9, 0.1])
    logits = torch.zeros(1, 2, requires_grad=True)
    crit(logits, torch.tensor([1]), index=torch.tensor([0])).backward()
    # the regulariser raises class 0 (the memory) against the noisy label 1. At p = (1/2, 1/2):
    # d CE(label 1) / dz0 = p0 = 1/2; d<t, p>/dz0 = t0 p0 (1 - p0) - t1 p0 p1 = 0.9/4 - 0.1/4 = 0.2,
    # so d 3 log(1 - <t, p>) / dz0 = -3 * 0.2 / (1 - 0.5) = -1.2
    assert float(logits.grad[0, 0]) == pytest.approx(0.5 - 1.2, rel=1e-5)
    assert float(logits.grad[0, 1]) == pytest.approx(-0.5 + 1.2, rel=1e-5)


def test_elr_needs_index():
    with pytest.raises(ValueError, match="index"):
        ELRLoss(n_samples=3, n_classes=2)(torch.zeros(1, 2), torch.tensor([0]))


@pytest.mark.parametrize("kwargs, match", [({"n_samples": 0, "n_classes": 2}, "n_samples"),
                                           ({"n_samples": 2, "n_classes": 1}, "n_classes"),
                                           ({"n_samples": 2, "n_classes": 2, "beta": 1.0}, "beta"),
                                           ({"n_samples": 2, "n_classes": 2, "lam": -1.0}, "lam")])
def test_elr_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ELRLoss(**kwargs)


def test_label_smoothing_targets():
    clf = BaselineClassifier(loss="label_smoothing", smoothing=0.3)
    t = clf._targets(np.array([2, 0]), 3).numpy()
    np.testing.assert_allclose(t[:, :3], [[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]], rtol=1e-6)
    np.testing.assert_array_equal(t[:, 3], [0, 1])  # training-set indices for ELR


# --------------------------------------------------------------------------- classifiers


@pytest.fixture(scope="module")
def noisy_digits():
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
    rng = np.random.RandomState(0)
    noisy = y_tr.copy()
    flip = rng.rand(len(noisy)) < 0.2
    noisy[flip] = rng.randint(0, 10, flip.sum())
    return X_tr, noisy, X_te, y_te


@pytest.mark.parametrize("loss", ["ce", "label_smoothing", "gce", "elr"])
def test_baseline_learns_digits(noisy_digits, loss):
    X_tr, y_tr, X_te, y_te = noisy_digits
    clf = BaselineClassifier(loss=loss, max_epochs=30, lr=0.01, batch_size=64, random_state=0)
    clf.fit(X_tr, y_tr)
    assert clf.score(X_te, y_te) > 0.85
    proba = clf.predict_proba(X_te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.predict(X_te), clf.classes_[proba.argmax(axis=1)])


def test_baseline_is_seeded_and_leaves_global_rng(noisy_digits):
    X_tr, y_tr, X_te, _ = noisy_digits
    state = torch.get_rng_state()
    fitted = BaselineClassifier(loss="elr", max_epochs=2, random_state=3).fit(X_tr, y_tr)
    assert torch.equal(state, torch.get_rng_state())  # fit forks the global RNG
    a = fitted.predict_proba(X_te)
    b = BaselineClassifier(loss="elr", max_epochs=2, random_state=3).fit(X_tr, y_tr).predict_proba(X_te)
    np.testing.assert_allclose(a, b)


def test_baseline_on_images_with_a_cnn():
    from sklearn_cnat.models import SmallCNN

    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    y = rng.randint(0, 3, 40)
    clf = BaselineClassifier(SmallCNN, loss="gce", module_kwargs={"width": 4}, max_epochs=1, random_state=0)
    assert clf.fit(X, y).predict_proba(X).shape == (40, 3)


def test_baseline_string_labels():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(50, 3)).astype(np.float32)
    y = np.where(X[:, 0] > 0, "cat", "dog")
    clf = BaselineClassifier(max_epochs=20, lr=0.05, random_state=0).fit(X, y)
    assert set(clf.predict(X)) <= {"cat", "dog"}
    assert clf.score(X, y) > 0.8


@pytest.mark.parametrize("params, match", [({"loss": "mae"}, "loss"), ({"smoothing": 1.0}, "smoothing"),
                                           ({"q": 0.0}, "q"), ({"optimizer": "lbfgs"}, "optimizer")])
def test_baseline_rejects_bad_parameters(params, match):
    X = np.zeros((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match=match):
        BaselineClassifier(**params).fit(X, [0, 1, 0, 1])


def test_baseline_one_class_error():
    with pytest.raises(ValueError, match="at least 2 classes"):
        BaselineClassifier().fit(np.zeros((4, 2), dtype=np.float32), [1, 1, 1, 1])


def test_cleanlab_filter_finds_flipped_labels(noisy_digits):
    X_tr, y_tr, X_te, y_te = noisy_digits
    clf = CleanlabFilterClassifier(LogisticRegression(max_iter=1000), cv=3, random_state=0).fit(X_tr, y_tr)
    assert clf.pred_probs_.shape == (len(X_tr), 10)
    assert 0.05 < clf.label_issues_.mean() < 0.4
    # most flagged examples disagree with the model's out-of-sample prediction
    assert (clf.pred_probs_.argmax(1)[clf.label_issues_] != y_tr[clf.label_issues_]).mean() > 0.9
    assert clf.score(X_te, y_te) > 0.9


def test_cleanlab_filter_with_baseline_default(noisy_digits):
    X_tr, y_tr, X_te, y_te = noisy_digits
    clf = CleanlabFilterClassifier(BaselineClassifier(max_epochs=20, lr=0.01, batch_size=64), cv=3,
                                   random_state=0)
    clf.fit(X_tr, y_tr)
    assert clf.estimator_.random_state == 0
    assert clf.score(X_te, y_te) > 0.85
    assert CleanlabFilterClassifier()._base().loss == "ce"


def test_cleanlab_filter_needs_enough_per_class():
    X = np.zeros((6, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="at least cv=5"):
        CleanlabFilterClassifier().fit(X, [0, 0, 0, 1, 1, 1])


# fit takes no sample_weight, so scikit-learn skips its sample-weight checks by itself.
# fit(sample_weight=...) weights the per-example loss, mean(w_i loss_i) / mean(w): the same
# objective as repeated rows, but a float32 network trained on the weighted batch and on the
# repeated batch rounds differently, and 20 epochs amplify that to ~1e-7 relative, where the
# check asks for rtol=1e-7 (tests/test_sample_weight.py checks the weighted loss itself).
_BASELINE_EXPECTED_FAILED = {
    "check_sample_weight_equivalence_on_dense_data":
        "float32 training: weighted and repeated batches agree to about 1e-7 relative, not to the check's rtol",
}


@parametrize_with_checks(
    [BaselineClassifier(max_epochs=20, lr=0.05, batch_size=32, random_state=0),
     BaselineClassifier(loss="elr", max_epochs=20, lr=0.05, batch_size=32, random_state=0)],
    expected_failed_checks=lambda estimator: _BASELINE_EXPECTED_FAILED,
)
def test_sklearn_compatible_baseline(estimator, check):
    check(estimator)


def test_clone_roundtrip():
    clf = BaselineClassifier(loss="gce", q=0.4, optimizer_kwargs={"weight_decay": 1e-4})
    assert clone(clf).get_params() == clf.get_params()


# --------------------------------------------------------------------------- patch features


def test_kmeans_patch_features_shapes_and_layouts():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(30, 10, 10, 3), dtype=np.uint8)
    feat = KMeansPatchFeatures(n_centroids=5, patch_size=4, n_patches=400, random_state=0).fit(X)
    F_hwc = feat.transform(X)
    assert F_hwc.shape == (30, 20) and F_hwc.dtype == np.float32
    assert np.all(F_hwc >= 0)
    # the same images as NCHW floats in [0, 1] give the same features
    F_chw = feat.transform(X.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    np.testing.assert_allclose(F_hwc, F_chw, rtol=1e-4, atol=1e-3)
    assert feat.get_feature_names_out().shape == (20,)
    pooled = KMeansPatchFeatures(n_centroids=5, patch_size=4, n_patches=400, pooling="sum", random_state=0)
    np.testing.assert_allclose(pooled.fit(X).transform(X), F_hwc.reshape(30, 4, 5).sum(axis=1), rtol=1e-4)


def test_kmeans_patch_features_match_a_direct_computation():
    rng = np.random.RandomState(1)
    X = rng.rand(3, 1, 5, 5).astype(np.float32)
    feat = KMeansPatchFeatures(n_centroids=3, patch_size=3, n_patches=200, random_state=0).fit(X)
    C, m, W = feat.centroids_, feat.patch_mean_, feat.whitening_
    out = np.zeros((3, 4, 3))
    for i in range(3):
        for r in range(3):
            for c in range(3):
                x = X[i, 0, r:r + 3, c:c + 3].reshape(-1).astype(np.float64)
                x = (x - x.mean()) / np.sqrt(x.var(ddof=1) + feat.norm_epsilon)
                x = (x - m) @ W
                z = np.linalg.norm(x - C, axis=1)
                f = np.maximum(0.0, z.mean() - z)
                out[i, (r >= 2) * 2 + (c >= 2)] += f  # 3x3 positions, quadrants split after 2
    np.testing.assert_allclose(feat.transform(X), out.reshape(3, -1), rtol=1e-3, atol=1e-3)


def test_kmeans_whitening_decorrelates_patches():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(200, 8, 8, 3), dtype=np.uint8)
    feat = KMeansPatchFeatures(n_centroids=4, patch_size=3, n_patches=5000, zca_epsilon=1e-6,
                               random_state=0).fit(X)
    W = feat.whitening_.astype(np.float64)
    np.testing.assert_allclose(W, W.T, atol=1e-5)  # ZCA: symmetric


def test_kmeans_patch_features_is_label_free_and_seeded():
    rng = np.random.RandomState(0)
    X = rng.randint(0, 256, size=(20, 8, 8, 3), dtype=np.uint8)
    a = KMeansPatchFeatures(n_centroids=4, n_patches=300, random_state=0).fit(X, y=np.zeros(20))
    b = KMeansPatchFeatures(n_centroids=4, n_patches=300, random_state=0).fit(X, y=np.ones(20))
    np.testing.assert_array_equal(a.centroids_, b.centroids_)


@pytest.mark.parametrize("params, X, match", [
    ({"patch_size": 9}, np.zeros((5, 8, 8, 3), np.uint8), "larger than the images"),
    ({"n_centroids": 50, "n_patches": 10}, np.zeros((5, 8, 8, 3), np.uint8), "n_patches"),
    ({}, np.zeros((5, 8), np.uint8), "images of shape"),
])
def test_kmeans_patch_features_errors(params, X, match):
    with pytest.raises(ValueError, match=match):
        KMeansPatchFeatures(**params).fit(X)


def test_kmeans_patch_features_rejects_other_shapes():
    X = np.random.RandomState(0).randint(0, 256, size=(10, 8, 8, 3), dtype=np.uint8)
    feat = KMeansPatchFeatures(n_centroids=2, n_patches=100, random_state=0).fit(X)
    with pytest.raises(ValueError, match="fitted on"):
        feat.transform(np.zeros((2, 10, 10, 3), np.uint8))
