"""Test accuracy of a SmallCNN with and without BatchNorm recalibration after training.

    python benchmarks/bench_bn_recalibration.py [--n-train 2000] [--epochs 4] [--width 16]

CIFAR-10N aggre labels on a stratified training subset, clean labels on every 10th test
image; the same seed, so both runs have identical weights and differ only in the BatchNorm
running statistics (moving averages kept during training vs re-estimated at the final
weights). Prints a table.
"""

import argparse
import time
from pathlib import Path

import numpy as np

from sklearn_cnat.baselines import BaselineClassifier
from sklearn_cnat.datasets import load_cifar10n
from sklearn_cnat.models import SmallCNN

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--width", type=int, default=16)
    args = p.parse_args(argv)
    d = load_cifar10n(args.data, noise="aggre", subset=args.n_train, random_state=0)
    x_test, y_test = d.x_test[::10], d.y_test[::10]
    print(f"SmallCNN(width={args.width}), {len(d.x_train)} CIFAR-10N images (aggre), {args.epochs} epochs, "
          f"AdamW lr 2e-3, batch 128; clean test accuracy on {len(y_test)} images")
    print("| recalibrate_bn | train acc (its labels) | test acc | fit s |")
    print("|---|---|---|---|")
    for rb in (False, True):
        t0 = time.time()
        clf = BaselineClassifier(SmallCNN, loss="ce", max_epochs=args.epochs, lr=2e-3, batch_size=128,
                                 optimizer="adamw", optimizer_kwargs={"weight_decay": 5e-4},
                                 module_kwargs={"width": args.width}, recalibrate_bn=rb,
                                 random_state=0).fit(d.x_train, d.labels["aggre"])
        t_fit = time.time() - t0
        print(f"| {rb} | {np.mean(clf.predict(d.x_train) == d.labels['aggre']):.3f} | "
              f"{np.mean(clf.predict(x_test) == y_test):.3f} | {t_fit:.0f} |")


if __name__ == "__main__":
    main()
