"""Certified peers side by side with our exact ridge certificates (CIFAR-10N, aggre labels).

One run puts every method on identical features, training labels and test points:

* **ours**: the exact ridge head (``CNATClassifier(module="linear", head="ridge")``,
  alpha by exact leave-one-out on the training labels), tier flip (``max_flips``,
  Theorem 3 of docs/certificates.md) and the tiers bounded (flat l1 0.05) and
  stochastic (delta 0.05);
* **SS-DPA** (Levine & Feizi, ICLR 2021): ``PartitionAggregationClassifier`` with a
  ridge or logistic-regression head per part, ``k`` parts;
* **kNN / rNN** (Jia et al., AAAI 2022): :func:`sklearn_cnat.peers.certify_knn` /
  :func:`~sklearn_cnat.peers.certify_rnn`;
* **Rosenfeld et al.** (ICML 2020): ridge smoothed over random label flips,
  :func:`sklearn_cnat.peers.certify_label_flip_smoothing` (Chernoff, no sampling);
* **DPA** on end-to-end networks (optional, ``--dpa-partitions``): a hash partition of
  the images, one small CNN per part.

Feature modes (``--mode``): ``label_free`` (k-means patch features of
``benchmarks/cifar10n.py``, every training label covered) and ``split`` (a backbone
trained on a seeded half of the rows with ``CNATClassifier(feature_split=0.5)``; the
heads and every certificate are about the other half's labels). Features are cached
under ``--cache`` (git-ignored).

Writes ``certified_peers.csv`` (one row per mode and method), ``certified_peers.md``
(tables with the published anchors), ``certified_peers_reannotation.csv``,
``certified_peers_runs.json`` and one figure per mode
(``certified_peers_<mode>.png``, :class:`sklearn_cnat.display.CertifiedAccuracyDisplay`)
to ``--out``, and prints the ratio of our median certified flips to the best peer's.

Real re-annotation check (``--reannotation``): each certifying method is trained on
annotation ``random1``, certified, refitted on ``random2`` and on ``random3`` (the
held-out annotations); reported: how many certified and uncertified predictions changed.

Example::

    OMP_NUM_THREADS=1 nice -n 19 python benchmarks/certified_peers.py --mode label_free split
"""

import argparse
import csv
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10n"
DEFAULT_OUT = REPO / "docs" / "benchmarks"
DEFAULT_CACHE = REPO / "benchmarks" / "cache"
K = 10
MS = (1, 10, 50, 100, 200, 400, 1000)
ALPHA_GRID = tuple(float(a) for a in np.round(np.logspace(-1, 5, 13), 1))  # 0.1 ... 1e5, half decades

# Published anchors (CIFAR-10, label flips), as listed in issue 11.
PUBLISHED = [
    ("Rosenfeld et al. 2020", "linear least squares on SimCLR features, label-flip smoothing (closed form)",
     "—", "~175", "as reported by Levine & Feizi 2021"),
    ("SS-DPA, k = 50 / 250 / 1,000", "linear heads on SimCLR features, one per partition, plurality vote",
     "90.9 / 90.3 / 89.0 %", "25 / 124 / 392", "Levine & Feizi, ICLR 2021, Table 1"),
    ("DPA, k = 50 / 250", "whole networks on partitions (insert/delete threat; a flip costs 2)",
     "70.1 / 55.9 %", "9 / 6", "same"),
    ("kNN / rNN", "deterministic certified poisoning for nearest neighbours", "—", "—", "Jia et al., AAAI 2022"),
]

COLUMNS = ["mode", "family", "method", "setting", "n_train", "n_test", "clean_top1",
           *[f"cert_acc_m{m}" for m in MS], "cert_acc_own", "median_flips", "fit_seconds", "certify_seconds",
           "statement", "covers"]
REANNOTATION_COLUMNS = ["mode", "method", "flips_to_random2", "flips_to_random3", "changed_all",
                        "n_certified", "changed_certified", "n_uncertified", "changed_uncertified",
                        "n_certified_m100", "changed_certified_m100", "n_covered", "changed_covered", "certified_by"]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cifar10n():
    """benchmarks/cifar10n.py as a module (its k-means feature cache and helpers)."""
    name = "cifar10n_benchmark"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / "cifar10n.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# --------------------------------------------------------------------------- data


def load_real(path):
    """All 50,000 CIFAR-10N training images with every label set, and the 10,000 test images."""
    from sklearn_cnat.datasets import load_cifar10n

    d = load_cifar10n(path, noise="random")
    return dict(x_train=d.x_train, labels=d.labels, x_test=d.x_test, y_test=d.y_test,
                source=f"CIFAR-10N ({len(d.x_train)} train, {len(d.y_test)} test)")


def synthetic_data(n_train=400, n_test=120, size=16, seed=0):
    """Tiny CIFAR-shaped stand-in: class-coloured images with three simulated annotators."""
    from sklearn_cnat.datasets import simulate_annotators

    rng = np.random.RandomState(seed)
    n = n_train + n_test
    y = rng.randint(0, K, n)
    palette = rng.rand(K, 3)
    img = palette[y][:, None, None, :] * (0.7 + 0.3 * rng.rand(n, size, size, 1)) + 0.25 * rng.randn(n, size, size, 3)
    x = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    _, det = simulate_annotators(x.reshape(n, -1)[:, ::5].astype(float), y, n_annotators=3, noise_rate=0.2,
                                 random_state=seed, return_details=True)
    ann = np.asarray(det.annotator_labels)[:n_train].astype(np.int64)
    votes = sum(np.eye(K, dtype=np.int64)[ann[:, j]] for j in range(3))
    labels = {"aggre": np.argmax(votes, axis=1), "random1": ann[:, 0], "random2": ann[:, 1], "random3": ann[:, 2],
              "clean": y[:n_train]}
    return dict(x_train=x[:n_train], labels=labels, x_test=x[n_train:], y_test=y[n_train:],
                source=f"synthetic ({n_train} train, {n_test} test, {size}x{size})")


def standardise(F_train, F_test):
    """Centre and scale by the training features (float64; no labels involved)."""
    mu = F_train.mean(0)
    sd = F_train.std(0) + 1e-6
    return (F_train - mu) / sd, (F_test - mu) / sd


# --------------------------------------------------------------------------- features


