"""The strong path inside the estimator: precision, augmentation, TTA, schedules, split and frozen backbones.

Soundness of the split and frozen paths: refitting the whole estimator on changed labels of the
covered rows leaves the backbone bit-identical, and retraining the head under worst-case labels
of those rows (independent solvers, tests/test_soundness_ridge.py) flips no certified prediction.
"""

import numpy as np
import pytest
import torch

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat._augment import _flip_translate, _resolve_augment, _resolve_tta
from sklearn_cnat._precision import _autocast_dtype, _cpu_has_native_bf16
from sklearn_cnat.callbacks import WarmupDecay
from sklearn_cnat.exceptions import CNATValueError
from sklearn_cnat.models import FastCNN, SmallCNN, fast_cnn

from test_soundness_ridge import _attack_margins, _l1_row_attack

TINY = {"widths": (8, 16, 16), "stem": 8}


def _images(n, seed=0, k=3, size=16):
    """Colour images whose class is a coloured blob position: learnable in a few epochs."""
    rng = np.random.default_rng(seed)
    y = rng.integers(k, size=n)
    X = 0.3 * rng.random((n, 3, size, size)).astype(np.float32)
    for i, c in enumerate(y):
        X[i, c % 3, 2 + 4 * c:6 + 4 * c, 4:12] += 0.7
    votes = np.eye(k, dtype=int)[y] * 2 + np.eye(k, dtype=int)[rng.integers(k, size=n)]
    return X, votes, y


# ----------------------------------------------------------------------------- precision


def test_precision_detection_reads_the_processor_flags():
    assert _cpu_has_native_bf16(frozenset({"avx2", "amx_bf16", "amx_tile"}))
    assert _cpu_has_native_bf16(frozenset({"avx512f", "avx512_bf16"}))
    assert not _cpu_has_native_bf16(frozenset({"avx2", "avx512f", "avx512bw"}))
    assert _autocast_dtype("float32", "cpu") is None
    assert _autocast_dtype("bfloat16", "cpu") is torch.bfloat16
    assert _autocast_dtype("auto", "cpu") is (torch.bfloat16 if _cpu_has_native_bf16() else None)
    with pytest.raises(CNATValueError, match="float16.*CUDA"):
        _autocast_dtype("float16", "cpu")
    with pytest.raises(CNATValueError, match="precision must be"):
        CNATClassifier(precision="half").fit(np.zeros((4, 2)), [0, 1, 0, 1])


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_training_in_each_precision_learns(precision):
    X, votes, y = _images(240, seed=1)
    clf = CNATClassifier(module=FastCNN, module_kwargs=TINY, max_epochs=6, lr=0.05, optimizer="sgd",
                         optimizer_kwargs={"momentum": 0.9, "nesterov": True}, lr_schedule="onecycle",
                         precision=precision, random_state=0).fit(X[:160], votes[:160])
    assert clf.net_.autocast_dtype is (None if precision == "float32" else torch.bfloat16)
    losses = clf.net_.history[:, "train_loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert clf.score(X[160:], y[160:]) > 0.6
    # served outputs stay float32/float64 whatever the training precision
    assert clf.feature_map(X[:3]).dtype == np.float64


# ----------------------------------------------------------------------------- augmentation, TTA


def test_flip_translate_is_seeded_and_moves_pixels_only():
    x = torch.rand(32, 3, 16, 16)
    a = _flip_translate(x, torch.Generator().manual_seed(3))
    b = _flip_translate(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape
    assert not torch.equal(a, _flip_translate(x, torch.Generator().manual_seed(4)))
    flips = _flip_translate(x, torch.Generator().manual_seed(5), pad=0)
    for i in range(len(x)):  # pad 0: each image is itself or its mirror image
        assert torch.equal(flips[i], x[i]) or torch.equal(flips[i], x[i].flip(-1))
    # translation keeps every pixel value from the (reflect-padded) image
    moved = _flip_translate(x[:1], torch.Generator().manual_seed(6), flip=False)
    assert set(moved.flatten().tolist()) <= set(x[:1].flatten().tolist())


def test_augment_and_tta_resolution():
    assert _resolve_augment("auto", "images", (3, 32, 32)) is not None
    assert _resolve_augment("auto", "images", (1, 8, 8)) is None  # digits: a mirror image is another symbol
    assert _resolve_augment("auto", "features", None) is None
    with pytest.raises(CNATValueError, match="needs images"):
        _resolve_augment("flip", "features", None)
    with pytest.raises(CNATValueError, match="augment must be"):
        _resolve_augment("rotate", "images", (3, 32, 32))
    assert _resolve_tta("auto", _resolve_augment("flip", "images", (3, 32, 32)), "images")
    assert not _resolve_tta("auto", _resolve_augment("translate", "images", (3, 32, 32)), "images")
    with pytest.raises(CNATValueError, match="tta"):
        _resolve_tta(True, None, "features")


def test_seeded_augmented_training_is_reproducible_and_tta_is_mirror_symmetric():
    X, votes, _ = _images(120, seed=2)
    kw = dict(module=FastCNN, module_kwargs=TINY, max_epochs=2, augment="flip_translate", random_state=0)
    a = CNATClassifier(**kw).fit(X, votes)
    b = CNATClassifier(**kw).fit(X, votes)
    np.testing.assert_array_equal(a.decision_function(X[:10]), b.decision_function(X[:10]))
    assert a.tta_
    # flip TTA: a point and its mirror image are served the same (up to the order of the pair)
    np.testing.assert_allclose(a.feature_map(X[:10]), a.feature_map(X[:10, :, :, ::-1].copy()), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.predict(X[:10]), a.predict(X[:10, :, :, ::-1].copy()))
    no = CNATClassifier(**{**kw, "tta": False}).fit(X, votes)
    assert not no.tta_


def test_warmup_decay_schedule_and_callback():
    f = WarmupDecay(100, warmup=0.2)
    assert f(0) == pytest.approx(1 / 20) and f(19) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.5) and f(100) == 0.0 and f(500) == 0.0
    g = WarmupDecay(100, warmup=0.2, shape="cosine")
    assert g(20) == pytest.approx(1.0) and g(60) == pytest.approx(0.5) and g(100) == pytest.approx(0.0)
    X, votes, _ = _images(64, seed=3)
    clf = CNATClassifier(module=FastCNN, module_kwargs=TINY, max_epochs=2, batch_size=16, lr=0.1,
                         lr_schedule="onecycle", random_state=0).fit(X, votes)
    assert clf.net_.optimizer_.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # 8 steps, decayed to 0
    with pytest.raises(CNATValueError, match="lr_schedule"):
        CNATClassifier(lr_schedule="step").fit(np.zeros((4, 2)), [0, 1, 0, 1])


# ----------------------------------------------------------------------------- defaults that certify


def test_default_network_estimator_certifies():
    X, votes, _ = _images(90, seed=4)
    clf = CNATClassifier(module=SmallCNN, module_kwargs={"width": 4}, max_epochs=1).fit(X[:60], votes[:60])
    cert = clf.certify(X[60:])
    assert len(cert) == 30 and cert.scope == "head" and cert.covers.all()
    assert CNATClassifier().head == "ridge"


def test_set_params_on_default_budget_builds_the_transformer():
    clf = CNATClassifier()
    clf.set_params(budget__mapping="linear", budget__scale=2.0)
    assert isinstance(clf.budget, NoiseBudgetTransformer)
    assert clf.budget.mapping == "linear" and clf.budget.scale == 2.0


# ----------------------------------------------------------------------------- split representation


def _split_clf(**kw):
    return CNATClassifier(module=FastCNN, module_kwargs=TINY, max_epochs=2, feature_split=0.5, alpha=1.0,
                          budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.1), random_state=0,
                          **kw)


