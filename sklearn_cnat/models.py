"""Backbones shipped with sklearn-cnat, and feature extraction.

torchvision is optional (PyPI's torchvision does not import beside the CPU
build of torch our machines use), so the package ships its own backbones:

* :class:`FastCNN`: an airbench-class CIFAR backbone (a stem and three wide
  conv-pool-conv blocks with BatchNorm, max pooling, a linear head), the fast strong
  default for 32x32 colour images on a CPU.
* :class:`SmallCNN`: a small, fast 4-conv CNN for 32x32 (or smaller) images.
* :func:`resnet18`: a CIFAR-style ResNet-18 (3x3 stem, no max-pool).

Every backbone ends in a single ``torch.nn.Linear`` layer, the *head*. The
input of that layer is the *feature map* used by the exact ridge certificate
(``CNATClassifier(head="ridge")``); :func:`extract_features` reads it with a
forward hook, so torchvision models (whose last layer is ``fc``) work too.
"""

import numbers

import numpy as np
import torch
from torch import nn

from .exceptions import CNATValueError

__all__ = ["FastCNN", "fast_cnn", "SmallCNN", "ResNet18", "resnet18", "find_last_linear", "extract_features", "recalibrate_batchnorm"]


def _conv_bn(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A small fast CNN: four 3x3 conv blocks, two max-pools, global pooling, linear head.

    Parameters
    ----------
    num_classes : int, default=10
        Number of output logits.
    in_channels : int, default=3
        Number of input channels.
    width : int, default=32
        Channels of the first block; later blocks use ``2 * width`` and ``4 * width``.

    Notes
    -----
    Input of shape ``(n, in_channels, H, W)`` with any ``H, W >= 4``; output
    logits of shape ``(n, num_classes)``. The feature map (input of ``fc``)
    has ``4 * width`` dimensions.
    """

    def __init__(self, num_classes=10, in_channels=3, width=32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(in_channels, w),
            _conv_bn(w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def _conv_bn_gelu(c_in, c_out, pool=False, bn_momentum=0.1, bn_weight=True):
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    bn = nn.BatchNorm2d(c_out, momentum=bn_momentum)
    bn.weight.requires_grad_(bool(bn_weight))  # False: the scale stays 1 (airbench94)
    return layers + [bn, nn.GELU()]


class FastCNN(nn.Module):
    """An airbench-class CIFAR backbone (after Jordan, "94% on CIFAR-10 in 3.29 seconds", 2024).

    A stem, then three blocks of conv - max-pool - BatchNorm - GELU - conv -
    BatchNorm - GELU, a global max-pool and a linear head (zero-initialised, so the
    loss starts at ``log K``). Seven convolutions; with the default widths it is the
    size of airbench94's network.

    Parameters
    ----------
    num_classes : int, default=10
    in_channels : int, default=3
    widths : tuple of int, default=(64, 256, 256)
        Channels of the three blocks; the feature map (input of ``fc``) has
        ``widths[-1]`` dimensions.
    stem : int, default=24
        Channels of the stem convolution.
    whiten : bool, default=True
        Stem as airbench94's: a fixed 2 x 2 patch-whitening convolution (no padding)
        followed by GELU, whose weights :meth:`init_from_data` sets from training images
        (:class:`~sklearn_cnat.CNATClassifier` calls it before training) and which never
        train (its bias does). ``stem`` must then be even and at most
        ``8 * in_channels``. ``False``: a trained 3 x 3 conv - BatchNorm - GELU stem.
    batchnorm_momentum : float in (0, 1], default=0.1
        torch's ``BatchNorm2d`` momentum of the running statistics (airbench94: 0.4,
        its "0.6" in the other convention).
    batchnorm_weight : bool, default=True
        Train the BatchNorm scales; ``False`` keeps them at 1 (airbench94), only the
        biases train.
    logit_scale : float > 0, default=1.0
        Multiplies the output of ``fc`` (airbench94: 1/9); the feature map is unchanged.

    Notes
    -----
    Input ``(n, in_channels, H, W)`` with ``H, W >= 9`` (``>= 8`` without whitening);
    output ``(n, num_classes)``.
    """

    def __init__(self, num_classes=10, in_channels=3, widths=(64, 256, 256), stem=24, whiten=True,
                 batchnorm_momentum=0.1, batchnorm_weight=True, logit_scale=1.0):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) < 1 or min(widths) < 1 or stem < 1:
            raise CNATValueError(f"widths and stem must be positive, got widths={widths}, stem={stem}")
        if not (isinstance(batchnorm_momentum, numbers.Real) and 0 < batchnorm_momentum <= 1):
            raise CNATValueError(f"batchnorm_momentum must be in (0, 1], got {batchnorm_momentum!r}")
        if not (isinstance(logit_scale, numbers.Real) and np.isfinite(logit_scale) and logit_scale > 0):
            raise CNATValueError(f"logit_scale must be a finite number > 0, got {logit_scale!r}")
        self.logit_scale = float(logit_scale)
        bn = dict(bn_momentum=float(batchnorm_momentum), bn_weight=batchnorm_weight)
        self.whiten = bool(whiten)
        if self.whiten:
            if stem % 2 or stem > 8 * in_channels:
                raise CNATValueError(f"whiten=True needs an even stem of at most 8 * in_channels = "
                                     f"{8 * in_channels} channels (2 x 2 patches and their negatives), got {stem}")
            conv = nn.Conv2d(in_channels, stem, kernel_size=2, padding=0, bias=True)
            conv.weight.requires_grad_(False)
            layers = [conv, nn.GELU()]
        else:
            layers = _conv_bn_gelu(in_channels, stem, **bn)
        c = stem
        for w in widths:
            layers += _conv_bn_gelu(c, w, pool=True, **bn) + _conv_bn_gelu(w, w, **bn)
            c = w
        self.features = nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Linear(c, num_classes)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        if self.whiten and min(x.shape[-2:]) < 9:
            raise CNATValueError(f"FastCNN(whiten=True) needs images of at least 9 x 9 pixels, got "
                                 f"{tuple(x.shape[-2:])}; use FastCNN(whiten=False) for smaller images")
        out = self.fc(self.features(x))
        return out if self.logit_scale == 1.0 else out * self.logit_scale

    @torch.no_grad()
    def init_from_data(self, x, eps=5e-4):
        """Set the whitening stem from images (no labels): a no-op when ``whiten=False``.

        With ``mu`` and ``C`` the mean and covariance of the 2 x 2 patches of ``x``
        (``d = 4 * in_channels`` values each) and ``(lambda_j, v_j)`` the ``stem / 2``
        leading eigenpairs of ``C``, the filters are ``+-v_j / sqrt(lambda_j + eps *
        mean(lambda))`` and the biases ``-+v_j . mu / sqrt(...)``: the stem outputs
        centred, decorrelated patch coordinates of unit variance, and their negatives.

        Parameters
        ----------
        x : torch.Tensor of shape (n, in_channels, H, W)
            Training images, as the network sees them.
        eps : float, default=5e-4
            Regulariser of small eigenvalues, relative to their mean.

        Returns
        -------
        self
        """
        if not self.whiten:
            return self
        conv = self.features[0]
        c, kh, kw = conv.weight.shape[1:]
        x = torch.as_tensor(x).to(conv.weight.device, torch.float64)
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] < kh or x.shape[3] < kw:
            raise CNATValueError(f"init_from_data needs images of shape (n, {c}, H >= {kh}, W >= {kw}), "
                                 f"got {tuple(x.shape)}")
        patches = x.unfold(2, kh, 1).unfold(3, kw, 1)  # (n, c, H', W', kh, kw)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * kh * kw)
        mu = patches.mean(0)
        centred = patches - mu
        cov = centred.T @ centred / max(len(patches) - 1, 1)
        lam, vec = torch.linalg.eigh(cov)
        half = conv.weight.shape[0] // 2
        lam, vec = lam.flip(0)[:half].clamp_min(0.0), vec.flip(1)[:, :half]
        scale = eps * float(lam.mean()) if float(lam.mean()) > 0 else eps
        filters = (vec / torch.sqrt(lam + scale)).T  # (half, c * kh * kw)
        weight = torch.cat([filters, -filters]).reshape(-1, c, kh, kw)
        conv.weight.copy_(weight.to(conv.weight.dtype))
        conv.bias.copy_((-weight.reshape(len(weight), -1) @ mu).to(conv.bias.dtype))
        return self


def fast_cnn(num_classes=10, in_channels=3, **kwargs):
    """Build a :class:`FastCNN` (a factory, like :func:`resnet18`)."""
    return FastCNN(num_classes=num_classes, in_channels=in_channels, **kwargs)


class _BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR-style ResNet-18: 3x3 stem without max-pool, four stages of two basic blocks.

    Parameters
    ----------
    num_classes : int, default=10
    in_channels : int, default=3
    width : int, default=64
        Channels of the first stage (64 in the standard network).

    Notes
    -----
    Input ``(n, in_channels, H, W)`` (designed for 32x32); output ``(n, num_classes)``.
    The feature map (input of ``fc``) has ``8 * width`` (512) dimensions.
    """

    def __init__(self, num_classes=10, in_channels=3, width=64):
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
        )
        stages, c_in = [], w
        for i, c_out in enumerate((w, 2 * w, 4 * w, 8 * w)):
            stride = 1 if i == 0 else 2
            stages += [_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.layers = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


def resnet18(num_classes=10, in_channels=3, **kwargs):
    """Build a CIFAR-style :class:`ResNet18` (a factory, like ``torchvision.models.resnet18``)."""
    return ResNet18(num_classes=num_classes, in_channels=in_channels, **kwargs)


def find_last_linear(module):
    """Return the last ``torch.nn.Linear`` submodule of ``module`` (in registration order).

    Raises
    ------
    ValueError
        If ``module`` has no ``nn.Linear`` layer (the ridge head needs the input of one).
    """
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub
    if last is None:
        raise CNATValueError(
            f"{type(module).__name__} has no torch.nn.Linear layer: the feature map is defined "
            "as the input of the module's last linear layer"
        )
    return last


@torch.no_grad()
def extract_features(module, X, *, batch_size=512, device="cpu"):
    """Feature map of ``module`` on ``X``: the input of its last linear layer.

    Parameters
    ----------
    module : torch.nn.Module
        Network ending in a linear head. Evaluated in ``eval`` mode; its mode is restored.
    X : torch.Tensor or ndarray of shape (n_samples, ...)
        Inputs, already in the layout the module expects.
    batch_size : int, default=512
    device : str or torch.device, default="cpu"

    Returns
    -------
    features : ndarray of shape (n_samples, n_features), float32
    """
    head = find_last_linear(module)
    captured = []
    hook = head.register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach().cpu()))
    was_training = module.training
    module.eval()
    try:
        X = torch.as_tensor(X)
        for start in range(0, len(X), batch_size):
            module(X[start : start + batch_size].to(device))
    finally:
        hook.remove()
        module.train(was_training)
    if not captured:
        return np.zeros((0, head.in_features), dtype=np.float32)
    return torch.cat(captured).reshape(len(X), -1).numpy().astype(np.float32, copy=False)


