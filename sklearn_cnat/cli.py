"""The ``cnat`` command: measure disagreement, set budgets, train robustly, certify, relabel.

``cnat run`` with no arguments runs the whole loop on an embedded default
(scikit-learn's digits with simulated annotators). Exit codes: 0 success,
2 bad usage or input (missing file, bad shape, unknown class), 1 unexpected
failure.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _InputError(Exception):
    """A problem with the user's files or options (exit code 2)."""


# --------------------------------------------------------------------------- loading


def _load_votes(path, evidence):
    path = Path(path)
    if not path.exists():
        raise _InputError(f"votes file not found: {path}")
    if path.suffix == ".npy":
        votes = np.load(path, allow_pickle=False)
    elif path.suffix in (".csv", ".txt"):
        rows = list(csv.reader(path.open()))
        if rows and any(not _is_number(c) for c in rows[0] if c.strip()):
            rows = rows[1:]  # header
        try:
            votes = np.array([[float(c) if c.strip() else np.nan for c in row] for row in rows])
        except ValueError as exc:
            raise _InputError(f"{path}: every cell must be a number or blank ({exc})") from exc
    else:
        raise _InputError(f"votes must be a .npy or .csv file, got {path.name}")
    if votes.ndim == 2 and votes.shape[1] == 1:
        votes = votes[:, 0]
    if evidence == "auto" and votes.ndim == 2 and np.isnan(votes).any():
        evidence = "annotators"
    return votes, evidence


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _load_images(path, image_size):
    path = Path(path)
    if not path.exists():
        raise _InputError(f"images not found: {path}")
    if path.is_file():
        if path.suffix != ".npy":
            raise _InputError(f"images must be a .npy array or a folder of class subfolders, got {path.name}")
        images = np.load(path, allow_pickle=False)
        if images.ndim not in (3, 4):
            raise _InputError(f"{path}: expected images of shape (n, H, W[, C]) or (n, C, H, W), got {images.shape}")
        return images, None, None
    from PIL import Image

    classes = sorted(p.name for p in path.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise _InputError(f"{path}: expected at least two class subfolders, found {classes}")
    images, labels = [], []
    for k, name in enumerate(classes):
        for f in sorted((path / name).iterdir()):
            if f.suffix.lower() not in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
                continue
            img = Image.open(f).convert("RGB").resize((image_size, image_size))
            images.append(np.asarray(img, dtype=np.uint8))
            labels.append(k)
    if not images:
        raise _InputError(f"{path}: no image files in the class subfolders")
    return np.stack(images), np.array(labels), np.array(classes)


def _load_data(args):
    from .datasets import load_cifar10n, load_digits_votes

    if args.cifar10n:
        d = load_cifar10n(args.cifar10n, noise="random", subset=args.subset, random_state=args.seed)
        return dict(name="cifar10n", X=d.x_train, y=d.votes, evidence="counts", X_test=d.x_test,
                    y_test=d.y_test, kind="images", classes=np.asarray(d.target_names))
    if args.images:
        X, folder_labels, folder_classes = _load_images(args.images, args.image_size)
        if args.votes:
            y, evidence = _load_votes(args.votes, args.evidence)
        elif folder_labels is not None:
            y, evidence = folder_labels, "labels"
        else:
            raise _InputError("--images given as an array needs --votes (counts or annotator labels)")
        if len(y) != len(X):
            raise _InputError(f"{len(X)} images but {len(y)} rows of votes")
        return dict(name=Path(args.images).stem, X=X, y=y, evidence=evidence, X_test=None, y_test=None,
                    kind="images", classes=folder_classes)
    if args.votes:
        raise _InputError("--votes needs --images")
    d = load_digits_votes(random_state=args.seed)
    return dict(name="digits", X=d.data, y=d.votes, evidence="counts", X_test=None, y_test=d.target,
                kind="features", classes=np.arange(10))


# --------------------------------------------------------------------------- the loop


def _split(data, seed, test_size):
    from sklearn.model_selection import train_test_split

    if data["X_test"] is not None:
        return data["X"], data["y"], data["X_test"], data["y_test"]
    y = np.asarray(data["y"])
    strat = y if y.ndim == 1 else np.nanargmax(np.nan_to_num(y, nan=-1), axis=1)
    idx_train, idx_test = train_test_split(np.arange(len(y)), test_size=test_size, random_state=seed,
                                           stratify=strat if np.bincount(strat.astype(int)).min() >= 2 else None)
    clean = data["y_test"]
    y_test = clean[idx_test] if clean is not None else y[idx_test]
    return data["X"][idx_train], y[idx_train], data["X"][idx_test], y_test


def _estimators(args, data):
    from .budgets import NoiseBudgetTransformer
    from .classifier import CNATClassifier
    from .models import SmallCNN

    common = dict(random_state=args.seed, geometry=args.geometry)
    if data["kind"] == "images":
        common.update(module=SmallCNN, module_kwargs={"width": 16}, max_epochs=args.epochs, lr=2e-3,
                      batch_size=64)
    else:
        common.update(module="linear", max_epochs=args.epochs, lr=0.05, batch_size=64)
    # the posterior mapping and the KL geometries need pi with full support (docs/budgets.md)
    smoothing = 0.01 if (args.mapping == "posterior" or args.geometry != "l1") else 0.0
    budget = NoiseBudgetTransformer(pi="votes", mapping=args.mapping, radius=args.radius,
                                    smoothing=smoothing, evidence=data["evidence"])
    zero = NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.0, evidence=data["evidence"])
    return {
        "cross-entropy": CNATClassifier(budget=zero, **common),
        "cnat": CNATClassifier(budget=budget, **common),
        "cnat-ridge": CNATClassifier(budget=budget, head="ridge", alpha=args.alpha, calibration=args.calibration,
                                     **common),
    }


