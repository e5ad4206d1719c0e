"""Time and peak memory of ``certify_ridge`` for the three tiers.

Each tier runs in its own subprocess so that its peak resident memory
(``resource.getrusage``) is its own. Default size: 10,000 test points against 50,000
training points, d = 512, K = 10 (target: <= 60 s and <= 4 GB per tier on 2 cores).

    OMP_NUM_THREADS=2 python benchmarks/bench_certify.py --n-train 2000 --n-test 10000
    python benchmarks/bench_certify.py --tiers bounded --geometry kl --no-radius
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


class _Budget:
    def __init__(self, pi, r, rho, counts):
        self.pi, self.r, self.rho, self.counts = pi, r, rho, counts


def _data(n_train, n_test, d, k, seed):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, d)) * (3.0 / np.sqrt(d))
    y = rng.integers(k, size=n_train)
    F = centers[y] + rng.normal(size=(n_train, d)) / np.sqrt(d)
    p = np.full((n_train, k), 0.2 / k)
    p[np.arange(n_train), y] += 0.8
    votes = np.where(rng.random(n_train) < 0.5, 1, 3)
    u = rng.random((n_train, 3))
    counts = np.zeros((n_train, k))
    cum = np.cumsum(p, axis=1)
    for j in range(3):  # up to three votes per example
        draw = (u[:, j:j + 1] > cum).sum(axis=1).clip(max=k - 1)
        counts[np.arange(n_train), draw] += j < votes
    pi = counts / counts.sum(axis=1, keepdims=True)
    r = rng.uniform(0.0, 0.1, n_train)
    budget = _Budget(pi, r, r**2 / 2, counts)
    X = centers[rng.integers(k, size=n_test)] + rng.normal(size=(n_test, d)) / np.sqrt(d)
    return F, budget, X


def _worker(args):
    from sklearn_cnat.certificates import certify_ridge

    F, budget, X = _data(args.n_train, args.n_test, args.d, args.k, args.seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kwargs = dict(alpha=args.alpha, tier=args.worker)
    if args.worker == "bounded":
        kwargs.update(geometry=args.geometry, radius=not args.no_radius)
    elif args.worker == "flip":
        kwargs.update(m=args.m)
    start = time.perf_counter()
    cert = certify_ridge(F, budget, X, **kwargs)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    extra = {}
    if cert.radius_scale is not None:
        finite = cert.radius_scale[np.isfinite(cert.radius_scale)]
        extra["median radius_scale"] = float(np.median(finite)) if finite.size else float("inf")
    if cert.max_flips is not None:
        extra["median max_flips"] = float(np.median(cert.max_flips))
    if cert.delta_min is not None:
        extra["median delta_min"] = float(np.median(cert.delta_min))
    print(json.dumps(dict(tier=args.worker, engine=cert.engine, seconds=seconds, peak_mib=peak,
                          data_mib=rss_data, coverage=cert.coverage, **extra)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-train", type=int, default=50_000)
    parser.add_argument("--n-test", type=int, default=10_000)
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--m", type=int, default=5, help="m for tier 'flip'")
    parser.add_argument("--geometry", default="l1", choices=["l1", "kl", "kl_l1"])
    parser.add_argument("--no-radius", action="store_true", help="skip radius_scale (tier 'bounded')")
    parser.add_argument("--tiers", default="stochastic,bounded,flip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    print(f"n_train={args.n_train} n_test={args.n_test} d={args.d} K={args.k} "
          f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}")
    print(f"{'tier':<11}{'engine':<26}{'seconds':>9}{'peak MiB':>10}{'data MiB':>10}{'coverage':>10}  other")
    for tier in args.tiers.split(","):
        cmd = [sys.executable, __file__, "--worker", tier] + [a for a in (argv or sys.argv[1:]) if a != "--worker"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(f"{tier:<11}FAILED\n{out.stderr[-2000:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        other = ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k.startswith("median"))
        print(f"{row['tier']:<11}{row['engine']:<26}{row['seconds']:>9.2f}{row['peak_mib']:>10.0f}"
              f"{row['data_mib']:>10.0f}{row['coverage']:>10.3f}  {other}")


if __name__ == "__main__":
    main()
