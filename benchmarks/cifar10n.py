"""CIFAR-10N benchmark: every method on the same features, splits and seeds.

One command runs the baselines (cross-entropy, label smoothing, GCE, ELR,
cleanlab filtering) and CNAT (geometries l1 / kl / kl_l1, nominal one-hot or
vote histogram, radius mappings flat / linear / piecewise / posterior) on the
CIFAR-10N noise settings aggre / random1 / worse, and writes
``cifar10n_results.csv``, ``cifar10n_results.md`` and figures to ``--out``.

Modes (``--mode``, several allowed):

``label_free``
    Coates-Ng k-means patch features (:class:`sklearn_cnat.features.KMeansPatchFeatures`),
    fitted on the training images without labels; heads are trained on all
    training images and certificates have scope "model".
``split``
    The package's split representation trains the extractor:
    ``CNATClassifier(module=FastCNN, feature_split=0.5)`` (CNAT loss, label smoothing,
    augmentation, bf16 where native, flip TTA) on its seeded half A with half A's own
    noisy labels of the setting, then frozen; heads are trained on half B, whose labels
    are the ones certified (half B's labels never reach the extractor, so the
    certificates cover the whole model for these labels: scope "model").
``cnn``
    End-to-end small CNN (:class:`sklearn_cnat.models.SmallCNN`) on a training
    subset with each loss; CNAT's ridge head is certified with scope "head"
    (features learned from the same labels); plus partition aggregation
    (:class:`sklearn_cnat.partition.PartitionAggregationClassifier`, ``--partitions``
    base models on a hash partition) with whole-model flip certificates.
``gpu``
    The ``cnn`` protocol with ResNet-18 on the full training set, ``--device cuda``.

Features are computed once and cached under ``--cache`` (``benchmarks/cache``,
git-ignored). Hyper-parameters of the heads (the ridge ``alpha``, the
temperature of the calibrated ridge probabilities) are chosen by
cross-validation on the training labels only; the test set is used for the
reported numbers only.

Example::

    OMP_NUM_THREADS=2 nice -n 10 python benchmarks/cifar10n.py --mode split --noise aggre
"""

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10n"
DEFAULT_OUT = REPO / "docs" / "benchmarks"
DEFAULT_CACHE = REPO / "benchmarks" / "cache"
NOISES = ("aggre", "random1", "worse")
MODES = ("label_free", "split", "cnn", "gpu")
K = 10



def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- data


def load_data(path, n_train=None, n_test=None, seed=0):
    """CIFAR-10N arrays: images, the three random labels as votes, every label set.

    ``n_train`` / ``n_test``: stratified subsets (by the clean label, for the
    training set through ``load_cifar10n``; the test set is grouped by class, so
    every ``10000 / n_test``-th image is kept).
    """
    from sklearn_cnat.datasets import load_cifar10n

    d = load_cifar10n(path, noise="random", subset=n_train, random_state=seed)
    x_test, y_test = d.x_test, d.y_test
    if n_test is not None and n_test < len(y_test):
        keep = np.linspace(0, len(y_test) - 1, n_test).round().astype(int)
        x_test, y_test = x_test[keep], y_test[keep]
    return dict(x_train=d.x_train, votes=d.votes, labels=d.labels, x_test=x_test, y_test=y_test,
                source=f"CIFAR-10N ({len(d.x_train)} train, {len(y_test)} test)")


def synthetic_data(n_train=400, n_test=200, size=16, seed=0):
    """Tiny CIFAR-shaped stand-in (no files needed): class-coloured blobs with three simulated annotators.

    Returns the same dict as :func:`load_data`; ``labels`` has "aggre" (plurality of the
    three), "random1" (the first annotator), "worse" (a wrong vote when there is one)
    and "clean".
    """
    from sklearn_cnat.datasets import simulate_annotators

    rng = np.random.RandomState(seed)
    n = n_train + n_test
    y = rng.randint(0, K, n)
    palette = rng.rand(K, 3)
    yy, xx = np.mgrid[:size, :size] / size
    phase = rng.rand(K) * 2 * np.pi
    pattern = np.sin(2 * np.pi * (xx[None] * (1 + np.arange(K)[:, None, None] % 3)) + phase[:, None, None])
    img = palette[y][:, None, None, :] * (0.6 + 0.3 * pattern[y][..., None])
    img = img + 0.35 * rng.randn(n, size, size, 3)
    x = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    votes_all, det = simulate_annotators(x.reshape(n, -1)[:, ::7].astype(float), y, n_annotators=3,
                                         noise_rate=0.2, random_state=seed, return_details=True)
    votes = votes_all[:n_train]
    ann = np.asarray(det.annotator_labels)[:n_train]
    y_tr = y[:n_train]
    plural = np.argmax(votes, axis=1)
    wrong = np.where(ann != y_tr[:, None], ann, -1).max(axis=1)
    labels = {"aggre": plural, "random1": ann[:, 0].astype(np.int64),
              "worse": np.where(wrong >= 0, wrong, y_tr).astype(np.int64), "clean": y_tr}
    return dict(x_train=x[:n_train], votes=votes.astype(np.int64), labels=labels, x_test=x[n_train:],
                y_test=y[n_train:], source=f"synthetic ({n_train} train, {n_test} test, {size}x{size})")


# --------------------------------------------------------------------------- split-mode extractor


def split_extractor(data, labels, cfg, *, evidence="labels"):
    """The split-mode extractor, trained by the package: ``CNATClassifier(feature_split=0.5)``.

    The backbone (:class:`sklearn_cnat.models.FastCNN`, CNAT loss, bf16 where native,
    flip + translate augmentation, one-cycle SGD, flip TTA) trains on the estimator's
    seeded half of the rows ("half A") with ``labels`` (1-D labels with declared
    classes, or vote counts with ``evidence="votes"``), and is frozen; the rows of the
    other half ("half B", ``head_rows_``) never reach it. Returns the head rows, their
    features (batched, as the estimator's head sees them), the test features (served,
    one point at a time), the network's own test top-1 and the timings.
    """
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
    from sklearn_cnat._inference import _forward_per_point
    from sklearn_cnat.models import FastCNN

    pi = "votes" if evidence == "votes" else "onehot"
    clf = CNATClassifier(
        module=FastCNN, module_kwargs=dict(widths=tuple(cfg["widths"]), stem=cfg["stem"], whiten=cfg["whiten"]),
        head="ridge", alpha=1.0,
        budget=NoiseBudgetTransformer(pi=pi, classes=np.arange(K), mapping="flat", radius=cfg["radius"]),
        feature_split=0.5, split_head="disjoint", max_epochs=cfg["extractor_epochs"], batch_size=cfg["extractor_batch"],
        lr=cfg["extractor_lr"], optimizer="sgd",
        optimizer_kwargs={"momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, lr_schedule="onecycle",
        label_smoothing=cfg["extractor_smoothing"], precision="auto", augment="flip_translate", tta=cfg["tta"],
        device=cfg["device"], random_state=cfg["seed"])
    t0 = time.time()
    clf.fit(data["x_train"], labels)
    t_train = time.time() - t0
    t0 = time.time()
    inputs = clf._loader_inputs(clf._prepare_inputs(data["x_test"], fit=False)[0])
    logits, F_t = _forward_per_point(clf.net_.module_, inputs, features=True, tta=clf.tta_)
    t_feat = time.time() - t0
    return dict(rows=np.flatnonzero(clf.head_rows_), F_b=clf.train_features_.astype(np.float32),
                F_t=np.asarray(F_t, np.float32), extractor_top1=np.array(float(np.mean(
                    np.asarray(logits).argmax(1) == data["y_test"]))),
                t_train=np.array(t_train), t_feat=np.array(t_feat))


# --------------------------------------------------------------------------- caching


def _key(**kw):
    return hashlib.sha1(json.dumps(kw, sort_keys=True, default=str).encode()).hexdigest()[:12]


def cached_arrays(path, compute):
    """Load the arrays in ``path`` (.npz) or compute (a dict of arrays) and save them."""
    path = Path(path)
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}, True
    out = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    os.replace(tmp, path)
    return out, False


