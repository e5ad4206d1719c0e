"""The ``cnat`` command: measure disagreement, set budgets, train robustly, certify, relabel.

``cnat run`` with no arguments runs the whole loop on an embedded default
(scikit-learn's digits with simulated annotators). ``cnat run --images DIR --votes
FILE`` reads the votes with :func:`sklearn_cnat.evidence.read_evidence` and the images
with :func:`sklearn_cnat.datasets.load_image_folder`, and matches them by file name.
Exit codes: 0 success, 2 bad usage or input (an option out of range, a missing or
unreadable file, names or classes that do not match; checked before any training),
1 unexpected failure.
"""

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

from .exceptions import CNATError
from .recipes import _ALPHAS

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class _InputError(Exception):
    """A problem with the user's files or options (exit code 2)."""


# --------------------------------------------------------------------------- options


def _check_options(args):
    """Every option error before any file is read or any model trained (exit 2, option named)."""
    def need(ok, message):
        if not ok:
            raise _InputError(message)

    need(0.0 < args.delta < 1.0, f"--delta must be in (0, 1) (a failure probability), got {args.delta}")
    need(0.0 < args.test_size < 1.0, f"--test-size must be in (0, 1) (the held-out fraction), got {args.test_size}")
    need(0.0 <= args.radius <= 2.0, f"--radius must be in [0, 2] (an l1 radius), got {args.radius}")
    need(all(np.isfinite(a) and a > 0 for a in args.alpha or ()),
         f"--alpha must be > 0, got {' '.join(map(str, args.alpha or ()))}")
    for flag, value in (("--epochs", args.epochs), ("--image-size", args.image_size), ("--subset", args.subset),
                        ("--n-relabel", args.n_relabel), ("--extra-votes", args.extra_votes)):
        need(value >= 1, f"{flag} must be >= 1, got {value}")
    need(not (args.cifar10n and (args.images or args.votes)), "--cifar10n cannot be combined with --images/--votes")
    need(not (args.votes and not args.images), "--votes needs --images (the images the votes are about)")
    decay = _ema_option(args.ema)
    need(decay in ("auto", None) or 0.0 < decay < 1.0, f"--ema must be a decay in (0, 1), auto or none, got {args.ema}")
    need(np.isfinite(args.elr) and args.elr >= 0, f"--elr must be a weight >= 0, got {args.elr}")
    need((args.ema == "auto" and args.tta == "auto" and not args.elr) or args.images or args.cifar10n,
         "--ema, --tta and --elr need image data (--images or --cifar10n): the default digits are fitted linearly")
    fs = args.feature_split
    need(fs is None or 0.0 < fs < 1.0, f"--feature-split must be a fraction in (0, 1), got {fs}")
    need(fs is None or args.images or args.cifar10n,
         "--feature-split needs image data (--images or --cifar10n): the default digits are fitted linearly")
    ple = args.pseudo_label_epochs
    need(ple is None or ple >= 1, f"--pseudo-label-epochs must be >= 1, got {ple}")
    need(ple is None or fs is not None, "--pseudo-label-epochs needs --feature-split (the split backbone labels the "
         "other rows' images)")
    out = Path(args.output)
    need(not out.exists() or out.is_dir(), f"--output {out} exists and is not a folder")


# --------------------------------------------------------------------------- loading


def _load_images(path, image_size):
    """``(images, names, classes, target)``; names/classes/target None for an .npy array."""
    from .datasets import load_image_folder

    path = Path(path)
    if not path.exists():
        raise _InputError(f"images not found: {path}")
    if path.is_file():
        if path.suffix != ".npy":
            raise _InputError(f"--images must be a folder of image files or an .npy array, got {path.name}")
        try:
            images = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise _InputError(f"{path}: not a readable .npy array ({exc})") from None
        if images.ndim not in (3, 4):
            raise _InputError(f"{path}: expected images of shape (n, H, W[, C]) or (n, C, H, W), got {images.shape}")
        return images, None, None, None
    data = load_image_folder(path, image_size=image_size)
    return data.images, data.names, data.target_names, data.target


