"""Evaluation of a trained network: batch-invariant served outputs, batched training features.

A network evaluated on a batch computes each row with kernels (GEMM blocking, convolution
algorithm) chosen for the batch's shape, so the float32 outputs of one input move by about
1e-7 with the other inputs beside it. A certificate speaks of one prediction per point; for
``predict(x)`` alone and ``certify(batch)`` to speak of the same one, the served outputs of
a point must be a function of that point only (docs/certificates.md, section 7). Evaluating
every point in a forward pass of its own (with its mirror image, under flip test-time
augmentation: a batch fixed by the point alone) gives exactly that: the same input meets
the same kernels every time (on one machine and thread setting), whatever else is being
predicted. Training features, computed once in ``fit``, are evaluated in batches, under the
training autocast (bfloat16 where the CPU computes it natively): no certificate reads them
as a function of one point, only as the fixed matrix the head is fitted on.
"""

import contextlib

import numpy as np
import torch

__all__ = []


def _module_device(module):
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _item_input(item):
    return item[0] if isinstance(item, (tuple, list)) else item


@torch.no_grad()
def _evaluate(module, batches, *, features, tta, autocast_dtype=None, channels_last=False, per_view=False):
    """Logits and (optionally) head inputs for an iterable of input batches, in eval mode.

    ``per_view``: every test-time view's outputs, stacked on a leading axis (views in
    ``_tta_views`` order), instead of their weighted mean.
    """
    from ._augment import _tta_views
    from .models import find_last_linear

    dev = _module_device(module)
    captured = []
    hook = None
    if features:
        hook = find_last_linear(module).register_forward_hook(
            lambda m, inp, out: captured.append(inp[0].detach().reshape(inp[0].shape[0], -1)))
    was_training = module.training
    module.eval()
    logits, feats = [], []
    cast = (torch.autocast(device_type=dev.type, dtype=autocast_dtype) if autocast_dtype is not None
            else contextlib.nullcontext())
    try:
        for xb in batches:
            xb = xb.to(dev)
            if channels_last and xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            views = _tta_views(xb, tta)
            outs = []
            for view, _ in views:
                n_before = len(captured)
                with cast:
                    out = module(view)
                outs.append(out.detach().reshape(len(view), -1).to("cpu", torch.float64))
                if features and len(captured) != n_before + 1:
                    raise RuntimeError("the module's last torch.nn.Linear layer must run exactly once per "
                                       "forward pass for the feature map to be defined")
            combine = torch.stack if per_view else lambda o: _weighted_mean(o, views)
            logits.append(combine(outs))
            if features:
                views_f = [captured.pop().to("cpu", torch.float64) for _ in views][::-1]
                feats.append(combine(views_f))
    finally:
        if hook is not None:
            hook.remove()
        module.train(was_training)
    axis = 1 if per_view else 0
    out_logits = torch.cat(logits, axis).numpy() if logits else np.zeros((0, 0))
    out_feats = (torch.cat(feats, axis).numpy() if feats else np.zeros((0, 0))) if features else None
    return out_logits, out_feats


def _weighted_mean(outs, views):
    if len(outs) == 1:
        return outs[0]
    return sum(w * o for o, (_, w) in zip(outs, views))


def _forward_per_point(module, dataset, *, features=False, tta=False):
    """Logits (and the feature map) of each point of ``dataset``, each evaluated alone.

    Parameters
    ----------
    module : torch.nn.Module
        Evaluated in ``eval`` mode (BatchNorm on its running statistics, no dropout); its
        mode is restored afterwards.
    dataset : torch Dataset
        Item ``i`` is the input of point ``i`` or a tuple whose first item is that input.
    features : bool, default=False
        Also return the input of the module's last ``torch.nn.Linear`` layer.
    tta : {False, "flip", "flip_translate"}, default=False
        Test-time views averaged with the weights of ``sklearn_cnat._augment._tta_views``
        (``"flip"``: the image and its mirror image; ``"flip_translate"``: also both
        translated by one pixel each way). Each view is a forward pass of its own, fixed
        by the point alone.

    Returns
    -------
    logits : ndarray of shape (n_samples, n_outputs), float64
    features : ndarray of shape (n_samples, n_features), float64, or None
    """
    batches = (torch.as_tensor(_item_input(dataset[i])).unsqueeze(0) for i in range(len(dataset)))
    return _evaluate(module, batches, features=features, tta=tta)


def _forward_batched(module, dataset, *, batch_size=512, features=False, tta=False, autocast_dtype=None,
                     channels_last=False, per_view=False):
    """As :func:`_forward_per_point`, in batches of ``batch_size`` (not batch-invariant).

    ``autocast_dtype`` (a torch dtype, or None for float32) evaluates under autocast;
    ``channels_last`` makes 4-d batches channels-last first. Outputs are float64.
    ``per_view=True`` returns each test-time view's outputs, shape (n_views, n_samples, .),
    in ``_tta_views`` order (the image, its mirror image, then the shifted pairs), instead
    of their weighted mean.
    """
    def batches():
        for start in range(0, len(dataset), batch_size):
            yield torch.stack([torch.as_tensor(_item_input(dataset[i]))
                               for i in range(start, min(start + batch_size, len(dataset)))])

    return _evaluate(module, batches(), features=features, tta=tta, autocast_dtype=autocast_dtype,
                     channels_last=channels_last, per_view=per_view)