# --------------------------------------------------------------------------- evaluation


def _onehot(idx, k=K):
    return np.eye(k)[np.asarray(idx, dtype=int)]


def prediction_metrics(proba, y_test):
    """top-1, ECE (15 uniform bins), Brier and NLL on the clean test labels."""
    from sklearn_cnat.metrics import brier_score, expected_calibration_error, nll_score

    labels = np.arange(proba.shape[1])
    return dict(top1=float(np.mean(proba.argmax(1) == y_test)),
                ece=float(expected_calibration_error(y_test, proba, labels=labels)),
                brier=float(brier_score(y_test, proba, labels=labels)),
                nll=float(nll_score(y_test, proba, labels=labels)))


FLIP_MS = (1, 10, 100)
CURVE_SCALES = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _cert_acc(cert, y):
    return float(np.mean(np.asarray(cert.certified) & (np.asarray(cert.prediction) == y)))


# --------------------------------------------------------------------------- heads on fixed features


def standardise(F_train, F_test):
    """Centre and scale by the training features (no labels involved)."""
    mu = F_train.mean(0)
    sd = F_train.std(0) + 1e-6
    return ((F_train - mu) / sd).astype(np.float32), ((F_test - mu) / sd).astype(np.float32)


def certificate_allowance(F, alphas, n_points=256, seed=0):
    """Median floating-point allowance ``tau`` (docs/certificates.md, (C15)) of the ridge
    certificates at each ``alpha``, on ``n_points`` training feature rows (no labels used).

    The allowance is a rigorous first-order bound; it grows as ``alpha`` shrinks relative to
    ``n`` and ``d``, and a point is certified only when its worst-case margin exceeds it.
    """
    from sklearn_cnat.certificates._ridge import _RidgeSystem

    F = np.asarray(F, dtype=np.float64)
    rows = np.random.RandomState(seed).choice(len(F), min(n_points, len(F)), replace=False)
    out = {}
    for a in alphas:
        system = _RidgeSystem(F, float(a), torch.device("cpu"))
        _, tau, _, _ = system.test_side(torch.as_tensor(F[rows]), K)
        out[float(a)] = float(tau.median())
    return out


def choose_alpha(F, pi, grid, allowance=None, tau_max=1e-3):
    """Ridge ``alpha`` by exact leave-one-out cross-validation on the training labels.

    Score of ``alpha``: the LOO agreement ``mean_i pi_i[argmax s_{-i}(f_i)]`` (accuracy against
    the noisy label, or the expected agreement with a random vote). One-standard-error rule
    (Hastie, Tibshirani & Friedman, ESL, sec. 7.10): the *largest* alpha whose score is within
    one standard error of the best, ``se = sd_i(pi_i[argmax]) / sqrt(n)``. When ``allowance``
    ({alpha: median tau}) is given, only alphas with ``tau <= tau_max`` compete (ridge scores
    sum to one and typical margins are 0.05-0.3, so 1e-3 costs about 1 % of a margin); if none
    qualifies, the largest alpha is used. No test data is used.
    Returns (alpha, {alpha: score}).
    """
    from sklearn_cnat._calibration import _ridge_loo_scores
    from sklearn_cnat.certificates._ridge import _ridge_fit

    F = np.asarray(F, dtype=np.float64)
    if allowance is not None:
        feasible = [a for a in grid if allowance[float(a)] <= tau_max]
        grid = feasible or [max(grid)]
    scores, ses = {}, {}
    for a in grid:
        coef, intercept = _ridge_fit(F, pi, float(a))
        loo = _ridge_loo_scores(F, pi, float(a), coef, intercept)
        agree = pi[np.arange(len(pi)), loo.argmax(1)]
        scores[float(a)] = float(agree.mean())
        ses[float(a)] = float(agree.std(ddof=1) / np.sqrt(len(agree)))
    best = max(scores, key=scores.get)
    return max(a for a in scores if scores[a] >= scores[best] - ses[best]), scores


def baseline_estimator(method, cfg, seed):
    from sklearn_cnat.baselines import BaselineClassifier, CleanlabFilterClassifier

    common = dict(module="linear", max_epochs=cfg["head_epochs"], lr=cfg["head_lr"], batch_size=256,
                  optimizer="adamw", optimizer_kwargs={"weight_decay": cfg["head_wd"]}, random_state=seed)
    if method == "cleanlab":
        return CleanlabFilterClassifier(BaselineClassifier(loss="ce", **common), cv=cfg["cleanlab_cv"],
                                        random_state=seed)
    return BaselineClassifier(loss=method, **common)


def cnat_grid(cfg, mode):
    """(pi, geometry, mapping) settings of the CNAT ridge head."""
    settings = cfg["cnat_settings"] if mode != "label_free" else cfg["cnat_settings_label_free"]
    grid = []
    for pi in ("onehot", "votes"):
        for geometry, mapping in settings:
            if pi == "onehot" and mapping == "posterior" and not cfg["full_grid"]:
                continue  # one vote: the posterior ball is nearly the whole simplex (run with --full-grid)
            grid.append((pi, geometry, mapping))
    return grid


def budget_params(pi, geometry, mapping, cfg):
    """NoiseBudgetTransformer kwargs. KL geometries and the posterior mapping need full-support pi:
    a small smoothing, which scales the ridge scores by (1 - eps) and adds eps / K (sum_i h_i = 1),
    so it changes neither predictions nor certificates' sign structure."""
    kw = dict(pi=pi, mapping=mapping, radius=cfg["radius"], c=cfg["linear_c"], r_max=cfg["linear_r_max"],
              hard_fraction=cfg["hard_fraction"], radius_hard=cfg["radius_hard"], radius_easy=cfg["radius_easy"],
              delta=0.05, random_state=0, classes=np.arange(K))
    if geometry != "l1" or mapping == "posterior":
        kw["smoothing"] = cfg["smoothing"]
    return kw


def _evidence(pi, noise, labels, votes):
    """Label evidence for NoiseBudgetTransformer: the setting's label (one-hot pi) or the three votes."""
    return votes if pi == "votes" else labels[noise]


