import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import Ridge

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.callbacks import BudgetCurriculum, ValidECE
from sklearn_cnat.exceptions import CertificationError, NotFittedError
from sklearn_cnat.models import SmallCNN, resnet18


def _blobs(n=120, d=5, k=3, seed=0, votes=3):
    rng = np.random.RandomState(seed)
    centers = rng.normal(scale=3.0, size=(k, d))
    y = rng.randint(0, k, n)
    X = centers[y] + rng.normal(size=(n, d))
    V = np.zeros((n, k), dtype=int)
    for _ in range(votes):
        noisy = np.where(rng.rand(n) < 0.2, rng.randint(0, k, n), y)
        V[np.arange(n), noisy] += 1
    return X.astype(np.float32), V, y


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    return X[:600], d.target[:600], X[600:900], d.target[600:900]


def test_digits_linear_softmax_learns(digits):
    X, y, Xt, yt = digits
    clf = CNATClassifier(head="softmax", max_epochs=30, lr=0.01, batch_size=64, random_state=0,
                         budget=NoiseBudgetTransformer(mapping="flat", radius=0.1))
    clf.fit(X, y)
    assert clf.n_features_in_ == 64
    assert list(clf.classes_) == list(range(10))
    assert clf.score(Xt, yt) > 0.85
    proba = clf.predict_proba(Xt)
    assert proba.shape == (300, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(1)], clf.predict(Xt))


def test_vote_matrix_fit_and_plurality_score():
    X, V, y = _blobs()
    clf = CNATClassifier(head="softmax", max_epochs=40, lr=0.05, random_state=0).fit(X, V)
    plural = V.argmax(1)
    assert clf.score(X, V) == pytest.approx(np.mean(clf.predict(X) == plural))
    assert clf.score(X, V) > 0.7


def test_ridge_head_matches_sklearn_ridge():
    X, V, _ = _blobs()
    clf = CNATClassifier(head="ridge", alpha=2.5, budget=NoiseBudgetTransformer(pi="votes")).fit(X, V)
    ref = Ridge(alpha=2.5).fit(X.astype(np.float64), V / V.sum(1, keepdims=True))
    np.testing.assert_allclose(clf.decision_function(X), ref.predict(X.astype(np.float64)), atol=1e-8)
    assert clf.net_ is None and clf.scope_ == "model"


def test_string_labels_and_classes():
    X, _, y = _blobs()
    names = np.array(["cat", "dog", "eel"])[y]
    clf = CNATClassifier(head="ridge").fit(X, names)
    assert set(clf.predict(X)) <= {"cat", "dog", "eel"}
    assert clf.score(X, names) > 0.8


def test_same_seed_same_predictions_and_global_rng_untouched():
    X, V, _ = _blobs()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = CNATClassifier(head="softmax", max_epochs=5, random_state=7).fit(X, V)
    after = torch.rand(1)
    b = CNATClassifier(head="softmax", max_epochs=5, random_state=7).fit(X, V)
    assert torch.equal(before, after)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    c = CNATClassifier(head="softmax", max_epochs=5, random_state=8).fit(X, V)
    assert not np.array_equal(a.predict_proba(X), c.predict_proba(X))


def test_clone_get_params_pickle():
    X, V, _ = _blobs()
    clf = CNATClassifier(budget=NoiseBudgetTransformer(mapping="linear"), max_epochs=3, random_state=0)
    params = clf.get_params()
    assert params["budget__mapping"] == "linear"
    clf.set_params(budget__mapping="flat")
    assert clf.budget.mapping == "flat"
    c2 = clone(clf)
    assert c2.get_params()["budget__mapping"] == "flat"
    clf.fit(X, V)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_allclose(restored.predict_proba(X), clf.predict_proba(X))


