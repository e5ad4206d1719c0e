"""Batch-invariant evaluation of a trained network (docs/certificates.md, "Served predictions").

A network evaluated on a batch computes each row with kernels (GEMM blocking, convolution
algorithm) chosen for the batch's shape, so the float32 outputs of one input move by about
1e-7 with the other inputs beside it. A certificate speaks of one prediction per point; for
``predict(x)`` alone and ``certify(batch)`` to speak of the same one, the served outputs of
a point must be a function of that point only. Evaluating every point in a forward pass of
its own gives exactly that: the same input meets the same kernels every time (on one
machine and thread setting), whatever else is being predicted.
"""

import numpy as np
import torch

__all__ = []


def _module_device(module, default):
    for p in module.parameters():
        return p.device
    return torch.device(default) if default is not None else torch.device("cpu")


@torch.no_grad()
def _forward_per_point(module, dataset, *, device=None, features=False):
    """Logits (and the feature map) of each point of ``dataset``, each evaluated alone.

    Parameters
    ----------
    module : torch.nn.Module
        Evaluated in ``eval`` mode (BatchNorm on its running statistics, no dropout); its
        mode is restored afterwards.
    dataset : torch Dataset
        Item ``i`` is the input of point ``i`` or a tuple whose first item is that input.
    device : str, torch.device or None
        Where to evaluate; ``None``: the device of the module's parameters.
    features : bool, default=False
        Also return the input of the module's last ``torch.nn.Linear`` layer.

    Returns
    -------
    logits : ndarray of shape (n_samples, n_outputs), float64
    features : ndarray of shape (n_samples, n_features), float64, or None
    """
    from .models import find_last_linear

    dev = _module_device(module, device) if device is None else torch.device(device)
    captured = []
    hook = None
    if features:
        head = find_last_linear(module)
        hook = head.register_forward_hook(lambda m, inp, out: captured.append(inp[0].detach().reshape(-1)))
    was_training = module.training
    module.eval()
    outputs = []
    try:
        for i in range(len(dataset)):
            item = dataset[i]
            x = item[0] if isinstance(item, (tuple, list)) else item
            out = module(torch.as_tensor(x).unsqueeze(0).to(dev))
            outputs.append(out.detach().reshape(-1).to("cpu", torch.float64))
    finally:
        if hook is not None:
            hook.remove()
        module.train(was_training)
    n = len(outputs)
    logits = torch.stack(outputs).numpy() if n else np.zeros((0, 0))
    if not features:
        return logits, None
    feats = torch.stack([c.to("cpu", torch.float64) for c in captured]).numpy() if n else np.zeros((0, 0))
    return logits, feats