def run_heads(F_train, F_test, y_test, *, noise, labels, votes, cfg, mode, seed, scope, cert_idx):
    """Every method on fixed features. Returns a list of result rows (dicts) and bounded curves."""
    from sklearn_cnat import CNATClassifier
    from sklearn_cnat._calibration import _fit_noise_corrected_temperature, _noise_channel, _ridge_loo_scores
    from sklearn_cnat.budgets import NoiseBudgetTransformer
    from sklearn_cnat.certificates import certify_ridge

    rows, curves, figure_probas = [], [], {}
    F_train, F_test = standardise(F_train, F_test)
    n = len(F_train)
    y_noisy = labels[noise]
    base = dict(mode=mode, noise=noise, n_train=n, n_test=len(y_test), n_certify=len(cert_idx), scope="")

    # ---- baselines: softmax linear heads with their losses
    for method in cfg["baselines"]:
        t0 = time.time()
        est = baseline_estimator(method, cfg, seed).fit(F_train, y_noisy)
        t_train = time.time() - t0
        proba = est.predict_proba(F_test)
        if method == "ce":
            figure_probas["cross-entropy"] = proba
        row = dict(base, method=method, head="softmax", geometry="", pi="onehot", mapping="", alpha="",
                   train_seconds=t_train, certify_seconds="", **prediction_metrics(proba, y_test))
        if method == "cleanlab":
            row["notes"] = f"dropped {int(est.label_issues_.sum())} of {n} ({est.label_issues_.mean():.1%})"
        rows.append(row)
        log(f"  {mode}/{noise} {method}: top1 {row['top1']:.4f} ece {row['ece']:.4f} ({t_train:.0f}s)")

    # ---- cross-entropy with the noise-corrected temperature (same calibration as the CNAT rows)
    if "ce" in cfg["baselines"] and cfg["nc_temperature"]:
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        t0 = time.time()
        est = baseline_estimator("ce", cfg, seed)
        folds = StratifiedKFold(n_splits=cfg["cleanlab_cv"], shuffle=True, random_state=seed)
        cv_logits = cross_val_predict(est, F_train, y_noisy, cv=folds, method="decision_function")
        counts = _onehot(y_noisy)
        channel = _noise_channel(counts, _softmax_t(cv_logits, 1.0))
        t_nc = _fit_noise_corrected_temperature(cv_logits, counts, channel)
        est.fit(F_train, y_noisy)
        proba = _softmax_t(est.decision_function(F_test), t_nc)
        figure_probas["cross-entropy + nc temperature"] = proba
        rows.append(dict(base, method="ce", head="softmax+nc_temperature", geometry="", pi="onehot", mapping="",
                         alpha="", train_seconds=time.time() - t0, certify_seconds="",
                         notes=f"temperature {t_nc:.3g} fitted through the estimated noise channel on "
                               f"{cfg['cleanlab_cv']}-fold CV logits", **prediction_metrics(proba, y_test)))
        log(f"  {mode}/{noise} ce + nc temperature: top1 {rows[-1]['top1']:.4f} ece {rows[-1]['ece']:.4f}")

    # ---- CNAT: ridge head (exact certificates), one fit per nominal pi
    F_cert = F_test[cert_idx]
    y_cert = y_test[cert_idx]
    per_pi = {}
    t0 = time.time()
    alphas = [a * n for a in cfg["alpha_grid"]]
    allowance = certificate_allowance(F_train, alphas)
    t_allow = time.time() - t0
    log(f"  {mode}/{noise} certificate allowance (median tau) per alpha/n: "
        f"{ {round(a / n, 4): float(f'{t:.2g}') for a, t in allowance.items()} } ({t_allow:.0f}s)")
    for pi in ("onehot", "votes"):
        ev = _evidence(pi, noise, labels, votes)
        pi_mat = NoiseBudgetTransformer(pi=pi, classes=np.arange(K)).fit_transform(ev).pi
        t0 = time.time()
        alpha, alpha_scores = choose_alpha(F_train, pi_mat, alphas, allowance)
        t_alpha = time.time() - t0 + t_allow / 2
        t0 = time.time()
        clf = CNATClassifier(head="ridge", alpha=alpha,
                             budget=NoiseBudgetTransformer(pi=pi, classes=np.arange(K))).fit(F_train, ev)
        t_fit = time.time() - t0
        proba = clf.predict_proba(F_test)  # the package's leave-one-out temperature against pi
        metrics = prediction_metrics(proba, y_test)
        calibrated = proba
        loo = _ridge_loo_scores(clf.train_features_, clf.budget_.pi, float(clf.alpha), clf.coef_, clf.intercept_)
        loo_proba = _softmax_t(loo, clf.temperature_)  # out-of-sample probabilities of the training points
        extra = dict(ece_loo_temperature=metrics["ece"], temperature=clf.temperature_)
        if cfg["nc_temperature"]:
            # what CNATClassifier(calibration="noise_corrected") does, reusing this fit's LOO scores
            t0 = time.time()
            counts = clf.budget_.counts
            channel = _noise_channel(counts, loo_proba)
            t_nc = _fit_noise_corrected_temperature(loo, counts, channel)
            calibrated = _softmax_t(clf.decision_function(F_test), t_nc)
            metrics = prediction_metrics(calibrated, y_test)
            extra["temperature"] = t_nc
            t_fit += time.time() - t0
        # tiers that do not depend on the radii: once per nominal
        t0 = time.time()
        stoch = clf.certify(F_cert, tier="stochastic", delta=0.05)
        t_stoch = time.time() - t0
        t0 = time.time()
        flip = clf.certify(F_cert, tier="flip", m=1)
        t_flip = time.time() - t0
        mf = np.asarray(flip.max_flips)
        shared = dict(coverage_stochastic=stoch.coverage, certified_accuracy_stochastic=_cert_acc(stoch, y_cert),
                      median_max_flips=float(np.median(mf)))
        for m in FLIP_MS:
            shared[f"coverage_flip_m{m}"] = float(np.mean(mf >= m))
            shared[f"certified_accuracy_flip_m{m}"] = float(np.mean((mf >= m) & (np.asarray(flip.prediction) == y_cert)))
        per_pi[pi] = dict(clf=clf, alpha=alpha, metrics=dict(metrics, **extra), shared=shared,
                          t_train=t_alpha + t_fit, t_cert=t_stoch + t_flip, ev=ev, loo_proba=loo_proba,
                          stochastic=stoch, flip=flip, proba=calibrated)
        log(f"  {mode}/{noise} cnat ridge pi={pi}: alpha/n {alpha / n:g} (LOO "
            f"{ {round(a / n, 4): round(v, 4) for a, v in alpha_scores.items()} }), top1 "
            f"{metrics['top1']:.4f} ece {metrics['ece']:.4f}; stochastic cov {stoch.coverage:.3f}, "
            f"median flips {shared['median_max_flips']:.0f} ({t_stoch:.0f}+{t_flip:.0f}s)")

    for pi, geometry, mapping in cnat_grid(cfg, mode):
        P = per_pi[pi]
        kw = budget_params(pi, geometry, mapping, cfg)
        transformer = NoiseBudgetTransformer(**kw)
        pred_probs = None
        if pi == "onehot" and mapping in ("linear", "piecewise"):
            # one label carries no disagreement: the evidence score is cleanlab's label quality from
            # out-of-sample probabilities, the calibrated leave-one-out ridge scores
            pred_probs = P["loo_proba"]
        budget = transformer.fit_transform(P["ev"], pred_probs=pred_probs)
        t0 = time.time()
        cert = certify_ridge(P["clf"].train_features_, budget, F_cert, alpha=P["alpha"], tier="bounded",
                             geometry=geometry, scope=scope, radius=False)
        t_b = time.time() - t0
        row = dict(base, method="cnat", head="ridge", geometry=geometry, pi=pi, mapping=mapping,
                   alpha=P["alpha"] / n, mean_r=float(budget.r.mean()), mean_rho=float(budget.rho.mean()),
                   coverage_bounded=cert.coverage, certified_accuracy_bounded=_cert_acc(cert, y_cert),
                   train_seconds=P["t_train"], certify_seconds=P["t_cert"] + t_b, scope=scope,
                   **P["metrics"], **P["shared"])
        rows.append(row)
        log(f"  {mode}/{noise} cnat {pi}/{geometry}/{mapping}: mean r {row['mean_r']:.3f}, bounded cov "
            f"{cert.coverage:.3f} ({t_b:.0f}s)")
        if (geometry, mapping) == ("l1", "flat") or cfg["all_curves"]:
            # one certificate with the exact radius_scale (rounded down) gives the whole curve:
            # a point is certified at scale s iff radius_scale >= s
            t0 = time.time()
            rcert = certify_ridge(P["clf"].train_features_, budget, F_cert, alpha=P["alpha"], tier="bounded",
                                  geometry=geometry, scope=scope, radius=True)
            rs = np.asarray(rcert.radius_scale, dtype=float)
            assert np.array_equal(rs >= 1.0, np.asarray(cert.certified)), "radius_scale disagrees with the certificate"
            correct = np.asarray(rcert.prediction) == y_cert
            for s in CURVE_SCALES:
                holds = rs >= s
                curves.append(dict(mode=mode, noise=noise, method="cnat", geometry=geometry, pi=pi, mapping=mapping,
                                   scale=s, mean_r=float(budget.scaled(s).r.mean()), coverage=float(holds.mean()),
                                   certified_accuracy=float((holds & correct).mean())))
            P.setdefault("radius_certs", {})[(geometry, mapping)] = rcert
            log(f"  bounded curve (radius_scale) for {pi}/{geometry}/{mapping}: {time.time() - t0:.0f}s")

    # ---- CNAT softmax head (trained with the CNAT loss; no certificate engine)
    if cfg["cnat_softmax"]:
        ev = votes
        t0 = time.time()
        clf = CNATClassifier(head="softmax", geometry="l1", max_epochs=cfg["head_epochs"], lr=cfg["head_lr"],
                             batch_size=256, optimizer="adamw", optimizer_kwargs={"weight_decay": cfg["head_wd"]},
                             budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=cfg["radius"],
                                                           classes=np.arange(K)),
                             random_state=seed).fit(F_train, ev)
        t_train = time.time() - t0
        softmax_proba = clf.predict_proba(F_test)
        rows.append(dict(base, method="cnat", head="softmax", geometry="l1", pi="votes", mapping="flat",
                         alpha="", train_seconds=t_train, certify_seconds="",
                         notes="CNAT loss, no certificate engine for a SGD-trained head",
                         **prediction_metrics(softmax_proba, y_test)))
        log(f"  {mode}/{noise} cnat softmax: top1 {rows[-1]['top1']:.4f} ece {rows[-1]['ece']:.4f}")
        figure_probas["CNAT softmax head"] = softmax_proba
        if cfg["nc_temperature"]:
            # same recipe as the cross-entropy row: temperature through the noise channel, fitted on
            # out-of-fold logits of the training set (folds by row; the votes are the labels)
            from sklearn.base import clone
            from sklearn.model_selection import KFold

            t0 = time.time()
            cv_logits = np.zeros((n, K))
            for tr, te in KFold(cfg["cleanlab_cv"], shuffle=True, random_state=seed).split(F_train):
                cv_logits[te] = clone(clf).fit(F_train[tr], ev[tr]).decision_function(F_train[te])
            channel = _noise_channel(ev, _softmax_t(cv_logits, 1.0))
            t_nc = _fit_noise_corrected_temperature(cv_logits, ev, channel)
            proba = _softmax_t(clf.decision_function(F_test), t_nc)
            rows.append(dict(base, method="cnat", head="softmax+nc_temperature", geometry="l1", pi="votes",
                             mapping="flat", alpha="", temperature=t_nc, train_seconds=t_train + time.time() - t0,
                             certify_seconds="",
                             notes=f"CNAT softmax head, temperature {t_nc:.3g} fitted through the estimated noise "
                                   f"channel on {cfg['cleanlab_cv']}-fold CV logits; no certificate engine",
                             **prediction_metrics(proba, y_test)))
            figure_probas["CNAT softmax head + nc temperature"] = proba
            log(f"  {mode}/{noise} cnat softmax + nc temperature: top1 {rows[-1]['top1']:.4f} "
                f"ece {rows[-1]['ece']:.4f}")
    if cfg.get("figures_out"):
        certs = {pi: dict(stochastic=P["stochastic"], flip=P["flip"], bounded=P.get("radius_certs", {}).get(("l1", "flat")))
                 for pi, P in per_pi.items()}
        for pi, P in per_pi.items():
            figure_probas[f"CNAT ridge head, pi {pi}"] = P["proba"]
        plot_run_figures(Path(cfg["figures_out"]), mode, noise, certs, figure_probas, y_test, y_cert,
                         radius=cfg["radius"])
    return rows, curves