def _evaluate(name, clf, X_test, y_test, args, fit_seconds):
    from .exceptions import CertificationError
    from .metrics import brier_score, expected_calibration_error, plurality_accuracy_score

    proba = clf.predict_proba(X_test)
    truth = _truth_index(clf, y_test)
    row = {
        "method": name,
        "accuracy": plurality_accuracy_score(truth, np.argmax(proba, axis=1)),
        "ece": expected_calibration_error(truth, proba, n_bins=15),
        "brier": brier_score(truth, proba, labels=np.arange(proba.shape[1])),
        "fit_s": fit_seconds,
    }
    certs = {}
    t0 = time.perf_counter()
    for tier, kw in (("stochastic", {"delta": args.delta}), ("bounded", {}), ("flip", {"m": 1})):
        try:
            certs[tier] = clf.certify(X_test, tier=tier, **kw)
        except CertificationError:
            certs[tier] = None
    row["certify_s"] = time.perf_counter() - t0
    for tier in ("stochastic", "bounded"):
        c = certs[tier]
        row[f"coverage_{tier}"] = np.nan if c is None else c.coverage
        row[f"cert_acc_{tier}"] = np.nan if c is None else float(np.mean(c.certified & (np.argmax(proba, 1) == truth)))
    row["median_max_flips"] = np.nan if certs["flip"] is None else float(np.median(certs["flip"].max_flips))
    row["scope"] = "-" if certs["bounded"] is None else certs["bounded"].scope
    return row, certs


def _truth_index(clf, y):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        return np.argmax(np.nan_to_num(y), axis=1)
    lookup = {c: i for i, c in enumerate(clf.classes_.tolist())}
    try:
        return np.array([lookup[c] for c in y.tolist()])
    except KeyError as exc:
        raise _InputError(f"test label {exc.args[0]!r} is not one of the training classes") from exc


