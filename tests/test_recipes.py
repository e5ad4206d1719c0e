"""sklearn_cnat.recipes: the strong path's settings as CNATClassifier arguments, shared by the
benchmark and the command line."""

import pytest
import torch
from sklearn.base import clone

from sklearn_cnat import CNATClassifier
from sklearn_cnat.exceptions import CNATValueError
from sklearn_cnat.models import FastCNN
from sklearn_cnat.recipes import AIRBENCH94, fast_cnn_recipe

from test_strong_path import TINY, _images

@pytest.mark.parametrize("whiten", [True, False])
def test_param_groups_are_exactly_the_batchnorm_biases(whiten):
    params = fast_cnn_recipe(50000, module_kwargs={"whiten": whiten})
    module = FastCNN(**params["module_kwargs"])
    biases = {f"{name}.bias" for name, m in module.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    groups = params["optimizer_kwargs"]["param_groups"]
    assert {name for name, _ in groups} == biases and len(groups) == len(biases) == 6 + (not whiten)
    assert all(g == {"lr": 0.375 * 64, "weight_decay": 1.33e-3 / 64} for _, g in groups)
    assert params["module_kwargs"] == dict(batchnorm_momentum=0.4, batchnorm_weight=False, logit_scale=1 / 9,
                                           whiten=whiten)


def test_learning_rate_follows_the_batch_and_the_average_a_fifth_of_the_steps():
    p = fast_cnn_recipe(50000)
    assert p["lr"] == AIRBENCH94["lr"] and p["batch_size"] == 256 and p["max_epochs"] == 30
    assert p["ema"] == pytest.approx(1 - 1 / (0.2 * 30 * 196)) and 0.999 < p["ema"] < 0.9992
    assert fast_cnn_recipe(25000)["ema"] == pytest.approx(1 - 1 / (0.2 * 30 * 98))  # ~0.998, split mode
    q = fast_cnn_recipe(50000, batch_size=64)
    assert q["lr"] == pytest.approx(0.375 / 4)
    assert q["optimizer_kwargs"]["param_groups"][0][1]["lr"] == pytest.approx(64 * 0.375 / 4)
    assert q["optimizer_kwargs"]["weight_decay"] == p["optimizer_kwargs"]["weight_decay"]
    assert fast_cnn_recipe(100, max_epochs=5)["ema"] is None  # 5 steps: no average
    assert fast_cnn_recipe(ema=None)["ema"] is None and fast_cnn_recipe(ema=0.99)["ema"] == 0.99


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "pass n_samples"),
    (dict(n_samples=0), "n_samples must be"),
    (dict(n_samples=10.5), "n_samples must be"),
    (dict(n_samples=100, max_epochs=0), "max_epochs must be"),
    (dict(n_samples=100, batch_size=True), "batch_size must be"),
    (dict(n_samples=100, ema="often"), "ema must be"),
    (dict(n_samples=100, module_kwargs={"depth": 3}), "module_kwargs are not FastCNN's"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(CNATValueError, match=match):
        fast_cnn_recipe(**kwargs)


def test_recipe_trains_through_the_estimator_with_its_groups_and_clones():
    X, votes, _ = _images(64, seed=1)
    params = fast_cnn_recipe(len(X), max_epochs=1, batch_size=16, module_kwargs=TINY)
    clf = CNATClassifier(**params, head="softmax", random_state=0)
    assert clone(clf).get_params() == clf.get_params()
    clf.fit(X, votes)
    groups = clf.net_.optimizer_.param_groups
    *biases, rest = groups  # one group per BatchNorm bias (skorch: one per pattern), then the rest
    assert len(biases) == 6 and all(len(g["params"]) == 1 for g in biases)
    assert rest["initial_lr"] == pytest.approx(0.375 * 16 / 256)
    for g in biases:
        assert g["initial_lr"] == pytest.approx(64 * rest["initial_lr"])
        assert g["weight_decay"] == pytest.approx(rest["weight_decay"] / 64)
    assert rest["momentum"] == 0.85 and rest["nesterov"]
    assert clf.tta_ == "flip_translate" and clf.predict(X[:5]).shape == (5,)
    for m in clf.net_.module_.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and m.momentum == 0.4


def test_benchmark_recipe_flag_builds_the_package_recipe(load_benchmark):
    sp = load_benchmark("strong_path.py", "strong_path_benchmark")
    parser_args = {}

    class _Stop(Exception):
        pass

    real = sp.argparse.ArgumentParser.parse_args

    def grab(self, argv=None):
        args = real(self, argv)
        sp._check_recipe_flags(self, args)
        parser_args["args"] = args
        raise _Stop

    sp.argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(_Stop):
            sp.main(["--mode", "e2e", "--recipe", "airbench94", "--epochs", "30", "--tta", "flip_translate"])
        with pytest.raises(SystemExit):
            sp.main(["--mode", "e2e", "--recipe", "airbench94", "--lr", "0.2"])
    finally:
        sp.argparse.ArgumentParser.parse_args = real
    args = parser_args["args"]
    built = sp.estimator(args, 50000).get_params()
    expected = fast_cnn_recipe(50000, max_epochs=30, tta="flip_translate")
    assert {k: built[k] for k in expected} == expected
    assert built["head"] == "ridge" and built["budget"].radius == 0.05
    assert sp.recipe(args) == dict(momentum=0.85, bn_bias_lr_scale=64.0, batchnorm_momentum=0.4,
                                   batchnorm_weight=False, logit_scale=1 / 9)