def test_split_covers_head_rows_and_refuses_unsound_settings():
    X, votes, _ = _images(100, seed=5)
    clf = _split_clf().fit(X, votes)
    assert clf.scope_ == "model"
    assert clf.head_rows_.sum() == 50 and clf.train_features_.shape[0] == 50
    cert = clf.certify(X[:8], tier="flip", m=1)
    assert cert.scope == "model"
    np.testing.assert_array_equal(cert.covers, clf.head_rows_)
    with pytest.raises(CNATValueError, match="row-wise"):
        _split_clf().set_params(budget=NoiseBudgetTransformer(mapping="piecewise")).fit(X, votes)
    with pytest.raises(CNATValueError, match="feature_split must be"):
        _split_clf().set_params(feature_split=1.0).fit(X, votes)
    with pytest.raises(CNATValueError, match="network module"):
        CNATClassifier(feature_split=0.5).fit(X.reshape(100, -1), votes)
    with pytest.raises(CNATValueError, match="head='ridge'"):
        _split_clf(head="softmax").fit(X, votes)


def test_split_backbone_never_sees_head_labels_and_certificates_survive_attack():
    X, votes, _ = _images(160, seed=6)
    Xt = _images(40, seed=7)[0]
    clf = _split_clf().fit(X, votes)
    head = np.flatnonzero(clf.head_rows_)
    # 1. any change of the covered rows' labels leaves the backbone bit-identical
    changed = votes.copy()
    rng = np.random.default_rng(0)
    changed[head] = np.eye(3, dtype=int)[rng.integers(3, size=head.size)] * 3
    other = _split_clf().fit(X, changed)
    for p, q in zip(clf.net_.module_.state_dict().values(), other.net_.module_.state_dict().values()):
        assert torch.equal(p, q)
    np.testing.assert_array_equal(clf.feature_map(Xt), other.feature_map(Xt))
    # 2. so retraining under worst-case labels of the head rows is retraining the head: attack it
    cert = clf.certify(Xt, tier="bounded")
    assert cert.certified.any()
    F, budget = clf.train_features_, clf._head_budget()
    pred = np.searchsorted(clf.classes_, cert.prediction)
    attacked = _attack_margins(F, budget, clf.feature_map(Xt), 1.0, pred,
                               lambda i, a, b: _l1_row_attack(budget.pi[i], a, b, budget.r[i]))
    assert np.all(attacked[cert.certified] > 0)
    # 3. flip tier: the m head rows of largest influence moved to the runner-up, whole estimator refit
    flip = clf.certify(Xt, tier="flip", m=2)
    scores = clf.decision_function(Xt)
    for t in np.flatnonzero(flip.certified)[:5]:
        c = pred[t]
        runner = np.argsort(scores[t])[-2]
        h = _influence_row(F, clf.feature_map(Xt[t:t + 1])[0], 1.0)
        rows = head[np.argsort(-np.abs(h))[:2]]
        attacked_votes = votes.copy()
        for i, hi in zip(rows, h[np.argsort(-np.abs(h))[:2]]):
            attacked_votes[i] = np.eye(3, dtype=int)[runner if hi > 0 else c] * 3
        refit = _split_clf().fit(X, attacked_votes)
        assert refit.predict(Xt[t:t + 1])[0] == flip.prediction[t]