def _softmax_t(scores, t):
    from scipy.special import softmax

    return softmax(np.asarray(scores, dtype=np.float64) / t, axis=1)


# --------------------------------------------------------------------------- modes


def _cert_subset(y_test, n_certify):
    """Test points certified: all, or ``n_certify`` spread evenly (class shares kept)."""
    n = len(y_test)
    if not n_certify or n_certify >= n:
        return np.arange(n)
    order = np.argsort(y_test, kind="stable")
    return np.sort(order[np.linspace(0, n - 1, n_certify).round().astype(int)])


def split_features(data, ext_noise, cfg):
    """Cached :func:`split_extractor` arrays (``ext_noise``: the labels of half A); (arrays, cache hit)."""
    key = _key(kind="split_estimator", src=data["source"], noise=ext_noise, epochs=cfg["extractor_epochs"],
               widths=cfg["widths"], stem=cfg["stem"], seed=cfg["seed"], lr=cfg["extractor_lr"],
               bs=cfg["extractor_batch"], smoothing=cfg["extractor_smoothing"], radius=cfg["radius"],
               n_test=len(data["y_test"]),
               **({"whiten": True} if cfg["whiten"] else {}), **({} if cfg["tta"] == "flip" else {"tta": cfg["tta"]}))

    def compute():
        log(f"split: training the extractor (CNATClassifier(feature_split=0.5), FastCNN {tuple(cfg['widths'])}) "
            f"on half A of {len(data['x_train'])} images, {ext_noise} labels, {cfg['extractor_epochs']} epochs")
        out = split_extractor(data, data["labels"][ext_noise], cfg)
        log(f"split: extractor test top-1 {float(out['extractor_top1']):.4f} (its own head), train "
            f"{float(out['t_train']):.0f}s, test features {float(out['t_feat']):.0f}s")
        return out

    return cached_arrays(Path(cfg["cache"]) / f"split_{ext_noise}_{key}.npz", compute)


def run_split(data, noise, cfg, meta):
    """Extractor trained on half A with half A's labels of the setting (:func:`split_extractor`); heads on half B."""
    ext_noise = noise if cfg["extractor_labels"] == "same" else cfg["extractor_labels"]
    arrays, hit = split_features(data, ext_noise, cfg)
    idx_b = np.asarray(arrays["rows"])
    meta.setdefault("split", {})[noise] = dict(
        extractor="CNATClassifier(module=FastCNN, feature_split=0.5) (benchmarks/cifar10n.py split_extractor)",
        extractor_labels=ext_noise, half_a=int(len(data["x_train"]) - len(idx_b)), half_b=int(len(idx_b)),
        extractor_test_top1=float(arrays["extractor_top1"]), extractor_train_seconds=float(arrays["t_train"]),
        feature_seconds=float(arrays["t_feat"]), cached=hit, feature_dim=int(arrays["F_b"].shape[1]))
    labels_b = {k: v[idx_b] for k, v in data["labels"].items()}
    cert_idx = _cert_subset(data["y_test"], cfg["n_certify"])
    return run_heads(arrays["F_b"], arrays["F_t"], data["y_test"], noise=noise, labels=labels_b,
                     votes=data["votes"][idx_b], cfg=cfg, mode="split", seed=cfg["seed"], scope="model",
                     cert_idx=cert_idx)


def label_free_features(data, cfg, meta):
    from sklearn_cnat.features import KMeansPatchFeatures

    key = _key(kind="kmeans", src=data["source"], k=cfg["centroids"], patches=cfg["n_patches"], seed=cfg["seed"],
               n_test=len(data["y_test"]))

    def compute():
        log(f"label_free: k-means patch features, {cfg['centroids']} centroids")
        t0 = time.time()
        feat = KMeansPatchFeatures(n_centroids=cfg["centroids"], n_patches=cfg["n_patches"],
                                   random_state=cfg["seed"]).fit(data["x_train"])
        t_fit = time.time() - t0
        t0 = time.time()
        F_tr, F_te = feat.transform(data["x_train"]), feat.transform(data["x_test"])
        t_tr = time.time() - t0
        log(f"label_free: fit {t_fit:.0f}s, transform {t_tr:.0f}s, dim {F_tr.shape[1]}")
        return dict(F_tr=F_tr, F_te=F_te, t_fit=np.array(t_fit), t_transform=np.array(t_tr))

    arrays, hit = cached_arrays(Path(cfg["cache"]) / f"kmeans_{key}.npz", compute)
    meta["label_free"] = dict(centroids=cfg["centroids"], feature_dim=int(arrays["F_tr"].shape[1]),
                              fit_seconds=float(arrays["t_fit"]), transform_seconds=float(arrays["t_transform"]),
                              cached=hit)
    return arrays