def _match_items(ev, names, n_images, images_arg, notes):
    """Votes in image order: by item name, or by position when neither side has names."""
    votes_name = ev.source
    if names is None and ev.items is None:
        if len(ev) != n_images:
            raise _InputError(f"{n_images} images but {len(ev)} rows of votes")
        notes.append(f"matched the {n_images} images of {Path(images_arg).name} to the {len(ev)} rows of "
                     f"{votes_name} by position (neither names its items)")
        return ev
    if names is None:
        raise _InputError(f"{votes_name} names its items (first: {ev.items[0]!r}) but {Path(images_arg).name} is an "
                          f"array without file names: pass --images a folder of image files so that votes are "
                          f"matched by name")
    if ev.items is None:
        raise _InputError(f"the images in {images_arg} have file names but {votes_name} does not name its items: "
                          f"add a column 'image' with each row's file name (rows are never matched to files by "
                          f"position)")
    return ev.align(names, what=f"images in {images_arg}")


def _match_classes(ev, folder_classes, images_arg, notes):
    """The evidence over the class folders' names (or its own classes without class folders)."""
    import dataclasses

    if folder_classes is None:
        return ev
    folders = np.asarray(folder_classes)
    k = len(folders)
    own = ev.classes.tolist()
    by_name = all(str(c) in {str(f) for f in folders} for c in own)
    if ev.kind == "counts":
        if ev.n_classes != k:
            raise _InputError(f"{ev.source} has {ev.n_classes} count columns but {images_arg} has {k} class folders "
                              f"({', '.join(map(str, folders))}): give one count column per class folder, named "
                              f"after it (or in folder order)")
        if by_name:
            return ev.to_classes(folders)
        if own == list(range(k)):
            notes.append(f"count columns of {ev.source} read in class-folder order: {', '.join(map(str, folders))}")
            return dataclasses.replace(ev, classes=folders)
        raise _InputError(f"the count columns of {ev.source} ({', '.join(map(str, own))}) are not the class folders "
                          f"of {images_arg} ({', '.join(map(str, folders))}); if the columns are annotators pass "
                          f"--evidence annotators")
    if by_name:
        return ev.to_classes(folders)
    if all(isinstance(c, (int, np.integer)) and 0 <= c < k for c in own):
        notes.append(f"labels of {ev.source} read as indices of the sorted class folders: "
                     + ", ".join(f"{i}={f}" for i, f in enumerate(folders)))
        return dataclasses.replace(ev, classes=folders[np.asarray(own, dtype=int)]).to_classes(folders)
    unknown = [c for c in own if str(c) not in {str(f) for f in folders}]
    raise _InputError(f"{ev.source} has labels that are not class folders of {images_arg} "
                      f"({', '.join(map(str, folders))}): {', '.join(repr(c) for c in unknown[:5])}")


def _load_data(args, notes):
    from .datasets import load_cifar10n, load_digits_votes
    from .evidence import LabelEvidence, read_evidence

    if args.cifar10n:
        d = load_cifar10n(args.cifar10n, noise="random", subset=args.subset, random_state=args.seed)
        return dict(name="cifar10n", X=d.x_train, y=d.votes, items=None, X_test=d.x_test, y_test=d.y_test,
                    kind="images", classes=np.asarray(d.target_names))
    if args.images:
        X, names, folder_classes, target = _load_images(args.images, args.image_size)
        if args.votes:
            ev = read_evidence(args.votes, evidence=args.evidence)
            ev = _match_classes(_match_items(ev, names, len(X), args.images, notes), folder_classes, args.images,
                                notes)
        elif folder_classes is not None:
            ev = LabelEvidence(counts=np.eye(len(folder_classes))[target], classes=folder_classes, items=names,
                               kind="labels", source=str(args.images))
            notes.append(f"one vote per image from its class folder ({len(folder_classes)} classes)")
        else:
            raise _InputError(f"{args.images} has no class folders and no --votes: pass --votes (counts, an "
                              f"annotator matrix or long format)")
        if ev.n_classes < 2:
            raise _InputError(f"the votes name only {ev.n_classes} class ({ev.classes.tolist()}); a classifier needs "
                              f"at least 2")
        return dict(name=Path(args.images).stem, X=X, y=ev.counts, items=ev.items, X_test=None, y_test=None,
                    kind="images", classes=ev.classes)
    d = load_digits_votes(random_state=args.seed)
    return dict(name="digits", X=d.data, y=d.votes, items=None, X_test=None, y_test=d.target, kind="features",
                classes=np.arange(10))