def features_label_free(data, cfg, meta):
    """k-means patch features of every training image (the cache of benchmarks/cifar10n.py)."""
    c10 = _cifar10n()
    arrays = c10.label_free_features(data, dict(centroids=cfg["centroids"], n_patches=cfg["n_patches"],
                                                seed=cfg["seed"], cache=cfg["cache"]), meta)
    F_tr, F_te = standardise(np.asarray(arrays["F_tr"], np.float64), np.asarray(arrays["F_te"], np.float64))
    rows = np.arange(len(F_tr))
    meta["label_free"]["covers"] = "all training labels"
    return F_tr, F_te[cfg["test_idx"]], rows


def features_split(data, cfg, meta):
    """Split-mode features: a backbone trained on one half of the rows, features of the other half."""
    if cfg["split_backbone"] == "extractor":
        return features_split_extractor(data, cfg, meta)
    return features_split_estimator(data, cfg, meta)


def features_split_extractor(data, cfg, meta):
    """The extractor of ``benchmarks/cifar10n.py --mode split`` (and its cache): ``CNATClassifier(module=FastCNN,
    feature_split=0.5)`` trained on its half A with half A's aggre labels, frozen; features of half B (whose labels
    are certified)."""
    c10 = _cifar10n()
    ext = dict(c10.extractor_config(cfg["quick"], cfg["split_epochs"]), radius=0.05, seed=cfg["seed"],
               cache=cfg["cache"], device="cpu")
    arrays, hit = c10.split_features(data, "aggre", ext)
    idx_b = np.asarray(arrays["rows"])
    meta["split"] = dict(backbone="CNATClassifier(module=FastCNN, feature_split=0.5) (benchmarks/cifar10n.py)",
                         epochs=ext["extractor_epochs"], cached=hit, extractor_test_top1=float(arrays["extractor_top1"]),
                         backbone_seconds=float(arrays["t_train"]), feature_dim=int(arrays["F_b"].shape[1]),
                         head_rows=int(len(idx_b)),
                         covers=f"the {len(idx_b)} head rows' labels (half B; the extractor's half A held as trained)")
    F_tr, F_te = standardise(np.asarray(arrays["F_b"], np.float64), np.asarray(arrays["F_t"], np.float64))
    return F_tr, F_te[cfg["test_idx"]], idx_b


