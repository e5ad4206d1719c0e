"""Per-step overhead of CNATLoss against nn.CrossEntropyLoss on a small CNN (CPU).

One training step = forward + backward + SGD step of a 4-conv CNN on a batch
of 128 images 32x32x3 with K=10 classes. The losses are timed interleaved
(one step of each in turn, from identical initial weights) so that drift in
the machine's load affects them alike; the table reports medians after
warm-up. A second column times the loss alone (forward + backward on fixed
logits), which isolates the cost of the worst-case solve from the CNN noise.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_loss_overhead.py [--steps 30] [--warmup 3]
"""

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn

from sklearn_cnat.losses import CNATLoss

try:
    from sklearn_cnat.models import SmallCNN
except ImportError:  # pragma: no cover - fallback when models.py is absent
    SmallCNN = None


class _InlineCNN(nn.Module):
    def __init__(self, num_classes=10, in_channels=3, width=32):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

        self.features = nn.Sequential(block(in_channels, width), block(width, 2 * width), nn.MaxPool2d(2),
                                      block(2 * width, 2 * width), nn.MaxPool2d(2), block(2 * width, 4 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


def _make_batch(n=128, K=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    votes = torch.zeros(n, K)
    for _ in range(3):  # three annotators, as in CIFAR-10N
        votes[torch.arange(n), torch.randint(0, K, (n,), generator=g)] += 1
    pi = (votes + 0.1) / (votes + 0.1).sum(1, keepdim=True)  # smoothed so that the KL ball is not a point
    r = torch.full((n,), 0.3)
    rho = torch.full((n,), 0.1)
    return x, pi, r, rho


def _criteria():
    ce = nn.CrossEntropyLoss()
    out = {"CrossEntropyLoss": lambda logits, pi, r, rho: ce(logits, pi)}
    for geometry in ("l1", "kl", "kl_l1"):
        crit = CNATLoss(geometry=geometry)
        out[f"CNATLoss({geometry})"] = lambda logits, pi, r, rho, crit=crit: crit(logits, pi, r=r, rho=rho)
    return out


def main(steps=30, warmup=3, seed=0):
    torch.manual_seed(seed)
    model_cls = SmallCNN if SmallCNN is not None else _InlineCNN
    base = model_cls(num_classes=10, in_channels=3)
    x, pi, r, rho = _make_batch(seed=seed)
    criteria = _criteria()
    models = {name: copy.deepcopy(base) for name in criteria}
    optims = {name: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for name, m in models.items()}
    step_times = {name: [] for name in criteria}
    for it in range(warmup + steps):
        for name, loss_fn in criteria.items():
            model, opt = models[name], optims[name]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), pi, r, rho)
            loss.backward()
            opt.step()
            dt = time.perf_counter() - t0
            if it >= warmup:
                step_times[name].append(dt)

    with torch.no_grad():
        logits0 = models["CrossEntropyLoss"](x)
    loss_times = {name: [] for name in criteria}
    for it in range(warmup + 10 * steps):
        for name, loss_fn in criteria.items():
            logits = logits0.clone().requires_grad_(True)
            t0 = time.perf_counter()
            loss_fn(logits, pi, r, rho).backward()
            dt = time.perf_counter() - t0
            if it >= warmup:
                loss_times[name].append(dt)

    base_step = statistics.median(step_times["CrossEntropyLoss"])
    base_loss = statistics.median(loss_times["CrossEntropyLoss"])
    print(f"model: {model_cls.__name__}, batch 128 x 3 x 32 x 32, K=10, torch threads {torch.get_num_threads()}, "
          f"median over {steps} steps after {warmup} warm-up (loss alone: {10 * steps} calls)")
    header = f"{'loss':<20} {'step ms':>9} {'overhead':>9} {'loss-only ms':>13} {'loss cost / step':>17}"
    print(header)
    print("-" * len(header))
    for name in criteria:
        med = statistics.median(step_times[name])
        loss_med = statistics.median(loss_times[name])
        print(f"{name:<20} {1e3 * med:9.1f} {100 * (med - base_step) / base_step:8.1f}% "
              f"{1e3 * loss_med:13.2f} {100 * (loss_med - base_loss) / base_step:16.2f}%")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    main(steps=args.steps, warmup=args.warmup, seed=args.seed)