@pytest.mark.parametrize("layout", ["nhwc_uint8", "nchw_float", "dataset"])
def test_image_inputs_small_cnn(layout):
    rng = np.random.RandomState(0)
    n = 48
    y = rng.randint(0, 2, n)
    imgs = rng.randint(0, 100, size=(n, 16, 16, 3)).astype(np.uint8)
    imgs[y == 1, :8] += 120  # class 1 has a bright top half
    if layout == "nhwc_uint8":
        X = imgs
    elif layout == "nchw_float":
        X = imgs.transpose(0, 3, 1, 2).astype(np.float32) / 255
    else:
        X = torch.utils.data.TensorDataset(torch.as_tensor(imgs.transpose(0, 3, 1, 2) / 255.0).float())
    clf = CNATClassifier(module=SmallCNN, module_kwargs={"width": 8}, max_epochs=15, lr=5e-3,
                         batch_size=16, random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.9
    assert not hasattr(clf, "n_features_in_")


def test_module_instance_and_factory():
    X = np.random.RandomState(0).rand(20, 3, 8, 8).astype(np.float32)
    y = np.arange(20) % 4
    clf = CNATClassifier(module=resnet18, module_kwargs={"width": 4}, max_epochs=1).fit(X, y)
    assert clf.net_.module_.fc.out_features == 4
    inst = SmallCNN(num_classes=4, width=4)
    clf2 = CNATClassifier(module=inst, max_epochs=1).fit(X, y)
    assert clf2.net_.module_ is not inst


def test_ridge_head_on_network_features_scope_head():
    X = np.random.RandomState(0).rand(30, 3, 8, 8).astype(np.float32)
    y = np.arange(30) % 3
    clf = CNATClassifier(module=SmallCNN, module_kwargs={"width": 4}, head="ridge", max_epochs=1).fit(X, y)
    assert clf.scope_ == "head"
    assert clf.train_features_.shape == (30, 16)
    assert clf.predict(X).shape == (30,)


def test_curriculum_ramps_budget_scale():
    X, V, _ = _blobs()
    clf = CNATClassifier(head="softmax", max_epochs=6, curriculum_epochs=4, random_state=0).fit(X, V)
    scales = clf.net_.history[:, "budget_scale"]
    np.testing.assert_allclose(scales, [0.0, 0.25, 0.5, 0.75, 1.0, 1.0])


def test_early_stopping_on_valid_ece():
    from skorch.callbacks import EarlyStopping

    X, V, _ = _blobs(n=200)
    clf = CNATClassifier(head="softmax", max_epochs=200, lr=0.05, validation_fraction=0.25, random_state=0,
                         callbacks=[ValidECE(), EarlyStopping(monitor="valid_ece", patience=3)])
    clf.fit(X, V)
    hist = clf.net_.history
    assert "valid_ece" in hist[-1]
    assert len(hist) < 200


def test_verbose_prints_table_and_silent_when_off(capsys):
    X, V, _ = _blobs()
    CNATClassifier(head="softmax", max_epochs=2, verbose=0).fit(X, V)
    assert capsys.readouterr().out == ""
    CNATClassifier(head="softmax", max_epochs=2, verbose=1).fit(X, V)
    out = capsys.readouterr().out
    assert "epoch" in out and "train_loss" in out


def test_accelerate_single_process():
    accelerate = pytest.importorskip("accelerate")
    X, V, _ = _blobs()
    clf = CNATClassifier(head="softmax", max_epochs=3, accelerator=accelerate.Accelerator(cpu=True), random_state=0)
    clf.fit(X, V)
    assert clf.predict(X).shape == (len(X),)


def test_softmax_head_certify_raises_clearly():
    X, V, _ = _blobs()
    clf = CNATClassifier(head="softmax", max_epochs=1).fit(X, V)
    with pytest.raises(CertificationError, match="head='ridge'"):
        clf.certify(X)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        CNATClassifier().predict(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "kwargs, X, y, match",
    [
        ({}, np.zeros((5, 3)), np.arange(4) % 2, "X has 5 samples but y has 4"),
        ({}, np.full((4, 3), np.nan), np.arange(4) % 2, "NaN or infinity"),
        ({"module": 42}, np.zeros((4, 3)), np.arange(4) % 2, "module must be"),
        ({"module": SmallCNN(num_classes=5, in_channels=1, width=4)}, np.zeros((4, 1, 8, 8)),
         np.arange(4) % 2, "K=2 classes"),
        ({"geometry": "l2"}, np.zeros((4, 3)), np.arange(4) % 2, "geometry must be"),
        ({"module": "linear"}, np.zeros((4, 1, 8, 8)), np.arange(4) % 2, "2-D feature matrix"),
        ({}, np.zeros((4, 3)), np.zeros(4, dtype=int), "only one class"),
    ],
)
def test_bad_input(kwargs, X, y, match):
    err = TypeError if kwargs.get("module") == 42 else ValueError
    with pytest.raises(err, match=match):
        CNATClassifier(head="softmax", max_epochs=1, **kwargs).fit(X, y)


def test_predict_wrong_n_features():
    X, V, _ = _blobs()
    clf = CNATClassifier(head="ridge").fit(X, V)
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.predict(X[:, :4])


def test_ridge_loo_scores_are_exact_and_temperature_keeps_argmax():
    from sklearn_cnat._calibration import _ridge_loo_scores
    from sklearn_cnat.certificates._ridge import _ridge_fit

    X, V, _ = _blobs(n=40)
    Q = V / V.sum(1, keepdims=True)
    coef, intercept = _ridge_fit(X, Q, 3.0)
    loo = _ridge_loo_scores(X, Q, 3.0, coef, intercept)
    for i in (0, 7, 39):
        keep = np.arange(40) != i
        ref = Ridge(alpha=3.0).fit(X[keep].astype(np.float64), Q[keep]).predict(X[i:i + 1].astype(np.float64))
        np.testing.assert_allclose(loo[i], ref[0], atol=1e-8)
    clf = CNATClassifier(head="ridge", alpha=3.0, budget=NoiseBudgetTransformer(pi="votes")).fit(X, V)
    assert 1e-3 < clf.temperature_ < 1e3
    np.testing.assert_array_equal(clf.classes_[clf.predict_proba(X).argmax(1)], clf.predict(X))


def test_robust_softmax_head_certifies_bounded_and_flip_but_not_stochastic():
    X, V, _ = _blobs(n=150)
    clf = CNATClassifier(head="robust_softmax", alpha=1500.0,  # alpha / n = 10 (docs/certificates_softmax.md)
                         budget=NoiseBudgetTransformer(mapping="flat", radius=0.02)).fit(X, V)
    assert clf.net_ is None and clf.grad_norm_ < 1e-3  # folded into the certificate anyway
    cert = clf.certify(X, tier="bounded")
    assert cert.engine == "softmax_sensitivity" and cert.scope == "model"
    np.testing.assert_array_equal(cert.prediction, clf.predict(X))
    assert 0 < cert.coverage <= 1
    flip = clf.certify(X, tier="flip", m=1)
    np.testing.assert_array_equal(flip.certified, flip.max_flips >= 1)
    with pytest.raises(CertificationError, match="stochastic"):
        clf.certify(X, tier="stochastic")


def test_grid_search_over_budget_mapping_by_cnr_coverage():
    from sklearn_cnat.model_selection import GridSearchCV, cross_val_score

    X, V, _ = _blobs(n=150)
    clf = CNATClassifier(head="ridge", alpha=5.0, budget=NoiseBudgetTransformer(pi="votes"))
    scores = cross_val_score(clf, X, V, scoring="cnr_coverage", cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(clf, {"budget__mapping": ["flat", "linear", "piecewise"], "budget__scale": [0.5, 1.0]},
                          scoring="cnr_coverage", cv=3, n_jobs=2).fit(X, V)
    assert search.best_params_["budget__mapping"] in {"flat", "linear", "piecewise"}
    assert 0 <= search.best_score_ <= 1
    bounded = GridSearchCV(clf, {"budget__scale": [0.1, 10.0]}, cv=3,
                           scoring={"acc": "accuracy", "cov": "cnr_coverage"}, refit="acc").fit(X, V)
    assert set(bounded.cv_results_) >= {"mean_test_acc", "mean_test_cov"}
