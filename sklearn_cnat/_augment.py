"""Seeded on-the-fly image augmentation for training batches, and flip test-time views."""

import numpy as np
import torch
from torch import nn

from .exceptions import CNATValueError

__all__ = []

_AUGMENTS = (None, "auto", "flip", "translate", "flip_translate")


def _hflip(x):
    """Horizontal flip of an NCHW batch."""
    return x.flip(-1)


def _flip_translate(x, generator, *, flip=True, pad=2):
    """Random horizontal flip (p = 1/2) and translation by up to ``pad`` pixels (reflect padding).

    ``generator`` (a CPU ``torch.Generator``) draws every random choice, so a seeded
    estimator sees the same augmented batches on every run.
    """
    n, _, h, w = x.shape
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask.view(-1, 1, 1, 1), x.flip(-1), x)
    if pad <= 0 or h <= 2 * pad or w <= 2 * pad:
        return x
    padded = nn.functional.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    out = torch.empty_like(x)
    for s in range(2 * pad + 1):
        for t in range(2 * pad + 1):
            sel = (dy == s) & (dx == t)
            if bool(sel.any()):
                out[sel] = padded[sel, :, s:s + h, t:t + w]
    return out


def _resolve_augment(augment, input_kind, input_shape):
    """The augmentation applied to training batches: ``None`` or ``callable(x, generator)``.

    ``"auto"``: flip and translate for colour images of at least 16 x 16 pixels (natural
    images), nothing otherwise (feature matrices, grayscale digits, where a mirror image is
    another symbol).
    """
    if callable(augment) and not isinstance(augment, str):
        return augment
    if augment not in _AUGMENTS:
        raise CNATValueError(f"augment must be one of {_AUGMENTS} or a callable(batch, generator), got {augment!r}")
    if augment is None:
        return None
    if input_kind != "images":
        if augment == "auto":
            return None
        raise CNATValueError(f"augment={augment!r} needs images (n, C, H, W); X is a feature matrix")
    if augment == "auto":
        c, h, w = input_shape
        return _FlipTranslate(True, 2) if c == 3 and min(h, w) >= 16 else None
    return _FlipTranslate(augment in ("flip", "flip_translate"), 2 if "translate" in augment else 0)


class _FlipTranslate:
    """Picklable ``callable(x, generator)`` for :func:`_flip_translate`."""

    def __init__(self, flip, pad):
        self.flip, self.pad = flip, pad

    def __call__(self, x, generator):
        return _flip_translate(x, generator, flip=self.flip, pad=self.pad)


_TTA = ("auto", True, False, None, "flip", "flip_translate")


def _resolve_tta(tta, augment_fn, input_kind):
    """The test-time views of served outputs: ``False``, ``"flip"`` or ``"flip_translate"``.

    ``True`` means ``"flip"``. ``"auto"``: ``"flip"`` when training batches are flipped,
    ``False`` otherwise (``"flip_translate"`` costs three times the evaluations of
    ``"flip"``, so it is asked for explicitly; ``benchmarks/strong_path.py --mode trial``
    compares them).
    """
    if tta == "auto":
        flips = input_kind == "images" and isinstance(augment_fn, _FlipTranslate) and augment_fn.flip
        return "flip" if flips else False
    if isinstance(tta, (bool, np.bool_)) or tta is None or (isinstance(tta, int) and tta in (0, 1)):
        mode = "flip" if tta else False
    elif tta in ("flip", "flip_translate"):
        mode = tta
    else:
        raise CNATValueError(f"tta must be one of 'auto', True, False, 'flip', 'flip_translate', got {tta!r}")
    if mode and input_kind != "images":
        raise CNATValueError(f"tta={tta!r} (test-time augmentation) needs images (n, C, H, W)")
    return mode


def _tta_views(x, mode):
    """Test-time views of an NCHW batch and their weights (summing to 1).

    ``"flip"``: the batch and its mirror image, 1/2 each. ``"flip_translate"``: those two
    (1/4 each) and the pair translated by one pixel up-left and by one pixel down-right
    (reflect padding; 1/8 each view), after airbench94's multi-crop evaluation; images of
    at most 2 pixels a side get the ``"flip"`` views. ``False``: the batch alone.
    """
    if not mode:
        return [(x, 1.0)]
    if not (mode is True or mode in ("flip", "flip_translate")):
        raise CNATValueError(f"unknown test-time augmentation {mode!r}")
    h, w = x.shape[-2:]
    if mode != "flip_translate" or min(h, w) <= 2:
        return [(x, 0.5), (_hflip(x), 0.5)]
    padded = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [(x, 0.25), (_hflip(x), 0.25)]
    for s in (0, 2):
        shifted = padded[..., s:s + h, s:s + w]
        views += [(shifted, 0.125), (_hflip(shifted), 0.125)]
    return views