def _format_table(rows):
    cols = ["method", "accuracy", "ece", "brier", "coverage_stochastic", "cert_acc_stochastic",
            "coverage_bounded", "cert_acc_bounded", "median_max_flips", "scope", "fit_s", "certify_s"]
    def fmt(v):
        if isinstance(v, str):
            return v
        return "n/a" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _run(args):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tqdm.auto import tqdm

    from .display import CoverageDisplay, ReliabilityDisplay
    from .relabel import suggest_relabels

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=6, desc="cnat run", disable=args.quiet, file=sys.stderr)
    data = _load_data(args)
    X_train, y_train, X_test, y_test = _split(data, args.seed, args.test_size)
    steps.update(1)
    rows, fitted, certs = [], {}, {}
    for name, clf in _estimators(args, data).items():
        steps.set_postfix_str(f"fit {name}")
        t0 = time.perf_counter()
        try:
            clf.fit(X_train, y_train)
        except ValueError as exc:
            raise _InputError(str(exc)) from exc
        row, certs[name] = _evaluate(name, clf, X_test, y_test, args, time.perf_counter() - t0)
        rows.append(row)
        fitted[name] = clf
        steps.update(1)
    table = _format_table(rows)
    (out / "results.md").write_text(f"# cnat run on {data['name']}\n\n{table}\n")
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    truth = _truth_index(fitted["cnat-ridge"], y_test)
    for ax, tier in zip(axes, ("stochastic", "bounded", "flip")):
        for name, tier_certs in certs.items():
            if tier_certs[tier] is not None:
                CoverageDisplay.from_certificate(tier_certs[tier], truth, name=name, ax=ax)
    fig.tight_layout()
    fig.savefig(out / "coverage.png", dpi=100)
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, clf in fitted.items():
        ReliabilityDisplay.from_estimator(clf, X_test, truth, name=name, ax=ax)
    fig.savefig(out / "reliability.png", dpi=100)
    plt.close("all")
    steps.update(1)

    ranking = suggest_relabels(fitted["cnat-ridge"], X_test, n=args.n_relabel, k=args.extra_votes,
                               delta=args.delta)
    ranking.to_csv(out / "relabel_priority.csv", index=False)
    steps.update(1)
    steps.close()
    print(f"cnat run on {data['name']}: {len(X_train)} training / {len(X_test)} test examples, "
          f"geometry={args.geometry}, mapping={args.mapping}, delta={args.delta}")
    print(table)
    print(f"wrote {out / 'results.md'}, results.csv, coverage.png, reliability.png, relabel_priority.csv")
    return EXIT_OK


def build_parser():
    parser = argparse.ArgumentParser(
        prog="cnat",
        description="Train classifiers on noisy multi-annotator labels and certify their predictions "
                    "(CNAT training, CNR certificates).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser(
        "run",
        help="run the whole loop: budgets, training, certificates, plots, relabel priorities",
        description="Run the loop on the embedded default (digits with simulated annotators) or on "
                    "your data: trains cross-entropy and CNAT (softmax) and a CNAT ridge head, prints "
                    "accuracy, ECE, Brier, coverage and certified accuracy, and writes results.md/csv, "
                    "coverage.png, reliability.png and relabel_priority.csv into --output.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = run.add_argument_group("data (default: scikit-learn digits with 3 simulated annotators)")
    data.add_argument("--images", help="folder of class subfolders, or an .npy array (n,H,W,C) uint8 / (n,C,H,W)")
    data.add_argument("--votes", help="CSV/NPY of vote counts (n,K) or annotator labels (n,M) with blanks/-1")
    data.add_argument("--evidence", default="auto",
                      choices=["auto", "counts", "annotators", "labels"], help="how to read --votes")
    data.add_argument("--cifar10n", help="folder laid out like ../shared/data/cifar10n (three votes per image)")
    data.add_argument("--subset", type=int, default=5000, help="CIFAR-10N training images to use")
    data.add_argument("--image-size", type=int, default=32, help="side length images are resized to")
    data.add_argument("--test-size", type=float, default=0.3, help="held-out fraction when no test set is given")
    model = run.add_argument_group("budgets, training and certificates")
    model.add_argument("--mapping", default="flat", choices=["flat", "linear", "piecewise", "posterior"],
                       help="how votes become radii (docs/budgets.md)")
    model.add_argument("--radius", type=float, default=0.05, help="flat l1 radius")
    model.add_argument("--geometry", default="l1", choices=["l1", "kl", "kl_l1"])
    model.add_argument("--alpha", type=float, default=10.0, help="ridge regularisation of the certified head")
    model.add_argument("--delta", type=float, default=0.05, help="failure probability of tier stochastic")
    model.add_argument("--calibration", default="noise_corrected", choices=["loo", "noise_corrected"],
                       help="temperature of the certified ridge head's probabilities (docs/concepts.md)")
    model.add_argument("--epochs", type=int, default=20, help="training epochs of the softmax models")
    model.add_argument("--n-relabel", type=int, default=50, help="rows of relabel_priority.csv")
    model.add_argument("--extra-votes", type=int, default=2, help="votes assumed bought per relabelled example")
    run.add_argument("--output", default="cnat_output", help="output folder")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.command == "run":
            return _run(args)
    except (_InputError, FileNotFoundError) as exc:
        print(f"cnat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILURE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