@torch.no_grad()
def recalibrate_batchnorm(module, batches, device="cpu"):
    """Re-estimate BatchNorm running statistics at the final weights ("precise BN").

    During training the running mean/variance are an exponential moving average over
    the last few batches, taken while the weights were still moving (and including a
    possibly tiny last batch of each epoch); at evaluation time they can disagree with
    the statistics the final weights actually produce, which costs accuracy (Wu &
    Johnson, "Rethinking 'Batch' in BatchNorm", 2021). This resets the statistics and
    recomputes them as the plain average over ``batches``, with only the BatchNorm
    layers in training mode (dropout and the like stay in evaluation mode). The
    weights are not changed.

    Parameters
    ----------
    module : torch.nn.Module
    batches : iterable of torch.Tensor or of tuples whose first item is the input batch
        Typically the training inputs, without augmentation.
    device : str or torch.device, default="cpu"

    Returns
    -------
    n_layers : int
        Number of BatchNorm layers recalibrated (0: nothing to do).
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return 0
    was_training = module.training
    momenta = [m.momentum for m in bns]
    module.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
        m.train()
    try:
        for batch in batches:
            xb = batch[0] if isinstance(batch, (tuple, list)) else batch
            if len(xb) > 1:  # a batch of one has no batch statistics
                module(xb.to(device))
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        module.train(was_training)
    return len(bns)