def _influence_row(F, x, alpha):
    """h(x) of (C1): the ridge score at x is sum_i h_i Q_i."""
    n, d = F.shape
    fbar = F.mean(0)
    Fc = F - fbar
    u = np.linalg.solve(Fc.T @ Fc + alpha * np.eye(d), x - fbar)
    return Fc @ u + 1.0 / n


# ----------------------------------------------------------------------------- frozen backbone


def test_frozen_backbone_saved_and_reloaded_is_a_fixed_feature_map(tmp_path):
    X_other, votes_other, _ = _images(120, seed=8)
    pre = CNATClassifier(module=FastCNN, module_kwargs=TINY, max_epochs=2, head="softmax", random_state=0)
    pre.fit(X_other, votes_other)
    path = tmp_path / "backbone.pt"
    torch.save(pre.net_.module_.state_dict(), path)
    backbone = fast_cnn(num_classes=3, **TINY)
    backbone.load_state_dict(torch.load(path, weights_only=True))
    stats = {k: v.clone() for k, v in backbone.state_dict().items()}

    X, votes, y = _images(120, seed=9)
    clf = CNATClassifier(module=backbone, train_backbone=False, tta=False,
                         budget=NoiseBudgetTransformer(radius=0.05)).fit(X[:80], votes[:80])
    assert clf.scope_ == "model"
    for k, v in clf.net_.module_.state_dict().items():  # nothing trained, BatchNorm stats as loaded
        assert torch.equal(v, stats[k])
    cert = clf.certify(X[80:], tier="bounded")
    assert cert.scope == "model" and cert.covers.all()
    pred = np.searchsorted(clf.classes_, cert.prediction)
    budget = clf.budget_
    attacked = _attack_margins(clf.train_features_, budget, clf.feature_map(X[80:]), 1.0, pred,
                               lambda i, a, b: _l1_row_attack(budget.pi[i], a, b, budget.r[i]))
    assert np.all(attacked[cert.certified] > 0)
    with pytest.raises(CNATValueError, match="train_backbone=False needs head"):
        CNATClassifier(module=backbone, train_backbone=False, head="softmax").fit(X, votes)


# ----------------------------------------------------------------------------- label smoothing


def test_label_smoothing_reaches_the_backbone_loss_only():
    X, votes, y = _images(120, seed=2)
    kw = dict(module=FastCNN, module_kwargs=TINY, max_epochs=2, batch_size=32, lr=0.05, optimizer="sgd", random_state=0,
              budget=NoiseBudgetTransformer(classes=np.arange(3), mapping="flat", radius=0.1))
    plain = CNATClassifier(**kw).fit(X, votes)
    smooth = CNATClassifier(label_smoothing=0.3, **kw).fit(X, votes)
    pi = plain.budget_.pi
    t = smooth._targets(smooth.budget_).numpy()
    np.testing.assert_allclose(t[:, :3], 0.7 * pi + 0.1, rtol=1e-6)
    np.testing.assert_allclose(t[:, 3], plain.budget_.r, rtol=1e-6)  # radii unchanged
    assert np.allclose(t[:, :3].sum(1), 1.0)
    # the network saw different targets; the head reads the unsmoothed pi of its own features
    assert not np.allclose(plain.net_.history[-1, "train_loss"], smooth.net_.history[-1, "train_loss"])
    np.testing.assert_array_equal(smooth.budget_.pi, pi)
    from sklearn_cnat.certificates._ridge import _ridge_fit

    coef, intercept = _ridge_fit(smooth.train_features_, smooth.budget_.pi, smooth.alpha_)
    np.testing.assert_allclose(smooth.coef_, coef, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, True, "0.1", np.nan])
def test_label_smoothing_out_of_range_is_refused(bad):
    with pytest.raises(CNATValueError, match="label_smoothing must be a number in \\[0, 1\\)"):
        CNATClassifier(label_smoothing=bad).fit(np.zeros((4, 2)), [0, 1, 0, 1])