def features_split_estimator(data, cfg, meta):
    """Backbone on a seeded half (``CNATClassifier(feature_split=0.5)``), features of the other half."""
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
    from sklearn_cnat import models

    c10 = _cifar10n()
    epochs = cfg["split_epochs"] or (1 if cfg["quick"] else 8)
    backbone = getattr(models, cfg["split_backbone"])
    key = c10._key(kind="peers_split", src=data["source"], backbone=cfg["split_backbone"], epochs=epochs,
                   kwargs=cfg["split_module_kwargs"], lr=cfg["split_lr"], batch=cfg["split_batch"], seed=cfg["seed"],
                   test=cfg["test_idx"].tolist(), **({"whiten": True} if cfg["split_backbone"] == "FastCNN" else {}))

    def compute():
        clf = CNATClassifier(module=backbone, module_kwargs=cfg["split_module_kwargs"], head="ridge", alpha=1.0,
                             budget=NoiseBudgetTransformer(classes=np.arange(K), mapping="flat", radius=0.05),
                             feature_split=0.5, split_head="disjoint", max_epochs=epochs, batch_size=cfg["split_batch"],
                             lr=cfg["split_lr"], optimizer="sgd",
                             optimizer_kwargs={"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
                             lr_schedule="onecycle", augment="flip_translate", tta=True, random_state=cfg["seed"])
        log(f"split: training {cfg['split_backbone']} on half of {len(data['x_train'])} rows "
            f"({epochs} epochs, aggre labels)")
        t0 = time.time()
        clf.fit(data["x_train"], data["labels"]["aggre"])
        t_fit = time.time() - t0
        x_test = data["x_test"][cfg["test_idx"]]
        F_te = clf.feature_map(x_test)
        head_top1 = float(np.mean(clf.predict(x_test) == data["y_test"][cfg["test_idx"]]))
        log(f"split: backbone and head in {t_fit:.0f}s, head top-1 {head_top1:.4f} (alpha 1)")
        return dict(F_tr=clf.train_features_, F_te=F_te, rows=np.flatnonzero(clf.head_rows_),
                    t_fit=np.array(t_fit), head_top1=np.array(head_top1))

    arrays, hit = c10.cached_arrays(Path(cfg["cache"]) / f"peers_split_{key}.npz", compute)
    meta["split"] = dict(backbone=cfg["split_backbone"], epochs=epochs, cached=hit,
                         backbone_seconds=float(arrays["t_fit"]), feature_dim=int(arrays["F_tr"].shape[1]),
                         head_rows=int(len(arrays["rows"])),
                         covers=f"the {len(arrays['rows'])} head rows' labels (backbone rows held as trained)")
    F_tr, F_te = standardise(np.asarray(arrays["F_tr"], np.float64), np.asarray(arrays["F_te"], np.float64))
    return F_tr, F_te, np.asarray(arrays["rows"])


# --------------------------------------------------------------------------- methods


class Method:
    """One certified method: ``run(labels)`` fits on the training labels and returns a Certificate."""

    def __init__(self, family, name, setting, statement, run, reannotate=True, predict=None):
        self.family, self.name, self.setting, self.statement = family, name, setting, statement
        self.run, self.reannotate = run, reannotate
        self.predict = predict or (lambda y: run(y)[0].prediction)  # predictions after a refit on labels y


def choose_alpha(F_tr, y, cfg):
    """Ridge alpha of our head: CNATClassifier's exact leave-one-out rule on the training labels,
    over the grid's alphas whose floating-point allowance is at most 1e-3 (as benchmarks/cifar10n.py)."""
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer

    allowance = _cifar10n().certificate_allowance(F_tr, cfg["alpha_grid"])
    grid = [a for a in cfg["alpha_grid"] if allowance[float(a)] <= 1e-3] or [max(cfg["alpha_grid"])]
    clf = CNATClassifier(module="linear", head="ridge", alpha=grid,
                         budget=NoiseBudgetTransformer(classes=np.arange(K), mapping="flat", radius=cfg["radius"]))
    clf.fit(F_tr, y)
    return clf.alpha_, allowance, clf.alpha_scores_


def build_methods(F_tr, F_te, cfg, alpha, y_tune):
    """Every method on these features (closures over the features and the settings)."""
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer, PartitionAggregationClassifier
    from sklearn_cnat.peers import certify_knn, certify_label_flip_smoothing, certify_rnn

    classes = np.arange(K)
    n = len(F_tr)
    methods = []
    fitted, served = {}, {}  # the one fitted head (its features are large); predictions per label set

    def ours_fit(y):
        key = y.tobytes()
        if key not in fitted:
            t0 = time.time()
            budget = NoiseBudgetTransformer(classes=classes, mapping="flat", radius=cfg["radius"])
            fitted.clear()
            fitted[key] = (CNATClassifier(module="linear", head="ridge", alpha=alpha, budget=budget).fit(F_tr, y),
                           time.time() - t0)
        return fitted[key]

    def ours_predict(y):
        key = y.tobytes()
        if key not in served:
            served[key] = ours_fit(y)[0].predict(F_te)
        return served[key]

    def ours(tier):
        def run(y):
            clf, t_fit = ours_fit(y)
            t0 = time.time()
            kw = dict(m=1) if tier == "flip" else dict(delta=0.05) if tier == "stochastic" else {}
            cert = clf.certify(F_te, tier=tier, **kw)
            return cert, t_fit, time.time() - t0
        return run

    methods.append(Method("ours", "ours: exact ridge, tier flip", f"alpha {alpha:g}",
                          "any m training labels replaced by anything (Theorem 3, exact)", ours("flip"),
                          predict=ours_predict))
    methods.append(Method("ours", "ours: exact ridge, tier bounded", f"alpha {alpha:g}, flat l1 {cfg['radius']}",
                          f"every training label moved within l1 {cfg['radius']} at once (Theorem 1)", ours("bounded"),
                          predict=ours_predict))
    methods.append(Method("ours", "ours: exact ridge, tier stochastic", f"alpha {alpha:g}, delta 0.05",
                          "a fresh draw of every training label: P[certified and pred != pred(Pi*)] <= 0.05 "
                          "(Theorem 4)", ours("stochastic"), predict=ours_predict))

    def ss_dpa(base, k):
        def run(y):
            import warnings

            from sklearn.exceptions import ConvergenceWarning

            t0 = time.time()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model = PartitionAggregationClassifier(base, n_partitions=k, classes=classes).fit(F_tr, y)
            t_fit = time.time() - t0
            t0 = time.time()
            cert = model.certify(F_te, tier="flip", m=1)
            return cert, t_fit, time.time() - t0
        return run

    def ss_dpa_predict(base, k):
        def predict(y):
            return PartitionAggregationClassifier(base, n_partitions=k, classes=classes).fit(F_tr, y).predict(F_te)
        return predict

    for k in cfg["ss_dpa_k"]:
        if k > n:
            continue
        a = tune_part_head("ridge", F_tr, y_tune, n // k, cfg)
        methods.append(Method("SS-DPA", f"SS-DPA ridge, k={k}", f"RidgeClassifier(alpha {a:g})",
                              "any m labels flipped: at most m parts change (P1)",
                              ss_dpa(RidgeClassifier(alpha=a), k), predict=ss_dpa_predict(RidgeClassifier(alpha=a), k)))
    for k in cfg["ss_dpa_logistic_k"]:
        if k > n:
            continue
        c = tune_part_head("logistic", F_tr, y_tune, n // k, cfg)
        methods.append(Method("SS-DPA", f"SS-DPA logistic, k={k}", f"LogisticRegression(C {c:g})",
                              "any m labels flipped: at most m parts change (P1)",
                              ss_dpa(LogisticRegression(C=c, max_iter=cfg["logistic_iter"]), k),
                              reannotate=cfg["reannotate_logistic"]))

    def knn(k):
        def run(y):
            t0 = time.time()
            cert = certify_knn(F_tr, y, F_te, n_neighbors=k, m=1, metric="cosine", classes=classes)
            return cert, 0.0, time.time() - t0
        return run

    for k in cfg["knn_k"]:
        if k <= n:
            methods.append(Method("kNN", f"kNN, k={k}", "cosine", "any m labels flipped (N1, exact)", knn(k)))

    radius = rnn_radius(F_tr, cfg["rnn_neighbors"], cfg["seed"])

    def rnn(y):
        t0 = time.time()
        cert = certify_rnn(F_tr, y, F_te, radius=radius, m=1, metric="cosine", classes=classes)
        return cert, 0.0, time.time() - t0

    methods.append(Method("rNN", "rNN", f"cosine radius {radius:.3g} (median {cfg['rnn_neighbors']}-th "
                          "neighbour distance of training points)", "any m labels flipped (N1, exact); "
                          "no neighbour: abstain", rnn))

    def rosenfeld(q):
        def run(y):
            t0 = time.time()
            cert = certify_label_flip_smoothing(F_tr, y, F_te, alpha=alpha, q=q, m=1, classes=classes)
            return cert, 0.0, time.time() - t0
        return run

    for i, q in enumerate(cfg["rosenfeld_q"]):
        methods.append(Method("Rosenfeld", f"Rosenfeld et al., q={q}", f"ridge alpha {alpha:g}, label-flip smoothing q {q}",
                              "the smoothed classifier g keeps its class for any m labels flipped (R1)",
                              rosenfeld(q), reannotate=i == 0, predict=ours_predict))

    def ours_alpha(a):
        def run(y):
            t0 = time.time()
            budget = NoiseBudgetTransformer(classes=classes, mapping="flat", radius=cfg["radius"])
            clf = CNATClassifier(module="linear", head="ridge", alpha=a, budget=budget).fit(F_tr, y)
            t_fit = time.time() - t0
            t0 = time.time()
            cert = clf.certify(F_te, tier="flip", m=1)
            del clf
            return cert, t_fit, time.time() - t0
        return run

    for a in cfg["ours_alphas"]:
        # the accuracy / robustness trade-off of our head, as k is for SS-DPA and q for Rosenfeld
        methods.append(Method("ours (alpha sweep)", f"ours: exact ridge, tier flip, alpha {a:g}", f"alpha {a:g} (fixed)",
                              "any m training labels replaced by anything (Theorem 3, exact)", ours_alpha(a),
                              reannotate=False))
    if cfg["families"]:
        methods = [m for m in methods if m.family in cfg["families"]]
    return methods, radius


def tune_part_head(kind, F_tr, y, n_part, cfg, n_eval=3000):
    """Regularisation of an SS-DPA head, chosen on the training labels only: fit one random
    part-sized subset per candidate, score agreement with the labels of other training rows."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, RidgeClassifier

    rng = np.random.RandomState(cfg["seed"])
    perm = rng.permutation(len(F_tr))
    n_eval = min(n_eval, len(F_tr) // 2)
    ev, tr = perm[:n_eval], perm[n_eval:n_eval + max(2, n_part)]
    grid = cfg["ridge_alpha_grid"] if kind == "ridge" else cfg["logistic_c_grid"]
    scores = {}
    for v in grid:
        model = RidgeClassifier(alpha=v) if kind == "ridge" else LogisticRegression(C=v, max_iter=cfg["logistic_iter"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if len(np.unique(y[tr])) < 2:
                return grid[len(grid) // 2]
            scores[v] = float(np.mean(model.fit(F_tr[tr], y[tr]).predict(F_tr[ev]) == y[ev]))
    return max(scores, key=scores.get)


def rnn_radius(F_tr, k, seed, n_probe=500):
    """Label-free radius: the median cosine distance of training points to their k-th nearest other training point."""
    rng = np.random.RandomState(seed)
    probe = rng.choice(len(F_tr), min(n_probe, len(F_tr)), replace=False)
    F = torch.as_tensor(F_tr)
    F = F / F.norm(dim=1, keepdim=True).clamp_min(1e-300)
    D = 1.0 - F[probe] @ F.T
    k = min(k + 1, len(F_tr))  # + 1: the point itself
    return float(torch.kthvalue(D, k, dim=1).values.median())


def dpa_base(cfg):
    """The base learner of the DPA rows and its description.

    ``fast_cnn`` (default): the strong-path recipe of benchmarks/strong_path.py through
    ``CNATClassifier(head="softmax")`` (FastCNN, CNAT loss at flat l1 0.05, label smoothing 0.2,
    one-cycle Nesterov SGD, flip + translate augmentation, bf16 where native, flip TTA);
    ``small_cnn``: the earlier cross-entropy SmallCNN with AdamW.
    """
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
    from sklearn_cnat.baselines import BaselineClassifier
    from sklearn_cnat.models import FastCNN, SmallCNN

    if cfg["dpa_backbone"] == "small_cnn":
        base = BaselineClassifier(SmallCNN, loss="ce", module_kwargs={"width": cfg["dpa_width"]},
                                  max_epochs=cfg["dpa_epochs"], lr=2e-3, batch_size=64, optimizer="adamw",
                                  optimizer_kwargs={"weight_decay": 5e-4})
        return base, f"SmallCNN width {cfg['dpa_width']}, cross-entropy, {cfg['dpa_epochs']} epochs per part"
    widths = tuple(cfg["dpa_widths"])
    base = CNATClassifier(
        module=FastCNN, module_kwargs=dict(widths=widths, stem=cfg["dpa_stem"]), head="softmax",
        budget=NoiseBudgetTransformer(pi="onehot", classes=np.arange(K), mapping="flat", radius=cfg["radius"]),
        max_epochs=cfg["dpa_epochs"], batch_size=cfg["dpa_batch"], lr=cfg["dpa_lr"], optimizer="sgd",
        optimizer_kwargs={"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, lr_schedule="onecycle",
        label_smoothing=0.2, precision="auto", augment="flip_translate", tta=True)
    return base, (f"FastCNN widths {'/'.join(map(str, widths))}, CNAT loss (l1 {cfg['radius']:g}), label smoothing "
                  f"0.2, one-cycle SGD, {cfg['dpa_epochs']} epochs per part")


def dpa_networks(images, k, cfg):
    """DPA (Levine & Feizi 2021) on end-to-end networks: one network per part of an image hash partition."""
    from sklearn_cnat import PartitionAggregationClassifier

    x_train, x_test = images
    base, described = dpa_base(cfg)

    def run(y):
        t0 = time.time()
        model = PartitionAggregationClassifier(base, n_partitions=k, classes=np.arange(K),
                                               random_state=cfg["seed"]).fit(x_train, y)
        t_fit = time.time() - t0
        t0 = time.time()
        cert = model.certify(x_test, tier="flip", m=1)
        return cert, t_fit, time.time() - t0

    return Method("DPA", f"DPA networks, k={k}", f"{described}, image hash partition",
                  "any m labels flipped: at most m parts change (P1); under insert/delete divide by 2", run,
                  reannotate=False)


# --------------------------------------------------------------------------- evaluation


def table_row(mode, method, cert, y_test, t_fit, t_cert, n_train, covers):
    pred = np.asarray(cert.prediction)
    correct = pred == y_test
    row = dict(mode=mode, family=method.family, method=method.name, setting=method.setting, n_train=n_train,
               n_test=len(y_test), clean_top1=float(correct.mean()), fit_seconds=round(t_fit, 1),
               certify_seconds=round(t_cert, 1), statement=method.statement, covers=covers)
    if cert.tier == "flip":
        flips = np.asarray(cert.max_flips)
        for m in MS:
            row[f"cert_acc_m{m}"] = float(np.mean((flips >= m) & correct))
        row["median_flips"] = float(np.median(flips))
    else:
        row["cert_acc_own"] = float(np.mean(np.asarray(cert.certified) & correct))
    return row


def reannotation_row(mode, method, certs, preds, flips_to):
    """Certified with random1; ``preds`` refitted on random2 and random3 (pooled)."""
    base = certs.prediction
    changed = np.concatenate([p != base for p in preds])
    if certs.tier == "flip":
        flips = np.asarray(certs.max_flips)
        certified, by = flips >= 1, "max_flips >= 1"
        m100 = flips >= 100
        covered = np.concatenate([flips >= d for d in flips_to])
    else:
        certified, by = np.asarray(certs.certified), f"tier {certs.tier}"
        m100 = None
        covered = None
    cert2, m100_2 = np.tile(certified, len(preds)), None if m100 is None else np.tile(m100, len(preds))

    def frac(mask):
        return float(changed[mask].mean()) if mask.any() else math.nan

    row = dict(mode=mode, method=method.name, flips_to_random2=int(flips_to[0]), flips_to_random3=int(flips_to[1]),
               changed_all=float(changed.mean()), n_certified=int(certified.sum()), changed_certified=frac(cert2),
               n_uncertified=int((~certified).sum()), changed_uncertified=frac(~cert2), certified_by=by)
    if m100_2 is not None:
        row.update(n_certified_m100=int(m100.sum()), changed_certified_m100=frac(m100_2),
                   n_covered=int(covered.sum()), changed_covered=frac(covered))
    return row


def run_mode(mode, data, cfg, meta):
    from sklearn_cnat.display import CertifiedAccuracyDisplay

    log(f"=== {mode}")
    t_mode = time.time()
    F_tr, F_te, rows = (features_label_free if mode == "label_free" else features_split)(data, cfg, meta)
    y_test = data["y_test"][cfg["test_idx"]]
    labels = {k: v[rows] for k, v in data["labels"].items()}
    covers = meta[mode]["covers"]
    log(f"{mode}: {len(F_tr)} training rows x {F_tr.shape[1]} features, {len(y_test)} test points")
    t0 = time.time()
    if cfg["alpha"] is not None:
        alpha, allowance, scores = cfg["alpha"], None, "given (--alpha)"
    else:
        alpha, allowance, scores = choose_alpha(F_tr, labels["aggre"], cfg)
    meta[mode].update(alpha=alpha, alpha_seconds=round(time.time() - t0, 1), allowance=allowance,
                      alpha_loo_scores=scores)
    log(f"{mode}: alpha {alpha} (leave-one-out on the aggre labels, {time.time() - t0:.0f}s)")
    methods, radius = build_methods(F_tr, F_te, cfg, alpha, labels["aggre"])
    meta[mode]["rnn_radius"] = radius
    out_rows, flip_certs, re_rows = [], {}, []
    first_ours = True
    for method in methods:
        cert, t_fit, t_cert = method.run(labels["aggre"])
        if method.family == "ours":  # one fit (with the alpha search) serves the three tiers: counted once
            t_fit = t_fit + meta[mode]["alpha_seconds"] if first_ours else 0.0
            first_ours = False
        row = table_row(mode, method, cert, y_test, t_fit, t_cert, len(F_tr), covers)
        out_rows.append(row)
        if cert.tier == "flip":
            flip_certs[method.name] = cert
        log(f"{mode} {method.name}: top-1 {row['clean_top1']:.4f}, median flips {row.get('median_flips', '-')}, "
            f"cert. acc. m=1/100 {row.get('cert_acc_m1', math.nan):.3f}/{row.get('cert_acc_m100', math.nan):.3f}, "
            f"own {row.get('cert_acc_own', math.nan):.3f} (fit {t_fit:.0f}s, certify {t_cert:.0f}s)")
        if cfg["reannotation"] and method.reannotate:
            cert1, _, _ = method.run(labels["random1"])
            preds = [method.predict(labels[k]) for k in ("random2", "random3")]
            flips_to = [int((labels[k] != labels["random1"]).sum()) for k in ("random2", "random3")]
            re_rows.append(reannotation_row(mode, method, cert1, preds, flips_to))
            r = re_rows[-1]
            log(f"{mode} {method.name} re-annotation: changed {r['changed_certified']:.4f} of {r['n_certified']} "
                f"certified, {r['changed_uncertified']:.4f} of {r['n_uncertified']} uncertified")
    meta[mode]["wall_seconds"] = round(time.time() - t_mode, 1)
    save_flips(cfg, mode, flip_certs)
    return out_rows, re_rows


def run_dpa(data, cfg, meta):
    """DPA on end-to-end networks: rows of the label_free table (same training labels and test points;
    no features: each part's network learns its own from the part's images)."""
    log("=== dpa (rows of the label_free table)")
    t_mode = time.time()
    y_test = data["y_test"][cfg["test_idx"]]
    images = (data["x_train"], data["x_test"][cfg["test_idx"]])
    out_rows, flip_certs = [], {}
    for k in cfg["dpa_partitions"]:
        method = dpa_networks(images, k, cfg)
        cert, t_fit, t_cert = method.run(data["labels"]["aggre"])
        row = table_row("label_free", method, cert, y_test, t_fit, t_cert, len(data["x_train"]),
                        "all training labels (the whole model)")
        out_rows.append(row)
        flip_certs[method.name] = cert
        log(f"dpa {method.name}: top-1 {row['clean_top1']:.4f}, median flips {row['median_flips']:g} "
            f"(fit {t_fit:.0f}s, certify {t_cert:.0f}s)")
    meta["dpa"] = dict(wall_seconds=round(time.time() - t_mode, 1), partitions=list(cfg["dpa_partitions"]),
                       backbone=cfg["dpa_backbone"], epochs=cfg["dpa_epochs"],
                       width=cfg["dpa_width"] if cfg["dpa_backbone"] == "small_cnn" else list(cfg["dpa_widths"]))
    save_flips(cfg, "label_free", flip_certs)
    return out_rows


def _flips_path(cfg, mode):
    return Path(cfg["cache"]) / f"certified_peers_flips_{mode}.npz"


def save_flips(cfg, mode, certs):
    """Per-point predictions and max_flips of each method (merged with earlier runs), for the figure."""
    path = _flips_path(cfg, mode)
    store = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            store = {k: z[k] for k in z.files}
    for name, cert in certs.items():
        store[f"pred::{name}"] = np.asarray(cert.prediction).astype(np.int64)
        store[f"flips::{name}"] = np.asarray(cert.max_flips).astype(np.int64)
    store["test_idx"] = np.asarray(cfg["test_idx"])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **store)


def plot_mode(cfg, mode, y_test, names):
    """Certified accuracy against m for every flip-certified method of ``mode`` on one axes."""
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_cnat.display import CertifiedAccuracyDisplay

    with np.load(_flips_path(cfg, mode)) as z:
        if not np.array_equal(z["test_idx"], cfg["test_idx"]):
            raise SystemExit(f"the saved {mode} certificates are for other test points; rerun the mode")
        certs = {n: SimpleNamespace(prediction=z[f"pred::{n}"], max_flips=z[f"flips::{n}"], classes=None)
                 for n in names if f"flips::{n}" in z.files}
    disp = CertifiedAccuracyDisplay.from_certificates(
        certs, y_test, title=f"CIFAR-10N aggre, {mode} features: certified accuracy against label flips")
    out = Path(cfg["out"])
    disp.figure_.savefig(out / f"certified_peers_{mode}.png", dpi=120, bbox_inches="tight")
    plt.close(disp.figure_)
    return disp


def ratios(rows):
    """Per mode: our flip tier's median certified flips against the best peer's.

    ``ratio_ours_to_best_peer``: our head at its leave-one-out alpha. ``ratio_at_no_lower_accuracy``:
    the largest median among our flip rows (leave-one-out alpha or the alpha sweep) whose clean top-1
    is at least the best peer's, over the best peer's median (the peers' k and q are swept too).
    """
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        flips = [r for r in rows if r["mode"] == mode and r.get("median_flips") is not None]
        ours = next((r for r in flips if r["family"] == "ours"), None)
        peers = [r for r in flips if not r["family"].startswith("ours")]
        if ours is None or not peers:
            continue
        best = max(peers, key=lambda r: (r["median_flips"], r["clean_top1"]))
        denom = best["median_flips"] if best["median_flips"] > 0 else math.nan
        mine = [r for r in flips if r["family"].startswith("ours") and r["clean_top1"] >= best["clean_top1"]]
        top = max(mine, key=lambda r: (r["median_flips"], r["clean_top1"])) if mine else \
            dict(method=None, median_flips=math.nan, clean_top1=math.nan)
        out[mode] = dict(ours_median_flips=ours["median_flips"], ours_top1=ours["clean_top1"],
                         best_peer=best["method"], best_peer_median_flips=best["median_flips"],
                         best_peer_top1=best["clean_top1"], ratio_ours_to_best_peer=ours["median_flips"] / denom,
                         ours_no_lower_accuracy=top["method"], ours_no_lower_accuracy_median_flips=top["median_flips"],
                         ours_no_lower_accuracy_top1=top["clean_top1"],
                         ratio_at_no_lower_accuracy=top["median_flips"] / denom)
    return out


_FAMILY_ORDER = ("ours", "ours (alpha sweep)", "SS-DPA", "kNN", "rNN", "Rosenfeld", "DPA")


def _row_order(r):
    """Modes, then families in a fixed order, then the swept parameter (alpha, k, q) within a family."""
    import re

    name = str(r["method"])
    family = r.get("family") or next((f for f in ("ours", "SS-DPA", "kNN", "rNN", "Rosenfeld", "DPA")
                                      if name.startswith(f)), "")
    tail = re.findall(r"(?:alpha|k=|q=)\s*([0-9.e+]+)", name)
    tier = ("flip", "bounded", "stochastic").index(name.split("tier ")[-1]) if name.startswith("ours: exact ridge, tier ") \
        and "alpha" not in name else 0
    return (("label_free", "split").index(r["mode"]) if r["mode"] in ("label_free", "split") else 9,
            _FAMILY_ORDER.index(family) if family in _FAMILY_ORDER else 99,
            "logistic" in name, tier, float(tail[-1]) if tail else 0.0)


# --------------------------------------------------------------------------- output


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def _write_csv(path, rows, columns):
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: _fmt(r.get(c)) for c in columns})


def _read_csv(path):
    """Rows of a CSV written by :func:`_write_csv`, numbers parsed back."""
    def parse(v):
        if v == "":
            return None
        try:
            return float(v) if any(ch in v for ch in ".en") or not v.lstrip("-").isdigit() else int(v)
        except ValueError:
            return v

    with path.open() as fh:
        return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def _merge(path, rows, replace_modes=()):
    """Earlier rows of ``path`` whose (mode, method) this run did not produce, then this run's rows.

    ``replace_modes``: modes this run ran in full; their earlier rows go (they may come from other features), except
    the DPA rows that ``--mode dpa`` adds to the label_free table (networks on the images, not on the features).
    """
    new = {(r["mode"], r["method"]) for r in rows}

    def kept(r):
        return (r["mode"], r["method"]) not in new and (r["mode"] not in replace_modes or r.get("family") == "DPA")

    return ([r for r in _read_csv(path) if kept(r)] if path.exists() else []) + rows


def _pct(v):
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def write_markdown(path, rows, re_rows, runs):
    L = ["<!-- generated by benchmarks/certified_peers.py; do not edit -->", ""]
    for mode in dict.fromkeys(r["mode"] for r in rows):
        run = runs[mode]
        info = run["info"]
        L += [f"**{mode}** features ({info.get('feature_dim', '?')}-d; certificates cover {info['covers']}; "
              f"ridge alpha {info['alpha']:g} by leave-one-out on the training labels). Command: "
              f"`{run['command']}`; data: {run['data']}, {run['n_test']} test points (every {run['test_step']}-th, "
              f"class shares kept), the same for every method; {run['machine']}, torch {run['torch']}, "
              f"{run['threads']} thread(s); this mode {info['wall_seconds'] / 60:.1f} min.", "",
              "| method | setting | clean top-1 | " + " | ".join(f"m={m}" for m in MS)
              + " | own statement | median flips | fit s | certify s |",
              "|---|---|---|" + "---|" * len(MS) + "---|---|---|---|"]
        for r in (r for r in rows if r["mode"] == mode):
            cells = [_pct(r.get(f"cert_acc_m{m}")) for m in MS]
            med = r.get("median_flips")
            L.append(f"| {r['method']} | {r['setting']} | {_pct(r['clean_top1'])} | " + " | ".join(cells)
                     + f" | {_pct(r.get('cert_acc_own'))} | {'—' if med is None else f'{med:g}'} | "
                     f"{r['fit_seconds']:.0f} | {r['certify_seconds']:.0f} |")
        for extra in run.get("extra_runs", []):
            L += ["", f"Rows of {', '.join(extra['families'])} added by `{extra['command']}` "
                  f"({extra['wall_seconds'] / 60:.1f} min; same features, labels and test points)."]
        if mode == "label_free" and "dpa" in runs:
            d = runs["dpa"]
            L += ["", f"DPA rows (end-to-end networks on the images, no features; the same training labels and test "
                  f"points): command `{d['command']}`, {d['info']['wall_seconds'] / 60:.1f} min."]
        if "ratio_ours_to_best_peer" in info:
            L += ["", f"Ratio of our median certified flips to the best peer's ({info['best_peer']}: "
                  f"{info['best_peer_median_flips']:g} at {_pct(info['best_peer_top1'])} % top-1): "
                  f"**{info['ratio_ours_to_best_peer']:.2f}** at the leave-one-out alpha (ours "
                  f"{info['ours_median_flips']:g} at {_pct(info['ours_top1'])} %); "
                  f"**{info['ratio_at_no_lower_accuracy']:.2f}** for our best row with no lower top-1 "
                  f"({info['ours_no_lower_accuracy']}: {info['ours_no_lower_accuracy_median_flips']:g} at "
                  f"{_pct(info['ours_no_lower_accuracy_top1'])} %).", ""]
    L += ["Certified accuracy (%) at m flipped training labels; `own statement`: certified accuracy under the "
          "tier's own statement (bounded, stochastic), which is not a flip count. Median flips over the test "
          "points (-1: not certified even at m = 0).", ""]
    if re_rows:
        L += ["**Real re-annotation** (trained and certified on annotation random1, refitted on random2 and on "
              "random3, pooled): fraction of predictions that changed.", "",
              "| mode | method | flips to random2 / random3 | changed, all | certified (by) | changed, certified "
              "| changed, uncertified | certified m >= 100: n, changed | covered (max_flips >= flips): n |",
              "|---|---|---|---|---|---|---|---|---|"]
        for r in re_rows:
            m100 = (f"{r['n_certified_m100']}, {_pct(r['changed_certified_m100'])}"
                    if r.get("n_certified_m100") is not None else "—")
            L.append(f"| {r['mode']} | {r['method']} | {r['flips_to_random2']} / {r['flips_to_random3']} | "
                     f"{_pct(r['changed_all'])} | {r['n_certified']} ({r['certified_by']}) | "
                     f"{_pct(r['changed_certified'])} | {_pct(r['changed_uncertified'])} | {m100} | "
                     f"{'—' if r.get('n_covered') is None else r['n_covered']} |")
        L.append("")
    L += ["Published anchors (CIFAR-10 with SimCLR features, label flips; from issue 11):", "",
          "| method | model | clean top-1 | median certified flips | source |", "|---|---|---|---|---|"]
    L += [f"| {' | '.join(p)} |" for p in PUBLISHED]
    path.write_text("\n".join(L) + "\n")


# --------------------------------------------------------------------------- main


def config(args):
    quick = args.quick
    return dict(
        seed=args.seed, cache=args.cache, out=args.out, figures=not args.no_figures, reannotation=args.reannotation,
        centroids=args.centroids or (8 if quick else 512), n_patches=2000 if quick else 200_000,
        radius=0.05, alpha_grid=(0.3, 3.0, 30.0) if quick else ALPHA_GRID,
        ss_dpa_k=args.ss_dpa_k or ((5, 20) if quick else (50, 250, 1000)),
        ss_dpa_logistic_k=args.ss_dpa_logistic_k if args.ss_dpa_logistic_k is not None else
        ((5,) if quick else (50, 250, 1000)),
        ridge_alpha_grid=(1.0, 10.0, 100.0, 1000.0, 10000.0), logistic_c_grid=(1e-4, 1e-3, 1e-2, 1e-1),
        logistic_iter=100 if quick else 200, reannotate_logistic=args.reannotate_logistic,
        knn_k=args.knn_k or ((5, 25) if quick else (50, 250, 1000)), rnn_neighbors=25 if quick else 250,
        rosenfeld_q=args.rosenfeld_q or ((0.1,) if quick else (0.1, 0.3)),
        dpa_partitions=args.dpa_partitions or [], dpa_backbone=args.dpa_backbone,
        dpa_epochs=args.dpa_epochs or (1 if quick else (4 if args.dpa_backbone == "small_cnn" else 30)),
        dpa_width=4 if quick else 16, dpa_widths=(8, 16, 32) if quick else (32, 64, 128), dpa_stem=8 if quick else 24,
        dpa_batch=32 if quick else 64, dpa_lr=0.05 if quick else 0.1,
        families=args.families, ours_alphas=args.ours_alphas or (), alpha=args.alpha,
        quick=quick, split_backbone=args.split_backbone or "extractor",
        split_module_kwargs={"width": 4} if quick else {}, split_epochs=args.split_epochs,
        split_lr=0.05 if quick else 0.2, split_batch=64 if quick else 512,
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", nargs="+", choices=["label_free", "split", "dpa"], default=["label_free", "split"],
                   help="dpa: DPA on end-to-end networks, rows added to the label_free table")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--synthetic", action="store_true", help="tiny synthetic data (no files needed)")
    p.add_argument("--quick", action="store_true", help="CI-sized settings")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--n-test", type=int, default=2000, help="test points, spread evenly over the classes (0: all)")
    p.add_argument("--n-train", type=int, default=None, help="synthetic training rows")
    p.add_argument("--centroids", type=int, default=None)
    p.add_argument("--ss-dpa-k", type=int, nargs="+", default=None)
    p.add_argument("--ss-dpa-logistic-k", type=int, nargs="*", default=None)
    p.add_argument("--reannotate-logistic", action="store_true")
    p.add_argument("--knn-k", type=int, nargs="+", default=None)
    p.add_argument("--rosenfeld-q", type=float, nargs="+", default=None)
    p.add_argument("--dpa-partitions", type=int, nargs="*", default=None)
    p.add_argument("--dpa-epochs", type=int, default=None)
    p.add_argument("--dpa-backbone", default="fast_cnn", choices=["fast_cnn", "small_cnn"],
                   help="fast_cnn (default): FastCNN with the strong-path recipe through CNATClassifier; "
                        "small_cnn: the earlier cross-entropy SmallCNN")
    p.add_argument("--split-backbone", default=None, choices=["extractor", "FastCNN", "SmallCNN"],
                   help="extractor (default): the split-mode extractor (and cache) of benchmarks/cifar10n.py, "
                        "FastCNN through CNATClassifier(feature_split=0.5); FastCNN / SmallCNN: "
                        "CNATClassifier(module=..., feature_split=0.5) at this script's settings")
    p.add_argument("--split-epochs", type=int, default=None)
    p.add_argument("--reannotation", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ours-alphas", type=float, nargs="+", default=None,
                   help="extra rows: our flip tier at these fixed alphas (the accuracy / robustness trade-off)")
    p.add_argument("--families", nargs="+", default=None,
                   choices=["ours", "ours (alpha sweep)", "SS-DPA", "kNN", "rNN", "Rosenfeld"],
                   help="run only these methods (rows merged into the existing tables)")
    p.add_argument("--alpha", type=float, default=None,
                   help="ridge alpha of our head and of Rosenfeld's (default: leave-one-out on the training labels)")
    p.add_argument("--no-figures", action="store_true")
    p.add_argument("--rebuild", action="store_true",
                   help="run nothing: rewrite tables, ratios and figures from the outputs in --out (and the cache)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def write_outputs(out, all_rows, all_re, runs, cfg, y_test=None, modes=()):
    """Sorted tables, ratios (printed and in the runs record), markdown; figures of ``modes``."""
    all_rows = sorted(all_rows, key=_row_order)
    all_re = sorted(all_re, key=_row_order)
    for mode, r in ratios(all_rows).items():
        runs.setdefault(mode, {}).setdefault("info", {}).update(r)
        print(f"{mode}: median certified flips, ours {r['ours_median_flips']:g} (top-1 {r['ours_top1']:.3f}) / best "
              f"peer {r['best_peer']} {r['best_peer_median_flips']:g} (top-1 {r['best_peer_top1']:.3f}) = ratio "
              f"{r['ratio_ours_to_best_peer']:.2f}; at no lower accuracy ({r['ours_no_lower_accuracy']}: "
              f"{r['ours_no_lower_accuracy_median_flips']:g}): {r['ratio_at_no_lower_accuracy']:.2f} (nan: no row of "
              "ours is as accurate)", flush=True)
    (out / "certified_peers_runs.json").write_text(json.dumps(runs, indent=1, default=str))
    if y_test is not None:
        for mode in modes:
            if mode in ("label_free", "split"):
                names = [r["method"] for r in all_rows if r["mode"] == mode and r.get("median_flips") is not None]
                plot_mode(cfg, mode, y_test, names)
    _write_csv(out / "certified_peers.csv", all_rows, COLUMNS)
    _write_csv(out / "certified_peers_reannotation.csv", all_re, REANNOTATION_COLUMNS)
    write_markdown(out / "certified_peers.md", all_rows, all_re, runs)


def rebuild(args, cfg):
    """Rewrite the tables, ratios and figures from the CSVs, the runs record and the cached per-point flips."""
    out = Path(args.out)
    runs = json.loads((out / "certified_peers_runs.json").read_text())
    rows = _read_csv(out / "certified_peers.csv")
    re_rows = _read_csv(out / "certified_peers_reannotation.csv") if (out / "certified_peers_reannotation.csv").exists() else []
    y_test = None
    if cfg["figures"]:
        data = synthetic_data(n_train=args.n_train or 400, seed=args.seed) if args.synthetic else None
        if data is None:
            from sklearn_cnat.datasets import load_cifar10n

            data = dict(y_test=load_cifar10n(args.data, noise="random").y_test)
        cfg["test_idx"] = _cifar10n()._cert_subset(data["y_test"], args.n_test)
        y_test = data["y_test"][cfg["test_idx"]]
    write_outputs(out, rows, re_rows, runs, cfg, y_test, modes=dict.fromkeys(r["mode"] for r in rows))
    return rows, re_rows, runs


def main(argv=None):
    args = parse_args(argv)
    cfg = config(args)
    if args.rebuild:
        return rebuild(args, cfg)
    t_start = time.time()
    if args.synthetic:
        data = synthetic_data(n_train=args.n_train or 400, seed=args.seed)
    else:
        if not (Path(args.data) / "cifar10.npz").exists():
            raise SystemExit(f"CIFAR-10N not found in {args.data}; use --synthetic for a run without data")
        data = load_real(args.data)
    cfg["test_idx"] = _cifar10n()._cert_subset(data["y_test"], args.n_test)
    c10 = _cifar10n()
    meta = dict(command="python benchmarks/certified_peers.py " + " ".join(sys.argv[1:] if argv is None else argv),
                data=data["source"], machine=c10._machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                n_test=int(len(cfg["test_idx"])), test_step=max(1, len(data["y_test"]) // len(cfg["test_idx"])),
                config={k: v for k, v in cfg.items() if k not in ("cache", "out", "test_idx")})
    rows, re_rows = [], []
    for mode in args.mode:
        if mode == "dpa":
            rows += run_dpa(data, cfg, meta)
            continue
        r, rr = run_mode(mode, data, cfg, meta)
        rows += r
        re_rows += rr
    meta["total_wall_seconds"] = round(time.time() - t_start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # a run replaces the rows of its modes and keeps the others (each mode's rows come from one run)
    runs_path = out / "certified_peers_runs.json"
    runs = json.loads(runs_path.read_text()) if runs_path.exists() else {}
    common = {k: v for k, v in meta.items() if k not in ("label_free", "split", "dpa")}
    for mode in args.mode:
        if args.families and mode in runs:  # a partial run adds rows: keep the full run's record
            runs[mode].setdefault("extra_runs", []).append(dict(command=common["command"], families=args.families,
                                                                wall_seconds=meta[mode]["wall_seconds"]))
            if "ours" in args.families:  # our rows were refitted: their alpha is this run's
                runs[mode]["info"].update({k: meta[mode][k] for k in ("alpha", "alpha_seconds", "allowance",
                                                                      "alpha_loo_scores")})
        else:
            runs[mode] = common | {"info": meta[mode]}
    full = () if args.families else tuple(args.mode)
    all_rows = _merge(out / "certified_peers.csv", rows, full)
    all_re = _merge(out / "certified_peers_reannotation.csv", re_rows, full)
    runs_path.write_text(json.dumps(runs, indent=1, default=str))
    write_outputs(out, all_rows, all_re, runs, cfg, data["y_test"][cfg["test_idx"]] if cfg["figures"] else None,
                  modes=dict.fromkeys(r["mode"] for r in rows))
    log(f"wrote {out / 'certified_peers.csv'} ({len(all_rows)} rows) and certified_peers.md; "
        f"total {meta['total_wall_seconds']:.0f}s")
    return rows, re_rows, meta


if __name__ == "__main__":
    main()