def run_label_free(data, noise, cfg, meta):
    arrays = label_free_features(data, cfg, meta)
    cert_idx = _cert_subset(data["y_test"], cfg["n_certify_label_free"])
    return run_heads(arrays["F_tr"], arrays["F_te"], data["y_test"], noise=noise, labels=data["labels"],
                     votes=data["votes"], cfg=cfg, mode="label_free", seed=cfg["seed"], scope="model",
                     cert_idx=cert_idx)


def run_end_to_end(data, noise, cfg, meta, mode):
    """``cnn`` / ``gpu``: each loss trains the whole network; CNAT certifies its ridge head (scope "head")
    and partition aggregation certifies the whole model (tier flip)."""
    from sklearn_cnat import CNATClassifier, PartitionAggregationClassifier
    from sklearn_cnat.baselines import BaselineClassifier, CleanlabFilterClassifier
    from sklearn_cnat.budgets import NoiseBudgetTransformer
    from sklearn_cnat.models import SmallCNN, resnet18

    rng = np.random.RandomState(cfg["seed"])
    n_all = len(data["x_train"])
    n_sub = min(cfg["cnn_subset"] or n_all, n_all)
    idx = np.sort(rng.permutation(n_all)[:n_sub])
    x = data["x_train"][idx]
    labels = {k: v[idx] for k, v in data["labels"].items()}
    votes = data["votes"][idx]
    y_test = data["y_test"]
    module = resnet18 if mode == "gpu" else SmallCNN
    net_kw = dict(max_epochs=cfg["cnn_epochs"], lr=cfg["cnn_lr"], batch_size=128, optimizer="adamw",
                  optimizer_kwargs={"weight_decay": 5e-4}, device=cfg["device"], random_state=cfg["seed"])
    if mode == "cnn":
        net_kw["module_kwargs"] = {"width": cfg["cnn_width"]}
    base = dict(mode=mode, noise=noise, n_train=n_sub, n_test=len(y_test), scope="")
    rows = []
    cert_idx = _cert_subset(y_test, cfg["n_certify"])
    y_cert = y_test[cert_idx]

    def evaluate(est):
        return prediction_metrics(est.predict_proba(data["x_test"]), y_test)

    for method in cfg["baselines"]:
        t0 = time.time()
        if method == "cleanlab":
            est = CleanlabFilterClassifier(BaselineClassifier(module, loss="ce", **net_kw), cv=3,
                                           random_state=cfg["seed"])  # 3 folds: each fold trains a network
        else:
            est = BaselineClassifier(module, loss=method, **net_kw)
        est.fit(x, labels[noise])
        rows.append(dict(base, method=method, head="softmax", pi="onehot", train_seconds=time.time() - t0,
                         **evaluate(est)))
        log(f"  {mode}/{noise} {method}: top1 {rows[-1]['top1']:.4f} ({rows[-1]['train_seconds']:.0f}s)")

    for pi in ("onehot", "votes"):
        ev = votes if pi == "votes" else labels[noise]
        transformer = NoiseBudgetTransformer(pi=pi, mapping="flat", radius=cfg["radius"], classes=np.arange(K))
        t0 = time.time()
        clf = CNATClassifier(module, head="ridge", alpha=float(n_sub), geometry="l1", budget=transformer,
                             **net_kw).fit(x, ev)
        t_train = time.time() - t0
        t0 = time.time()
        xc = data["x_test"][cert_idx]
        stoch = clf.certify(xc, tier="stochastic", delta=0.05)
        bounded = clf.certify(xc, tier="bounded")
        flip = clf.certify(xc, tier="flip", m=1)
        mf = np.asarray(flip.max_flips)
        row = dict(base, method="cnat", head="ridge", geometry="l1", pi=pi, mapping="flat", alpha=1.0,
                   mean_r=cfg["radius"], scope="head", train_seconds=t_train, certify_seconds=time.time() - t0,
                   n_certify=len(cert_idx), coverage_stochastic=stoch.coverage,
                   certified_accuracy_stochastic=_cert_acc(stoch, y_cert), coverage_bounded=bounded.coverage,
                   certified_accuracy_bounded=_cert_acc(bounded, y_cert), median_max_flips=float(np.median(mf)),
                   notes="network trained end-to-end with the CNAT loss; certificates cover the ridge head "
                         "on the learned features (scope head)", **evaluate(clf))
        for m in FLIP_MS:
            row[f"coverage_flip_m{m}"] = float(np.mean(mf >= m))
            row[f"certified_accuracy_flip_m{m}"] = float(np.mean((mf >= m) & (np.asarray(flip.prediction) == y_cert)))
        rows.append(row)
        log(f"  {mode}/{noise} cnat ridge pi={pi}: top1 {row['top1']:.4f}, stochastic cov "
            f"{row['coverage_stochastic']:.3f}, bounded cov {row['coverage_bounded']:.3f}")

    # partition aggregation: whole-model certificates (tier flip), k base CNAT networks
    k = cfg["partitions"]
    t0 = time.time()
    base_est = CNATClassifier(module, head="softmax", geometry="l1",
                              budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=cfg["radius"],
                                                            classes=np.arange(K)), **net_kw)
    dpa = PartitionAggregationClassifier(base_est, n_partitions=k).fit(x, votes)
    t_train = time.time() - t0
    t0 = time.time()
    counts = dpa.vote_counts(data["x_test"])
    proba = (counts + 1e-3) / (counts + 1e-3).sum(1, keepdims=True)
    flip = dpa.certify(data["x_test"][cert_idx], tier="flip", m=1)
    mf = np.asarray(flip.max_flips)
    row = dict(base, method="cnat", head=f"partition_k{k}", geometry="l1", pi="votes", mapping="flat",
               scope="model", train_seconds=t_train, certify_seconds=time.time() - t0, n_certify=len(cert_idx),
               median_max_flips=float(np.median(mf)),
               notes=f"{k} CNAT base networks on a hash partition; probabilities are vote shares",
               **prediction_metrics(proba, y_test))
    for m in FLIP_MS:
        row[f"coverage_flip_m{m}"] = float(np.mean(mf >= m))
        row[f"certified_accuracy_flip_m{m}"] = float(np.mean((mf >= m) & (np.asarray(flip.prediction) == y_cert)))
    rows.append(row)
    log(f"  {mode}/{noise} partition k={k}: top1 {row['top1']:.4f}, median flips {row['median_max_flips']}")
    meta.setdefault(mode, {})[noise] = dict(subset=n_sub, epochs=cfg["cnn_epochs"], partitions=k)
    return rows, []


# --------------------------------------------------------------------------- output

COLUMNS = ["mode", "noise", "method", "head", "geometry", "pi", "mapping", "alpha", "mean_r", "mean_rho",
           "top1", "ece", "brier", "nll", "ece_loo_temperature", "temperature", "coverage_stochastic", "certified_accuracy_stochastic",
           "coverage_bounded", "certified_accuracy_bounded",
           *[f"{p}_flip_m{m}" for m in FLIP_MS for p in ("coverage", "certified_accuracy")],
           "median_max_flips", "train_seconds", "certify_seconds", "scope", "n_train", "n_test", "n_certify",
           "notes"]