# --------------------------------------------------------------------------- the loop


def _split(data, seed, test_size):
    """``(X_train, y_train, X_test, y_test, train_rows)``; ``train_rows`` indexes the input data."""
    from sklearn.model_selection import train_test_split

    y = np.asarray(data["y"])
    if data["X_test"] is not None:
        return data["X"], y, data["X_test"], data["y_test"], np.arange(len(y))
    strat = np.argmax(y, axis=1)
    try:
        idx_train, idx_test = train_test_split(
            np.arange(len(y)), test_size=test_size, random_state=seed,
            stratify=strat if np.bincount(strat).min() >= 2 else None)
    except ValueError as exc:
        raise _InputError(f"--test-size {test_size} cannot split {len(y)} examples: {exc}") from None
    clean = data["y_test"]
    y_test = clean[idx_test] if clean is not None else y[idx_test]
    return data["X"][idx_train], y[idx_train], data["X"][idx_test], y_test, idx_train


def _ema_option(text):
    """``--ema``: ``"auto"``, None (``none``) or the decay as a float (NaN when not a number)."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _alpha_option(values):
    """``--alpha``: one value fixes it; several (default: ``_ALPHAS``) are a leave-one-out grid."""
    values = list(_ALPHAS) if values is None else [float(v) for v in values]
    return values[0] if len(values) == 1 else values


def _recipe_batch(n):
    """fast_cnn's batch: the recipe's 256 from 2,560 training rows (ten steps an epoch), else the
    power of two that gives about ten steps an epoch, at least 16 (the learning rate follows it)."""
    if n >= 2560:
        return 256
    return int(max(16, 2 ** np.floor(np.log2(max(n, 1) / 10))))


def _estimators(args, data, n_train):
    from .budgets import NoiseBudgetTransformer
    from .classifier import CNATClassifier
    from .models import SmallCNN, fast_cnn, resnet18

    common = dict(random_state=args.seed, geometry=args.geometry)
    ridge_extra = {}
    ema = _ema_option(args.ema)
    if data["kind"] == "images" and args.backbone == "fast_cnn":
        from .classifier import _as_array_inputs
        from .recipes import fast_cnn_recipe

        # the strong path of docs/benchmarks.md (sklearn_cnat.recipes); the whitening stem's 2 x 2
        # convolution and three pools need at least 9 x 9 pixels
        n = int(n_train)
        whiten = min(_as_array_inputs(data["X"][:1])[0].shape[-2:]) >= 9
        batch = _recipe_batch(n)

        def recipe(rows):
            return fast_cnn_recipe(rows, max_epochs=args.epochs, batch_size=batch, ema=ema,
                                   tta="flip_translate" if args.tta == "auto" else args.tta,
                                   module_kwargs={"whiten": whiten})

        common.update(recipe(n), elr_lambda=args.elr)
        if args.feature_split is not None:
            ridge_extra = dict(recipe(max(1, int(round(args.feature_split * n)))), feature_split=args.feature_split,
                               split_head=args.split_head, pseudo_label_epochs=args.pseudo_label_epochs)
    elif data["kind"] == "images":
        # SGD with Nesterov momentum, one-cycle schedule, label smoothing of the backbone targets, seeded
        # flip/translate augmentation and flip TTA ("auto": colour images of at least 16 x 16 pixels),
        # bf16 autocast where the CPU computes it natively
        module = {"small_cnn": SmallCNN, "resnet18": resnet18}[args.backbone]
        module_kwargs = {"width": 16} if args.backbone == "small_cnn" else None
        common.update(module=module, module_kwargs=module_kwargs,
                      max_epochs=args.epochs, lr=0.05, batch_size=64, optimizer="sgd",
                      optimizer_kwargs={"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                      lr_schedule="onecycle", label_smoothing=0.2, precision="auto", augment="auto", tta=args.tta,
                      ema=None if ema == "auto" else ema, elr_lambda=args.elr)
        if args.feature_split is not None:
            ridge_extra.update(feature_split=args.feature_split, split_head=args.split_head,
                               pseudo_label_epochs=args.pseudo_label_epochs)
    else:
        common.update(module="linear", max_epochs=args.epochs, lr=0.05, batch_size=64)
    # the posterior mapping and the KL geometries need pi with full support (docs/budgets.md)
    smoothing = 0.01 if (args.mapping == "posterior" or args.geometry != "l1") else 0.0
    classes = list(data["classes"])
    budget = NoiseBudgetTransformer(pi="votes", mapping=args.mapping, radius=args.radius,
                                    smoothing=smoothing, evidence="counts", classes=classes)
    zero = NoiseBudgetTransformer(pi="votes", mapping="flat", radius=0.0, evidence="counts", classes=classes)
    return {
        "cross-entropy": CNATClassifier(budget=zero, head="softmax", **common),
        "cnat": CNATClassifier(budget=budget, head="softmax", **common),
        "cnat-ridge": CNATClassifier(budget=budget, head="ridge", calibration=args.calibration,
                                     alpha=_alpha_option(args.alpha),
                                     **{**common, **ridge_extra}),
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
    for tier, kw in (("stochastic", {"delta": args.delta, "reference": args.reference}), ("bounded", {}),
                     ("flip", {"m": 1})):
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
    """Class indices (into ``clf.classes_``) of the test truth: 1-D labels, or the plurality of vote counts."""
    y = np.asarray(y)
    if y.ndim == 2:
        # vote counts, one column per class in clf.classes_ order (the CLI reads every
        # format into counts over its class list before training)
        if y.shape[1] != len(clf.classes_):
            raise _InputError(f"test votes have {y.shape[1]} columns but the model has {len(clf.classes_)} classes")
        return np.argmax(y, axis=1)
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

    _check_options(args)
    notes = []
    data = _load_data(args, notes)
    X_train, y_train, X_test, y_test, train_rows = _split(data, args.seed, args.test_size)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _InputError(f"--output {out}: cannot create the folder ({exc.strerror})") from None
    for note in notes:
        print(f"cnat: {note}", file=sys.stderr)
    steps = tqdm(total=6, desc="cnat run", disable=args.quiet, file=sys.stderr)
    steps.update(1)
    rows, fitted, certs = [], {}, {}
    for name, clf in _estimators(args, data, len(y_train)).items():
        steps.set_postfix_str(f"fit {name}")
        t0 = time.perf_counter()
        clf.fit(X_train, y_train)
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
    truth = fitted["cnat-ridge"].classes_[_truth_index(fitted["cnat-ridge"], y_test)]  # class labels
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

    # expected certified-coverage gain of the new votes under the vote model, picked greedily
    ranking = suggest_relabels(fitted["cnat-ridge"], X_test, n=args.n_relabel, k=args.extra_votes,
                               delta=args.delta, strategy="expected", vote_model=args.vote_model,
                               random_state=args.seed)
    rows = train_rows[ranking["index"].to_numpy()]
    # the items to relabel, by file name when the data has names (else the row of the input data)
    ranking.insert(0, "item", rows if data["items"] is None else np.asarray(data["items"], dtype=object)[rows])
    ranking.to_csv(out / "relabel_priority.csv", index=False)
    steps.update(1)
    steps.close()
    print(f"cnat run on {data['name']}: {len(X_train)} training / {len(X_test)} test examples, "
          f"geometry={args.geometry}, mapping={args.mapping}, delta={args.delta}, reference={args.reference}")
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
                    "coverage.png, reliability.png and relabel_priority.csv (training items, by file name, "
                    "whose extra votes would most raise coverage) into --output.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = run.add_argument_group("data (default: scikit-learn digits with 3 simulated annotators)")
    data.add_argument("--images", help="folder of images (one subfolder per class, or flat) or an .npy array "
                                       "(n,H,W,C) uint8 / (n,C,H,W)")
    data.add_argument("--votes", help="CSV/TSV/NPY of votes: long format (image,annotator,label: one row per "
                                      "vote), vote counts (one column per class) or annotator labels (one column "
                                      "per annotator, blanks for missing), with an 'image' column naming the files; "
                                      "labels are class names or integers. Matched to the images by file name "
                                      "(by position only when neither side has names)")
    data.add_argument("--evidence", default="auto", choices=["auto", "counts", "annotators", "labels", "long"],
                      help="how to read --votes (auto refuses a numeric table that could be counts or annotator "
                           "labels and asks for this option)")
    data.add_argument("--cifar10n", help="folder laid out like ../shared/data/cifar10n (three votes per image)")
    data.add_argument("--subset", type=int, default=5000, help="CIFAR-10N training images to use")
    data.add_argument("--image-size", type=int, default=32, help="side length images are resized to")
    data.add_argument("--test-size", type=float, default=0.3, help="held-out fraction when no test set is given")
    model = run.add_argument_group("budgets, training and certificates")
    model.add_argument("--mapping", default="flat", choices=["flat", "linear", "piecewise", "posterior"],
                       help="how votes become radii (docs/budgets.md)")
    model.add_argument("--radius", type=float, default=0.05, help="flat l1 radius")
    model.add_argument("--geometry", default="l1", choices=["l1", "kl", "kl_l1"])
    model.add_argument("--alpha", type=float, nargs="+", default=None,
                       help="ridge regularisation of the certified head; several values: chosen by exact "
                            "leave-one-out agreement with the head rows' labels; none given: 17 values from 0.1 to 1e7, "
                            "a factor sqrt(10) apart")
    model.add_argument("--delta", type=float, default=0.05, help="failure probability of tier stochastic")
    model.add_argument("--reference", default="expected", choices=["expected", "reannotation"],
                       help="what tier stochastic compares with: the learner on the expected labels, or one "
                            "refitted on a fresh re-annotation by the same annotators (docs/certificates.md, "
                            "Theorems 4 and 5)")
    model.add_argument("--calibration", default="noise_corrected", choices=["loo", "noise_corrected"],
                       help="temperature of the certified ridge head's probabilities (docs/concepts.md)")
    model.add_argument("--epochs", type=int, default=20, help="training epochs of the networks")
    model.add_argument("--backbone", default="fast_cnn", choices=["fast_cnn", "small_cnn", "resnet18"],
                       help="network for image data (sklearn_cnat.models); features are fitted linearly")
    model.add_argument("--ema", default="auto",
                       help="image data: decay per step of a weight average used as the trained network, or none; "
                            "auto: fast_cnn's recipe (the average spans a fifth of the training steps: 0.999 for "
                            "50,000 images and 30 epochs, none under 50 steps), none for the other backbones")
    model.add_argument("--elr", type=float, default=0.0,
                       help="image data: weight lambda of the early-learning term in the networks' loss (Liu et "
                            "al. 2020; e.g. 3; 0: off), which keeps a network from memorising wrong labels")
    model.add_argument("--tta", default="auto", choices=["auto", "flip", "flip_translate"],
                       help="image data: test-time views (flip: the image and its mirror image; flip_translate: "
                            "also both shifted one pixel, three times the evaluations; auto: flip_translate for "
                            "fast_cnn, flip for the other backbones)")
    model.add_argument("--feature-split", type=float, default=None,
                       help="image data: train the cnat-ridge backbone on this seeded fraction of the training "
                            "rows only; its certificates then cover the whole model for the other rows' labels "
                            "(scope model; docs/certificates.md section 8; the head's rows: --split-head)")
    model.add_argument("--split-head", default="all", choices=["disjoint", "all"],
                       help="with --feature-split: fit the certified head on the other rows only, or on every row "
                            "with the backbone rows' labels held fixed (still scope model for the other rows' "
                            "labels; docs/certificates.md, Proposition 8.1)")
    model.add_argument("--pseudo-label-epochs", type=int, default=None,
                       help="with --feature-split: self-training: the split backbone labels the other rows' images "
                            "(never reading their labels), then a fresh network trains this many epochs on every "
                            "row and is the backbone the head reads (same rows covered; docs/certificates.md, "
                            "section 8.2)")
    model.add_argument("--n-relabel", type=int, default=50, help="rows of relabel_priority.csv")
    model.add_argument("--extra-votes", type=int, default=2, help="votes assumed bought per relabelled example")
    model.add_argument("--vote-model", default="confusion", choices=["confusion", "model", "plurality"],
                       help="law of the new votes whose expected certified-coverage gain ranks relabel_priority.csv "
                            "(sklearn_cnat.relabel.suggest_relabels)")
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
    except (_InputError, CNATError, FileNotFoundError) as exc:
        print(f"cnat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_FAILURE  # pragma: no cover


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
