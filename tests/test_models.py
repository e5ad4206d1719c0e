"""Backbones and the BatchNorm recalibration."""

import numpy as np
import pytest
import torch
from torch import nn

from sklearn_cnat import CNATClassifier
from sklearn_cnat.baselines import BaselineClassifier
from sklearn_cnat.models import SmallCNN, recalibrate_batchnorm


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def test_recalibration_is_the_average_of_batch_statistics():
    net = _net()
    bn = net[1]
    bn.running_mean.fill_(5.0)  # stale statistics
    weights = [p.detach().clone() for p in net.parameters()]
    x = torch.randn(40, 3, 8, 8)
    batches = [x[:20], x[20:]]
    with torch.no_grad():
        z = [net[0](b) for b in batches]
    assert recalibrate_batchnorm(net.train(), [(b, None) for b in batches]) == 1
    # momentum=None: the plain average of the per-batch statistics (unbiased variance)
    mean = torch.stack([zb.mean((0, 2, 3)) for zb in z]).mean(0)
    var = torch.stack([zb.var((0, 2, 3), unbiased=True) for zb in z]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
    assert bn.momentum == 0.1 and net.training  # settings restored
    for p, w in zip(net.parameters(), weights):
        torch.testing.assert_close(p, w)  # weights untouched


def test_recalibration_keeps_dropout_in_eval_and_skips_batches_of_one():
    net = _net().eval()
    seen = []
    net[2].register_forward_hook(lambda m, i, o: seen.append(m.training))
    recalibrate_batchnorm(net, [torch.randn(1, 3, 8, 8), torch.randn(4, 3, 8, 8)])
    assert seen == [False]  # one forward (the batch of one skipped), dropout not in training mode
    assert not net.training
    assert recalibrate_batchnorm(nn.Linear(2, 2), [torch.randn(3, 2)]) == 0


@pytest.mark.parametrize("make", [
    lambda rb: CNATClassifier(SmallCNN, module_kwargs={"width": 4}, max_epochs=2, lr=1e-2, batch_size=16,
                              recalibrate_bn=rb, random_state=0),
    lambda rb: BaselineClassifier(SmallCNN, module_kwargs={"width": 4}, max_epochs=2, lr=1e-2, batch_size=16,
                                  recalibrate_bn=rb, random_state=0),
])
def test_estimators_recalibrate_after_training(make):
    rng = np.random.RandomState(0)
    X = (rng.rand(50, 8, 8, 3) * 255).astype(np.uint8)
    y = rng.randint(0, 3, 50)
    on, off = make(True).fit(X, y), make(False).fit(X, y)
    bn_on = [m for m in on.net_.module_.modules() if isinstance(m, nn.BatchNorm2d)][0]
    bn_off = [m for m in off.net_.module_.modules() if isinstance(m, nn.BatchNorm2d)][0]
    # same seed, same weights; only the running statistics differ
    torch.testing.assert_close(on.net_.module_.features[0][0].weight, off.net_.module_.features[0][0].weight)
    assert not torch.allclose(bn_on.running_mean, bn_off.running_mean)
    # recalibrated statistics are those of the final first conv on the training inputs (50 = 16+16+16+2)
    xin = torch.as_tensor(X.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32)
    with torch.no_grad():
        z = on.net_.module_.features[0][0](xin)
    means = torch.stack([z[s:s + 16].mean((0, 2, 3)) for s in range(0, 50, 16)]).mean(0)
    torch.testing.assert_close(bn_on.running_mean, means, rtol=1e-4, atol=1e-5)


def test_fast_cnn_airbench_options_freeze_scales_set_momentum_and_scale_logits():
    from sklearn_cnat.exceptions import CNATValueError
    from sklearn_cnat.models import FastCNN

    kw = dict(num_classes=3, widths=(8, 16, 16), stem=8)
    torch.manual_seed(0)
    plain = FastCNN(**kw)
    torch.manual_seed(0)
    air = FastCNN(batchnorm_momentum=0.4, batchnorm_weight=False, logit_scale=1 / 9, **kw)
    bns = [m for m in air.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 and all(m.momentum == 0.4 and not m.weight.requires_grad and m.bias.requires_grad
                                 for m in bns)
    assert all(m.weight.requires_grad and m.momentum == 0.1 for m in plain.modules() if isinstance(m, nn.BatchNorm2d))
    air.load_state_dict(plain.state_dict())
    with torch.no_grad():
        plain.fc.weight.normal_()
        air.fc.weight.copy_(plain.fc.weight)
    x = torch.rand(4, 3, 16, 16)
    plain.eval(), air.eval()
    torch.testing.assert_close(air(x), plain(x) / 9)
    # a training step leaves the frozen scales at 1 and moves the biases
    opt = torch.optim.SGD([p for p in air.parameters() if p.requires_grad], lr=0.1)
    air.train()
    air(x).sum().backward()
    opt.step()
    assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bns)
    assert any(m.bias.abs().sum() > 0 for m in bns)
    for bad in (dict(batchnorm_momentum=0.0), dict(batchnorm_momentum=1.5), dict(logit_scale=0.0),
                dict(logit_scale=float("inf"))):
        with pytest.raises(CNATValueError, match="batchnorm_momentum must be|logit_scale must be"):
            FastCNN(**kw, **bad)