CURVE_COLUMNS = ["mode", "noise", "method", "geometry", "pi", "mapping", "scale", "mean_r", "coverage",
                 "certified_accuracy"]


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def _merge_csv(path, new_rows, columns, replace_keys):
    """Rows of ``path`` whose (mode, noise) is not in ``replace_keys``, then ``new_rows``."""
    old = []
    if path.exists():
        with path.open() as fh:
            old = [r for r in csv.DictReader(fh) if (r["mode"], r["noise"]) not in replace_keys]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in old + new_rows:
            w.writerow({c: _fmt(r.get(c, "")) for c in columns})
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _pct(v, digits=1):
    return "" if v in ("", None) else f"{100 * float(v):.{digits}f}"


def write_markdown(path, rows, meta):
    lines = ["# CIFAR-10N benchmark results", "",
             "Generated by `benchmarks/cifar10n.py`; numbers in percent except times (seconds) and flips. "
             "Certificates on `n_certify` test points, predictions on the full test set. "
             "Baselines have no certificate engine (blank).", ""]
    head = ["mode", "noise", "method", "head", "geometry", "pi", "mapping", "top-1", "ECE", "Brier", "NLL",
            "cov. stoch.", "cert. acc. stoch.", "cov. bounded", "cert. acc. bounded", "cov. flip m=1",
            "m=10", "m=100", "median flips", "train s", "certify s"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in rows:
        cells = [r["mode"], r["noise"], r["method"], r["head"], r["geometry"], r["pi"], r["mapping"],
                 _pct(r["top1"], 2), _pct(r["ece"], 2), f"{float(r['brier']):.4f}" if r["brier"] else "",
                 f"{float(r['nll']):.4f}" if r["nll"] else "", _pct(r["coverage_stochastic"]),
                 _pct(r["certified_accuracy_stochastic"]),
                 *(["trivial*", "trivial*"] if _kl_trivial(r) else
                   [_pct(r["coverage_bounded"]), _pct(r["certified_accuracy_bounded"])]),
                 _pct(r["coverage_flip_m1"]), _pct(r["coverage_flip_m10"]),
                 _pct(r["coverage_flip_m100"]), r["median_max_flips"] and f"{float(r['median_max_flips']):.0f}",
                 r["train_seconds"] and f"{float(r['train_seconds']):.0f}",
                 r["certify_seconds"] and f"{float(r['certify_seconds']):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "*KL (and KL-and-l1) sets around a one-hot pi hold only that vertex: the bounded tier there "
              "certifies against no change, so its coverage is not shown beside l1 coverage (the CSV keeps it)."]
    lines += ["", "Run information:", "", "```json", json.dumps(meta, indent=1, sort_keys=True, default=str), "```", ""]
    path.write_text("\n".join(lines))


BASELINES = ("ce", "label_smoothing", "gce", "elr", "cleanlab")
_NAMES = {"ce": "cross-entropy", "label_smoothing": "label smoothing", "gce": "GCE", "elr": "ELR",
          "cleanlab": "cleanlab filter + CE"}


def _row_name(r):
    if r["method"] != "cnat":
        return _NAMES[r["method"]] + (" + nc temperature" if r["head"] == "softmax+nc_temperature" else "")
    if r["head"] == "ridge":
        return f"CNAT ridge, pi {r['pi']}, {r['geometry']} {r['mapping']}"
    if r["head"].startswith("partition"):
        return f"CNAT partition aggregation (k = {r['head'].split('_k')[-1]})"
    return "CNAT softmax head" + (" + nc temperature" if r["head"] == "softmax+nc_temperature" else "")


def _f(r, col):
    v = r.get(col, "")
    return float(v) if v not in ("", None) else math.nan


def _kl_trivial(row):
    """KL (or KL and l1) sets around one-hot pi: each set is a single point."""
    return row["pi"] == "onehot" and row["geometry"] in ("kl", "kl_l1")


def _table(head, body):
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    return out + [""]


def target_checks(rows, mode="split", noise="aggre"):
    """The issue's four targets evaluated on one (mode, noise) run: list of (target, measured, met)."""
    sel = [r for r in rows if (r["mode"], r["noise"]) == (mode, noise)]
    base = [r for r in sel if r["method"] in BASELINES and r["head"] == "softmax"]
    if not base:
        return []
    best = max(base, key=lambda r: _f(r, "top1"))
    ce = [r for r in base if r["method"] == "ce"][0]
    ridge = {r["pi"]: r for r in sel if r["head"] == "ridge" and (r["geometry"], r["mapping"]) == ("l1", "flat")}
    soft = [r for r in sel if r["method"] == "cnat" and r["head"] == "softmax+nc_temperature"]
    checks = []
    cands = [("CNAT ridge (certified), pi " + pi, r) for pi, r in sorted(ridge.items())]
    cands += [("CNAT softmax head + nc temperature (not certified)", r) for r in soft]
    for name, r in cands:
        gap = 100 * (_f(best, "top1") - _f(r, "top1"))
        checks.append((f"top-1 within 0.5 of the best baseline: {name}",
                       f"{100 * _f(r, 'top1'):.2f} vs {100 * _f(best, 'top1'):.2f} ({_NAMES[best['method']]}): "
                       f"{'%.2f behind' % gap if gap > 0 else '%.2f ahead' % -gap}", gap <= 0.5))
    for name, r in cands:
        red = 1 - _f(r, "ece") / _f(ce, "ece")
        checks.append((f"ECE at least 30 % below cross-entropy: {name}",
                       f"{100 * _f(r, 'ece'):.2f} vs {100 * _f(ce, 'ece'):.2f}: "
                       f"{100 * abs(red):.0f} % {'lower' if red >= 0 else 'higher'}", red >= 0.3))
    if "votes" in ridge:
        r = ridge["votes"]
        checks.append(("stochastic coverage >= 75 % at top-1 >= 77 % (delta 0.05, votes)",
                       f"{100 * _f(r, 'coverage_stochastic'):.1f} % at {100 * _f(r, 'top1'):.2f} %",
                       _f(r, "coverage_stochastic") >= 0.75 and _f(r, "top1") >= 0.77))
    for pi, r in sorted(ridge.items()):
        checks.append((f"bounded coverage >= 60 % at flat l1 radius 0.05, pi {pi}",
                       f"{100 * _f(r, 'coverage_bounded'):.1f} %", _f(r, "coverage_bounded") >= 0.6))
    return checks


def write_paper_tables(path, rows, runs):
    """The paper's tables (1: main, 3: calibration, 4: pi x geometry, 5: radius mapping), the
    targets and the wall times, as markdown generated from the results (no number typed in)."""
    order = {m: i for i, m in enumerate(("split", "label_free", "cnn", "gpu"))}
    rows = sorted(rows, key=lambda r: (order.get(r["mode"], 9), NOISES.index(r["noise"]) if r["noise"] in NOISES
                                       else 9))  # stable: keeps the method order within a run
    L = ["<!-- generated by benchmarks/cifar10n.py from cifar10n_results.csv; do not edit -->", ""]
    checks = target_checks(rows)
    if checks:
        L += ["**Targets** (split mode, aggre, same run):", ""]
        L += _table(["target", "measured", "met?"], [[t, m, "yes" if ok else "**no**"] for t, m, ok in checks])
    # Table 1: main, every (mode, noise)
    L += ["**Table 1 (main).** Top-1 and ECE on the clean test set; coverage at delta = 0.05 (stochastic) and "
          "flat l1 radius 0.05 (bounded), percent.", ""]
    body = []
    for r in rows:
        if r["method"] == "cnat" and r["head"] == "ridge" and (r["geometry"], r["mapping"]) != ("l1", "flat"):
            continue
        body.append([r["mode"], r["noise"], _row_name(r), _pct(r["top1"], 2), _pct(r["ece"], 2),
                     _pct(r["coverage_stochastic"]), _pct(r["coverage_bounded"]), _pct(r["coverage_flip_m10"]),
                     r["scope"] or ""])
    L += _table(["mode", "noise", "method", "top-1", "ECE", "cov. stochastic", "cov. bounded", "cov. flip m=10",
                 "scope"], body)
    split = [r for r in rows if (r["mode"], r["noise"]) == ("split", "aggre")]
    if split:
        L += ["**Table 3 (calibration)**, split / aggre: ECE (15 bins), Brier, NLL on the clean test set.", ""]
        seen, body = set(), []
        for r in split:
            name = _row_name(r) if r["head"] != "ridge" else f"CNAT ridge, pi {r['pi']}"
            if name in seen:
                continue
            seen.add(name)
            body.append([name, _pct(r["top1"], 2), _pct(r["ece"], 2), f"{_f(r, 'brier'):.4f}", f"{_f(r, 'nll'):.4f}"])
        L += _table(["method", "top-1", "ECE", "Brier", "NLL"], body)
        L += ["**Table 4 (pi source x geometry)**, split / aggre, flat radius 0.05 (KL: rho = r^2 / 2).", ""]
        body = [[r["pi"], r["geometry"], _pct(r["top1"], 2), _pct(r["ece"], 2), _pct(r["coverage_stochastic"]),
                 *(["trivial*", "trivial*"] if _kl_trivial(r) else
                   [_pct(r["coverage_bounded"]), _pct(r["certified_accuracy_bounded"])]),
                 f"{_f(r, 'median_max_flips'):.0f}"]
                for r in split if r["head"] == "ridge" and r["mapping"] == "flat"]
        L += _table(["pi", "geometry", "top-1", "ECE", "cov. stochastic", "cov. bounded", "cert. acc. bounded",
                     "median flips"], body)
        L += ["*A KL ball around a one-hot pi holds only that vertex, so the bounded tier there certifies "
              "against no change at all; its coverage is not comparable with l1 coverage and is not shown.", ""]
        L += ["**Table 5 (radius mapping)**, split / aggre, geometry l1 (KL for the posterior rows where noted).", ""]
        body = [[r["pi"], r["geometry"], r["mapping"], f"{_f(r, 'mean_r'):.3f}", _pct(r["coverage_bounded"]),
                 _pct(r["certified_accuracy_bounded"])]
                for r in split if r["head"] == "ridge" and (r["geometry"] == "l1" or r["mapping"] == "posterior")]
        L += _table(["pi", "geometry", "mapping", "mean l1 radius", "cov. bounded", "cert. acc. bounded"], body)
    L += ["**Wall times** (seconds, from cifar10n_runs.json; `cached`: features read from the cache).", ""]
    body = []
    for key in sorted(runs):
        run = runs[key]
        mode, noise = key.split("/")
        info = run.get(mode, {}).get(noise, {}) if mode in ("split", "cnn", "gpu") else run.get(mode, {})
        ext = info.get("extractor_train_seconds")
        body.append([key, f"{run.get('wall_seconds', {}).get(key, math.nan):.0f}", str(info.get("cached", "")),
                     "" if ext is None else f"{ext:.0f}", f"`{run.get('command', '')}`"])
    L += _table(["run", "wall s", "cached", "extractor train s", "command"], body)
    path.write_text("\n".join(L))


RELIABILITY_SHOWN = ("cross-entropy", "cross-entropy + nc temperature", "CNAT ridge head, pi votes",
                     "CNAT softmax head + nc temperature")


def plot_run_figures(out, mode, noise, certs, probas, y_test, y_cert, *, radius):
    """Per-run figures through the package's Display API.

    ``cifar10n_<mode>_<noise>_coverage.png``: coverage (solid) and certified accuracy (dashed) of
    the CNAT ridge heads against delta (tier stochastic), the budget scale (tier bounded, flat l1
    ``radius`` x scale) and m (tier flip), one line per nominal pi.
    ``cifar10n_<mode>_<noise>_reliability.png``: reliability diagrams on the clean test set.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sklearn_cnat.display import CoverageDisplay, ReliabilityDisplay

    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, tier, grid in ((axes[0], "stochastic", None), (axes[1], "bounded", np.linspace(0, 4, 41)),
                           (axes[2], "flip", None)):
        for pi, c in certs.items():
            if c.get(tier) is not None:
                CoverageDisplay.from_certificate(c[tier], y_cert, grid=grid, name=f"ridge, pi {pi}", ax=ax)
        ax.set_title(f"{mode}/{noise}, tier {tier}")
    axes[0].axvline(0.05, color="gray", linewidth=0.8, linestyle=":")  # the reported operating points
    axes[1].axvline(1.0, color="gray", linewidth=0.8, linestyle=":")
    axes[1].set_xlabel(f"budget scale (flat l1 radius {radius} x scale)")
    fig.tight_layout()
    fig.savefig(out / f"cifar10n_{mode}_{noise}_coverage.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    for name in RELIABILITY_SHOWN:
        if name in probas:
            ReliabilityDisplay.from_predictions(y_test, probas[name], name=name, ax=ax)
    ax.set_title(f"{mode}/{noise}: reliability on the clean test set")
    fig.tight_layout()
    fig.savefig(out / f"cifar10n_{mode}_{noise}_reliability.png", dpi=110)
    plt.close(fig)


def plot_figures(out, rows, curves):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # coverage of tier bounded against the budget scale
    groups = {}
    for c in curves:
        groups.setdefault((c["mode"], c["noise"], c["pi"], c["geometry"], c["mapping"]), []).append(c)
    if groups:
        fig, ax = plt.subplots(figsize=(5.5, 4))
        for (mode, noise, pi, geom, mapping), cs in sorted(groups.items()):
            cs = sorted(cs, key=lambda c: float(c["scale"]))
            ax.plot([float(c["mean_r"]) for c in cs], [float(c["coverage"]) for c in cs], "o-",
                    label=f"{mode}/{noise} {pi} {geom} {mapping}")
        ax.set_xlabel("mean l1 radius (flat radius x scale)")
        ax.set_ylabel("coverage, tier bounded")
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "cifar10n_bounded_coverage.png", dpi=120)
        plt.close(fig)
        written.append("cifar10n_bounded_coverage.png")
    # top-1 and ECE per method: one figure per mode, one colour per noise setting
    for mode in sorted({r["mode"] for r in rows}):
        sel_mode = [r for r in rows if r["mode"] == mode and r["top1"]]
        fig, axes = plt.subplots(1, 2, figsize=(10, 1.0 + 0.22 * len(sel_mode)))
        for noise in [n for n in NOISES if any(r["noise"] == n for r in sel_mode)]:
            seen, names, top1, ece = set(), [], [], []
            for r in (r for r in sel_mode if r["noise"] == noise):
                # CNAT ridge rows share predictions across geometries/mappings: one bar per (head, pi)
                name = r["method"] if r["head"] == "softmax" and r["method"] != "cnat" else \
                    f"{r['method']} {r['head']}" + (f" pi={r['pi']}" if r["method"] == "cnat" else "")
                if name in seen:
                    continue
                seen.add(name)
                names.append(f"{noise}: {name}")
                top1.append(100 * float(r["top1"]))
                ece.append(100 * float(r["ece"]))
            axes[0].barh(names, top1, label=noise)
            axes[1].barh(names, ece)
        axes[0].set_xlabel("top-1 on the clean test set (%)")
        axes[1].set_xlabel("ECE (%), 15 bins")
        axes[1].set_yticks([])
        tops = [100 * float(r["top1"]) for r in sel_mode]
        axes[0].set_xlim(max(0, min(tops) - 5), min(100, max(tops) + 2))
        axes[0].set_title(f"mode {mode}")
        fig.tight_layout()
        name = f"cifar10n_{mode}_accuracy_calibration.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


# --------------------------------------------------------------------------- main


def extractor_config(quick, epochs=None):
    """Settings of :func:`split_extractor` (and its cache key), shared with benchmarks/certified_peers.py."""
    return dict(extractor_epochs=epochs or (1 if quick else 16), extractor_lr=0.05 if quick else 0.1,
                extractor_batch=64 if quick else 256, extractor_smoothing=0.2,
                widths=(8, 16, 32) if quick else (64, 256, 256), stem=8 if quick else 24, whiten=True, tta="flip")


def config(args):
    quick = args.quick
    cfg = dict(
        seed=args.seed, device=args.device, cache=args.cache, n_certify=args.n_certify,
        n_certify_label_free=2000 if args.n_certify is None else args.n_certify,
        **extractor_config(quick, args.extractor_epochs),
        extractor_labels=args.extractor_labels,
        head_epochs=10 if quick else 30, head_lr=1e-2 if quick else 1e-3, head_wd=1e-4, cleanlab_cv=3 if quick else 5,
        baselines=[m for m in ("ce", "label_smoothing", "gce", "elr", "cleanlab") if m in args.methods],
        alpha_grid=(0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0) if not quick else (0.1, 1.0),
        nc_temperature=not args.no_nc_temperature,
        radius=0.05, linear_c=0.15, linear_r_max=0.2, hard_fraction=0.4, radius_hard=0.1, radius_easy=0.02,
        smoothing=0.01,
        cnat_settings=[("l1", "flat"), ("l1", "linear"), ("l1", "piecewise"), ("l1", "posterior"),
                       ("kl", "flat"), ("kl_l1", "flat"), ("kl", "posterior"), ("kl_l1", "posterior")] if not quick else
                      [("l1", "flat"), ("l1", "linear"), ("kl_l1", "posterior")],
        cnat_settings_label_free=[("l1", "flat"), ("l1", "linear"), ("kl", "flat")] if not quick else
                                 [("l1", "flat"), ("kl_l1", "posterior")],
        full_grid=args.full_grid, all_curves=args.all_curves, cnat_softmax="cnat" in args.methods,
        centroids=args.centroids or (8 if quick else 512), n_patches=2000 if quick else 200_000,
        cnn_subset=args.cnn_subset or (200 if quick else 5000), cnn_epochs=args.cnn_epochs or (1 if quick else 15),
        cnn_lr=2e-3, cnn_width=4 if quick else 32, partitions=args.partitions, figures_out=args.out,
    )
    if "cnat" not in args.methods:
        cfg["cnat_settings"] = cfg["cnat_settings_label_free"] = []
    return cfg


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", nargs="+", choices=MODES, default=["split"])
    p.add_argument("--noise", nargs="+", choices=NOISES, default=["aggre"])
    p.add_argument("--methods", nargs="+", default=["ce", "label_smoothing", "gce", "elr", "cleanlab", "cnat"],
                   choices=["ce", "label_smoothing", "gce", "elr", "cleanlab", "cnat"])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--synthetic", action="store_true", help="tiny synthetic data (no files needed)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--n-train", type=int, default=None, help="training subset (stratified)")
    p.add_argument("--n-test", type=int, default=None, help="test subset (class shares kept)")
    p.add_argument("--n-certify", type=int, default=None,
                   help="test points certified (0: all; default: all, 2000 in mode label_free)")
    p.add_argument("--no-nc-temperature", action="store_true",
                   help="report the ridge head with the package's leave-one-out temperature only")
    p.add_argument("--extractor-epochs", type=int, default=None)
    p.add_argument("--extractor-labels", default="same", choices=["same", *NOISES],
                   help="labels of half A that train the split-mode extractor ('same': the setting's)")
    p.add_argument("--centroids", type=int, default=None)
    p.add_argument("--cnn-subset", type=int, default=None)
    p.add_argument("--cnn-epochs", type=int, default=None)
    p.add_argument("--partitions", type=int, default=10)
    p.add_argument("--full-grid", action="store_true", help="also one-hot pi with the posterior mapping")
    p.add_argument("--all-curves", action="store_true", help="bounded-coverage curve for every CNAT setting")
    p.add_argument("--quick", action="store_true", help="CI-sized settings")
    p.add_argument("--rebuild", action="store_true",
                   help="run nothing: rewrite the markdown tables and summary figures from the CSVs in --out")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.rebuild:
        return rebuild(Path(args.out))
    cfg = config(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but torch.cuda.is_available() is False")
    t_start = time.time()
    if args.synthetic:
        data = synthetic_data(n_train=args.n_train or 400, n_test=args.n_test or 200, seed=args.seed)
    else:
        if not (Path(args.data) / "cifar10.npz").exists():
            raise SystemExit(f"CIFAR-10N not found in {args.data} (see ../shared/data/cifar10n/README.md); "
                             "use --synthetic for a run without data")
        data = load_data(args.data, n_train=args.n_train, n_test=args.n_test, seed=args.seed)
    meta = dict(command="python benchmarks/cifar10n.py " + " ".join(sys.argv[1:] if argv is None else argv),
                data=data["source"], machine=_machine(), torch=torch.__version__, threads=torch.get_num_threads(),
                config={k: v for k, v in cfg.items() if k != "cache"})
    rows, curves, keys = [], [], set()
    runners = {"split": run_split, "label_free": run_label_free}
    for mode in args.mode:
        for noise in args.noise:
            t0 = time.time()
            log(f"=== {mode} / {noise}")
            if mode in runners:
                r, c = runners[mode](data, noise, cfg, meta)
            else:
                r, c = run_end_to_end(data, noise, cfg, meta, mode)
            rows += r
            curves += c
            keys.add((mode, noise))
            meta.setdefault("wall_seconds", {})[f"{mode}/{noise}"] = round(time.time() - t0, 1)
            log(f"=== {mode} / {noise} done in {time.time() - t0:.0f}s")
    meta["total_wall_seconds"] = round(time.time() - t_start, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    all_rows = _merge_csv(out / "cifar10n_results.csv", rows, COLUMNS, keys)
    all_curves = _merge_csv(out / "cifar10n_bounded_curve.csv", curves, CURVE_COLUMNS, keys)
    meta_path = out / "cifar10n_runs.json"
    runs = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    for mode, noise in keys:
        runs[f"{mode}/{noise}"] = dict(meta, rows=sum(1 for r in rows if (r["mode"], r["noise"]) == (mode, noise)))
    meta_path.write_text(json.dumps(runs, indent=1, sort_keys=True, default=str))
    write_markdown(out / "cifar10n_results.md", all_rows, runs)
    write_paper_tables(out / "cifar10n_paper_tables.md", all_rows, runs)
    figs = plot_figures(out, all_rows, all_curves)
    log(f"wrote {out / 'cifar10n_results.csv'} ({len(all_rows)} rows), cifar10n_results.md, {', '.join(figs)}; "
        f"total {time.time() - t_start:.0f}s")
    return all_rows, all_curves


def rebuild(out):
    """Rewrite cifar10n_results.md, cifar10n_paper_tables.md and the summary figures from the CSVs."""
    with (out / "cifar10n_results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    curves = []
    if (out / "cifar10n_bounded_curve.csv").exists():
        with (out / "cifar10n_bounded_curve.csv").open() as fh:
            curves = list(csv.DictReader(fh))
    runs = json.loads((out / "cifar10n_runs.json").read_text())
    write_markdown(out / "cifar10n_results.md", rows, runs)
    write_paper_tables(out / "cifar10n_paper_tables.md", rows, runs)
    plot_figures(out, rows, curves)
    return rows, curves


def _machine():
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs"


if __name__ == "__main__":
    main()
