"""The strong path through the estimator on CIFAR-10N: throughput, end to end, split mode.

Everything runs through ``CNATClassifier`` (no training loop, network or TTA of its own):

``throughput``
    Images per second of one SGD train step at batch 256, channels-last, float32 against
    bfloat16 autocast, for every shipped backbone (``FastCNN``, ``SmallCNN``, ``resnet18``).
``e2e``
    ``FastCNN`` trained end to end with the CNAT loss on all training images (evidence: the
    three CIFAR-10N annotations as vote counts, ``pi`` their mean, flat l1 radius 0.05),
    seeded flip/translate augmentation, one-cycle schedule, ``--tta`` views (flip or six-view
    multi-crop) and ``--ema`` weight averaging (off by default; ``--mode select`` chooses them on
    training labels); clean test top-1 of the network's own logits and of the ridge head.
``trial``
    ``FastCNN`` with and without its patch-whitening stem (``head="softmax"``, the e2e
    recipe, ``--n-train`` images), each network's own test top-1 with no TTA, flip and
    flip-translate views (batched evaluation): a quick comparison, not a choice of defaults
    (it reads test labels).
``select``
    The choice of the e2e settings, on training labels only: a seeded, stratified
    ``--holdout`` of the training rows is set aside, one network is trained per
    ``--select-labels`` choice (the three annotations as votes, or the one-hot ``aggre``
    label) on the rest, and each is scored by agreement with the held-out rows' ``aggre``
    labels (noisy: training labels, never test labels) at its last weights and at weight
    averages (``--select-ema`` decays; BatchNorm statistics re-estimated at each), under no
    TTA, flip and flip-translate views (bfloat16-autocast batched evaluation where the CPU
    computes it natively, for speed). Test top-1 of every candidate is printed beside, and
    not used to choose.
``split``
    ``feature_split=0.5``: backbone on a seeded half, certified ridge head (alpha chosen by
    exact leave-one-out on the head rows' labels) on the other half; tiers stochastic
    (delta 0.05), bounded (flat l1 0.05) and flip on the whole test set. Scope "model" for the
    head rows' labels (``Certificate.covers``).

Prints a table and writes ``strong_path.md`` / ``strong_path.json`` to ``--out``. Run it alone
on an idle machine; from a snapshot of the tree (``git worktree``) when editing the code::

    python benchmarks/strong_path.py --mode throughput e2e split --epochs 15
    python benchmarks/strong_path.py --mode select --epochs 30    # ~80 min on one core
    python benchmarks/strong_path.py --mode e2e --epochs 30 --ema 0.999 --tta flip_translate
"""

import argparse
import inspect
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sklearn_cnat.models import FastCNN
from sklearn_cnat.recipes import _ALPHAS

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10n"
DEFAULT_OUT = REPO / "docs" / "benchmarks"
ALPHAS = _ALPHAS  # ridge alpha grid, 0.1 to 1e7 (the airbench run chose 1e5, the old grid's top)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load(path, n_train=None, seed=0):
    from sklearn_cnat.datasets import load_cifar10n

    data = load_cifar10n(path, noise="random", subset=n_train, random_state=seed)
    return data


def throughput(steps=4, batch=256):
    """img/s of a train step (forward, backward, SGD step) per backbone and precision."""
    from sklearn_cnat.models import SmallCNN, resnet18

    rows = []
    backbones = (("FastCNN", FastCNN), ("FastCNN (whiten=False)", lambda **kw: FastCNN(whiten=False, **kw)),
                 ("SmallCNN", SmallCNN), ("resnet18", resnet18))
    for name, make in backbones:
        for precision, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            torch.manual_seed(0)
            net = make(num_classes=10).to(memory_format=torch.channels_last).train()
            opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
            x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 10, (batch,))
            times = []
            for _ in range(steps + 1):
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                    out = net(x)
                loss = torch.nn.functional.cross_entropy(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            rate = batch / float(np.median(times[1:]))
            rows.append(dict(backbone=name, precision=precision, img_per_s=rate))
            log(f"throughput {name} {precision}: {rate:.0f} img/s")
    return rows


# option -> (its default, the row's and FastCNN's name for it); the parser reads its defaults from here
_RECIPE = {"momentum": (0.9, "momentum"), "bn_bias_lr_scale": (1.0, "bn_bias_lr_scale"),
           "bn_momentum": (0.1, "batchnorm_momentum"), "bn_weight": ("train", "batchnorm_weight"),
           "logit_scale": (1.0, "logit_scale")}


# FastCNN's default widths (rows recorded before --widths existed had them)
_FASTCNN_WIDTHS = tuple(inspect.signature(FastCNN).parameters["widths"].default)


def _widths_words(row):
    """``"widths 128/384/384, "`` when the row's FastCNN was not the default size, else ``""``."""
    widths = tuple(row.get("widths", _FASTCNN_WIDTHS))
    return "" if widths == _FASTCNN_WIDTHS else f"widths {'/'.join(map(str, widths))}, "


def recipe(args):
    """The optimiser and FastCNN settings that differ from the defaults (recorded in every row)."""
    if args.recipe == "airbench94":
        from sklearn_cnat.recipes import AIRBENCH94

        return {name: AIRBENCH94[name] for _, name in _RECIPE.values()}
    out = {}
    for option, (default, name) in _RECIPE.items():
        value = getattr(args, option)
        if value != default:
            out[name] = value == "train" if option == "bn_weight" else value
    return out


def settings(clf, args):
    """What every row records of how its network was trained (read from the estimator)."""
    out = dict(label_smoothing=clf.label_smoothing, radius=args.radius, elr_lambda=clf.elr_lambda,
               elr_beta=clf.elr_beta, recipe=recipe(args), lr=clf.lr,
               weight_decay=(clf.optimizer_kwargs or {}).get("weight_decay"), batch=clf.batch_size, ema=clf.ema,
               widths=list((clf.module_kwargs or {}).get("widths", _FASTCNN_WIDTHS)))
    if args.recipe:
        out["recipe_name"] = args.recipe
    return out


def _check_recipe_flags(parser, args):
    """``--recipe airbench94`` takes the package's settings: refuse flags that would contradict them."""
    if args.recipe is None:
        return
    fixed = dict(_RECIPE, lr=(0.1, "lr"), weight_decay=(5e-4, "weight_decay"), label_smoothing=(0.2, "label_smoothing"))
    changed = [option for option, (default, _) in fixed.items() if getattr(args, option) != default]
    if changed:
        parser.error(f"--recipe {args.recipe} sets {', '.join('--' + c.replace('_', '-') for c in changed)} itself")


def _recipe_words(row):
    head = f"recipe {row['recipe_name']}: " if row.get("recipe_name") else ""
    if row.get("recipe"):
        head += f"lr {row.get('lr', 0.1):g}, weight decay {row.get('weight_decay', 5e-4):g}, "
    return head + "".join(f"{k.replace('_', ' ')} {v:g}, " if not isinstance(v, bool) else f"{k.replace('_', ' ')} {v}, "
                   for k, v in row.get("recipe", {}).items())


def estimator(args, n_samples, **kw):
    """The benchmark's estimator; ``n_samples``: the rows its network trains on (the recipe's
    weight average reads them)."""
    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer

    extra_module_kwargs = dict(kw.pop("module_kwargs", None) or {})
    if args.widths is not None:
        extra_module_kwargs.setdefault("widths", tuple(args.widths))
    if args.recipe == "airbench94":
        from sklearn_cnat.recipes import fast_cnn_recipe

        ema = kw.pop("ema", args.ema if args.ema is not None else "auto")
        params = fast_cnn_recipe(n_samples, max_epochs=kw.pop("max_epochs", args.epochs), batch_size=args.batch,
                                 ema=ema, tta=args.tta, module_kwargs=extra_module_kwargs or None)
        params.update(head="ridge", alpha=ALPHAS, budget=NoiseBudgetTransformer(pi="votes", mapping="flat",
                                                                                radius=args.radius),
                      elr_lambda=args.elr_lambda, elr_beta=args.elr_beta, random_state=args.seed,
                      verbose=args.verbose)
        params.update(kw)
        return CNATClassifier(**params)
    module_kwargs = {k: v for k, v in recipe(args).items() if k in ("batchnorm_momentum", "batchnorm_weight",
                                                                     "logit_scale")}
    module_kwargs.update(extra_module_kwargs)
    optimizer_kwargs = {"momentum": args.momentum, "nesterov": True, "weight_decay": args.weight_decay}
    if args.bn_bias_lr_scale != 1.0:
        from sklearn_cnat.recipes import _batchnorm_bias_groups

        optimizer_kwargs["param_groups"] = _batchnorm_bias_groups(FastCNN(**module_kwargs), args.lr,
                                                                  args.weight_decay, args.bn_bias_lr_scale)
    params = dict(module=FastCNN, head="ridge", alpha=ALPHAS, module_kwargs=module_kwargs or None,
                  budget=NoiseBudgetTransformer(pi="votes", mapping="flat", radius=args.radius),
                  max_epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer="sgd",
                  optimizer_kwargs=optimizer_kwargs,
                  lr_schedule="onecycle", label_smoothing=args.label_smoothing, elr_lambda=args.elr_lambda,
                  elr_beta=args.elr_beta, precision="auto",
                  augment="flip_translate", tta=args.tta, ema=args.ema,
                  random_state=args.seed, verbose=args.verbose)
    params.update(kw)
    return CNATClassifier(**params)


def network_top1(clf, x_test, y_test):
    """Top-1 of the trained network's own logits (flip TTA, served one point at a time)."""
    from sklearn_cnat._inference import _forward_per_point

    logits = _forward_per_point(clf.net_.module_, clf._loader_inputs(clf._prepare_inputs(x_test, fit=False)[0]),
                                tta=clf.tta_)[0]
    return float(np.mean(logits.argmax(1) == y_test))


def evidence(data, labels):
    """Training evidence: the three annotations as votes, or the one-hot aggregate label; ``"clean"``
    (the CIFAR-10 training labels) is a diagnostic ceiling for the e2e mode, never a choice."""
    return data.votes if labels == "votes" else data.labels[labels]


def run_e2e(data, args):
    clf = estimator(args, len(data.x_train))
    t0 = time.time()
    clf.fit(data.x_train, evidence(data, args.labels))
    t_fit = time.time() - t0
    t0 = time.time()
    pred = clf.predict(data.x_test)
    t_pred = time.time() - t0
    # the head's training features are one batched pass under the training autocast; served ones float32
    served = clf.feature_map(data.x_train[:500])
    feature_error = float(np.linalg.norm(clf.train_features_[:500] - served) / np.linalg.norm(served))
    row = dict(run="e2e", n_train=len(data.votes), epochs=args.epochs, **settings(clf, args), labels=args.labels,
               tta=clf.tta_, seed=args.seed,
               threads=torch.get_num_threads(),
               fit_seconds=t_fit, predict_seconds=t_pred,
               ridge_top1=float(np.mean(pred == data.y_test)),
               network_top1=network_top1(clf, data.x_test, data.y_test), alpha=clf.alpha_,
               precision=str(clf.net_.autocast_dtype), train_feature_rel_error=feature_error, scope=clf.scope_)
    log(f"e2e: {row}")
    return row


def run_trial(data, args):
    from sklearn_cnat._inference import _forward_batched

    rows = []
    for whiten in (True, False):
        clf = estimator(args, len(data.x_train), head="softmax", alpha=1.0, module_kwargs={"whiten": whiten})
        t0 = time.time()
        clf.fit(data.x_train, data.votes)
        row = dict(run="trial", whiten=whiten, n_train=len(data.votes), epochs=args.epochs,
                   fit_seconds=time.time() - t0)
        inputs = clf._loader_inputs(clf._prepare_inputs(data.x_test, fit=False)[0])
        views = _forward_batched(clf.net_.module_, inputs, tta="flip_translate", per_view=True)[0]  # float32
        row.update({f"top1_tta_{mode}": top1 for mode, top1 in tta_top1(views, data.y_test).items()})
        log(f"trial: {row}")
        rows.append(row)
    return rows


def view_logits(module, x, batch=500):
    """Logits (6, n, K) of the six flip-translate views of every image (image, mirror, then the shifted
    pairs), batched, bf16 where native: the package's batched pass with its views kept apart."""
    from sklearn_cnat._inference import _forward_batched
    from sklearn_cnat._precision import _autocast_dtype

    return _forward_batched(module, x, batch_size=batch, tta="flip_translate", per_view=True,
                            autocast_dtype=_autocast_dtype("auto", "cpu"), channels_last=True)[0]


def tta_predictions(views):
    """Predicted classes under no TTA, flip and flip-translate: the views' logits averaged with the
    package's test-time weights (``_tta_views``; each mode's views are a prefix of the six)."""
    from sklearn_cnat._augment import _tta_views

    one = torch.zeros(1, 1, 3, 3)
    out = {}
    for name, mode in (("none", False), ("flip", "flip"), ("flip_translate", "flip_translate")):
        weights = [w for _, w in _tta_views(one, mode)]
        out[name] = sum(w * v for w, v in zip(weights, views)).argmax(1)
    return out


def tta_top1(views, y):
    """Top-1 under no TTA, flip and flip-translate from the six views' logits."""
    return {k: float(np.mean(p == y)) for k, p in tta_predictions(views).items()}


def vote_share(views, votes):
    """Mean share of the annotators' votes that each TTA mode's prediction gets (agreement with a
    random annotator of the row: less noisy than agreement with one aggregate label)."""
    share = votes / votes.sum(1, keepdims=True)
    return {k: float(np.mean(share[np.arange(len(p)), p])) for k, p in tta_predictions(views).items()}


def run_select(data, args):
    from sklearn.model_selection import train_test_split
    from sklearn_cnat.callbacks import WeightEMA
    from sklearn_cnat.models import recalibrate_batchnorm

    aggre = data.labels["aggre"]
    fit_rows, hold_rows = train_test_split(np.arange(len(aggre)), test_size=args.holdout, stratify=aggre,
                                           random_state=args.seed)
    decays = sorted(set(args.select_ema))
    rows = []
    for labels in args.select_labels:
        extra = [(f"ema_{d}", WeightEMA(d, apply=False)) for d in decays]
        clf = estimator(args, len(fit_rows), head="softmax", alpha=1.0, ema=None, callbacks=extra)
        t0 = time.time()
        clf.fit(data.x_train[fit_rows], evidence(data, labels)[fit_rows])
        t_fit = time.time() - t0
        cbs = dict(clf.net_.callbacks_)
        prepared = clf._prepare_inputs(data.x_train[fit_rows], fit=False)[0]
        loader = torch.utils.data.DataLoader(clf._loader_inputs(prepared), batch_size=args.batch)
        x_hold = clf._prepare_inputs(data.x_train[hold_rows], fit=False)[0]
        x_test = clf._prepare_inputs(data.x_test, fit=False)[0]
        # ema=None: the estimator's network holds the last weights, BatchNorm already re-estimated by fit
        # on these rows in this order; each average's module gets the same re-estimation here
        modules = [("last", clf.net_.module_)] + [(name, cbs[name].averaged_.module) for name, _ in extra]
        for name, module in modules:
            if name != "last":
                recalibrate_batchnorm(module, loader)
            hold_views = view_logits(module, x_hold)
            hold, test = tta_top1(hold_views, aggre[hold_rows]), tta_top1(view_logits(module, x_test), data.y_test)
            share = vote_share(hold_views, data.votes[hold_rows])
            for tta in hold:
                row = dict(run="select", labels=labels, **settings(clf, args), seed=args.seed, weights=name, tta=tta, n_fit=len(fit_rows),
                           n_holdout=len(hold_rows), epochs=args.epochs, fit_seconds=t_fit,
                           holdout_agreement=hold[tta], holdout_vote_share=share[tta], test_top1=test[tta])
                rows.append(row)
            log(f"select {labels} {name}: holdout {hold}, test {test}")
    best = max(rows, key=lambda r: r["holdout_agreement"])
    log(f"select: chosen by holdout agreement: {best}")
    return rows


def covered_loo(clf, data):
    """Training-label signals of the head on the covered rows: exact leave-one-out agreement
    with their aggre label and mean vote share (the backbone never read these labels, so
    the left-out prediction is a held-out one, whichever rows the head is fitted on)."""
    from sklearn_cnat._calibration import _ridge_loo_scores

    budget = clf._head_budget()
    loo = _ridge_loo_scores(clf.train_features_, budget.pi, clf.alpha_, clf.coef_, clf.intercept_,
                            clf._head_weights())
    rows = np.flatnonzero(clf.head_rows_)
    keep = clf.covered_rows_[rows]
    pred = loo[keep].argmax(1)
    votes = data.votes[rows[keep]]
    share = votes[np.arange(len(pred)), pred] / votes.sum(1)
    return dict(covered_loo_agreement=float(np.mean(pred == data.labels["aggre"][rows[keep]])),
                covered_loo_vote_share=float(np.mean(share)))


def run_split(data, args):
    clf = estimator(args, int(round(0.5 * len(data.x_train))), feature_split=0.5,  # the backbone's rows
                    split_head=args.split_head, max_epochs=args.split_epochs or args.epochs,
                    pseudo_label_epochs=args.pseudo_label_epochs)
    t0 = time.time()
    clf.fit(data.x_train, data.votes)
    t_fit = time.time() - t0
    F_test = None
    row = dict(run="split", n_train=len(data.votes), head_rows=int(clf.head_rows_.sum()),
               covered_rows=int(clf.covered_rows_.sum()), split_head=clf.split_head_,
               pseudo_label_epochs=clf.pseudo_label_epochs,
               epochs=args.split_epochs or args.epochs, **settings(clf, args), tta=clf.tta_, seed=args.seed,
               fit_seconds=t_fit, alpha=clf.alpha_, scope=clf.scope_)
    row.update(covered_loo(clf, data))
    t0 = time.time()
    row["head_top1"] = float(np.mean(clf.predict(data.x_test) == data.y_test))
    row["network_top1"] = network_top1(clf, data.x_test, data.y_test)
    row["predict_seconds"] = time.time() - t0
    for tier, kw in (("stochastic", dict(delta=0.05)), ("bounded", {}), ("flip", dict(m=1))):
        t0 = time.time()
        cert = clf.certify(data.x_test, tier=tier, **kw)
        row[f"{tier}_seconds"] = time.time() - t0
        row[f"coverage_{tier}"] = cert.coverage
        row[f"certified_accuracy_{tier}"] = cert.certified_accuracy(data.y_test)
        if tier == "flip":
            row["median_max_flips"] = float(np.median(cert.max_flips))
        assert cert.scope == "model" and int(cert.covers.sum()) == row["covered_rows"]
        log(f"split {tier}: coverage {cert.coverage:.4f}")
    del F_test
    log(f"split: {row}")
    return row


def _elr_words(row):
    """``"early learning lambda 3, beta 0.7, "`` when the row's network had the term, else ``""``."""
    return f"early learning lambda {row['elr_lambda']:g}, beta {row['elr_beta']:g}, " if row.get("elr_lambda") else ""


def _settings_words(row):
    """The select table's optimiser settings: the package's recipe, or the script's flags."""
    if row.get("recipe_name"):
        return f"{_widths_words(row)}recipe {row['recipe_name']}"
    return f"{_widths_words(row)}lr {row.get('lr', 0.1):g}, momentum {row.get('recipe', {}).get('momentum', 0.9):g}, " \
           f"wd {row.get('weight_decay', 5e-4):g}"


def _ema_words(ema):
    return "none" if ema is None else f"{ema:.5g}"


def _percent(value):
    return "" if value is None else f"{100 * value:.2f}"


def write(out, rows, meta):
    out.mkdir(parents=True, exist_ok=True)
    (out / "strong_path.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1, default=str))
    L = ["<!-- generated by benchmarks/strong_path.py; do not edit -->", "",
         f"Machine: {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}. Command: `{meta['command']}`.", ""]
    thr = [r for r in rows if "img_per_s" in r]
    if thr:
        L += ["| backbone | float32 img/s | bfloat16 img/s | speed-up |", "|---|---|---|---|"]
        for name in dict.fromkeys(r["backbone"] for r in thr):
            f32 = next(r["img_per_s"] for r in thr if r["backbone"] == name and r["precision"] == "float32")
            b16 = next(r["img_per_s"] for r in thr if r["backbone"] == name and r["precision"] == "bfloat16")
            L.append(f"| {name} | {f32:.0f} | {b16:.0f} | {b16 / f32:.2f}x |")
        L.append("")
    trials = [r for r in rows if r.get("run") == "trial"]
    if trials:
        L += [f"**Trial** ({trials[0]['n_train']} images, {trials[0]['epochs']} epochs, network top-1 by test-time "
              "views, batched):", "", "| whitening stem | fit s | no TTA | flip | flip_translate |", "|---|---|---|---|---|"]
        L += [f"| {r['whiten']} | {r['fit_seconds']:.0f} | {100 * r['top1_tta_none']:.2f} | {100 * r['top1_tta_flip']:.2f} | "
              f"{100 * r['top1_tta_flip_translate']:.2f} |" for r in trials] + [""]
    sel = [r for r in rows if r.get("run") == "select"]
    if sel:
        best = max(sel, key=lambda r: r["holdout_agreement"])
        L += [f"**Selection** on training labels ({sel[0]['n_fit']} rows trained, {sel[0]['n_holdout']} held out, "
              f"{sel[0]['epochs']} epochs; agreement with the held-out rows' noisy aggre labels chooses; test top-1 "
              "is not used; the held-out rows' mean vote share, where recorded, is printed beside):", "",
              "| settings | labels | label smoothing | l1 radius | ELR lambda | weights | TTA | holdout agreement | holdout vote share | test top-1 | chosen |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        L += [f"| {_settings_words(r)} | {r['labels']} | {r.get('label_smoothing', 0.2)} | {r.get('radius', 0.05)} | {r.get('elr_lambda', 0.0)} | {r['weights']} | {r['tta']} | {100 * r['holdout_agreement']:.2f} | "
              f"{_percent(r.get('holdout_vote_share'))} | "
              f"{100 * r['test_top1']:.2f} | {'yes' if r is best else ''} |" for r in sel] + [""]
    for r in rows:
        if r.get("run") == "e2e":
            L += [f"**End to end** (FastCNN with its patch-whitening stem, {_widths_words(r)}{r['n_train']} images, {r['epochs']} epochs, seed "
                  f"{r.get('seed', 0)}, {r.get('threads', meta['threads'])} thread(s), label smoothing "
                  f"{r.get('label_smoothing', 0)}, flat l1 radius {r.get('radius', 0.05)}, {_elr_words(r)}{_recipe_words(r)}labels {r.get('labels', 'votes')}, weight EMA {_ema_words(r.get('ema'))}, TTA "
                  f"{r.get('tta', 'flip')}): network top-1 "
                  f"{100 * r['network_top1']:.2f} %, ridge head {100 * r['ridge_top1']:.2f} % (alpha {r['alpha']:.3g}); "
                  f"fit {r['fit_seconds'] / 60:.1f} min, predict {r['predict_seconds']:.0f} s, training precision "
                  f"{r['precision']}" + (f" (head's training features in it: relative error {r['train_feature_rel_error']:.2g} "
                  "against the served float32 features, 500 rows)" if "train_feature_rel_error" in r else "") + ".", ""]
        if r.get("run") == "split":
            covered = r.get("covered_rows", r["head_rows"])
            head_words = (f"certified head on {r['head_rows']}" if r.get("split_head", "disjoint") == "disjoint" else
                          f"certified head on all {r['head_rows']} rows, the backbone rows' labels held fixed")
            student = (f", then self-trained: a student network {r['pseudo_label_epochs']} epochs on all {r['n_train']} "
                       f"rows, the other rows' images labelled by that backbone (no label of theirs read)"
                       if r.get("pseudo_label_epochs") else "")
            L += [f"**Split mode** (FastCNN with its patch-whitening stem, {_widths_words(r)}backbone on {r['n_train'] - covered} rows{student}, {head_words}; "
                  f"scope model for the labels of the {covered} other rows), {r['epochs']} epochs, label smoothing "
                  f"{r.get('label_smoothing', 0)}, {_elr_words(r)}{_recipe_words(r)}weight EMA {_ema_words(r.get('ema'))}, TTA {r.get('tta', 'flip')}, "
                  f"alpha {r['alpha']:.3g} (leave-one-out), fit "
                  f"{r['fit_seconds'] / 60:.1f} min:", "",
                  "| head top-1 | network top-1 | cov. stochastic (delta 0.05) | cov. bounded (l1 0.05) | "
                  "cov. flip m=1 | median certified flips | cert. acc. stochastic | cert. acc. bounded | "
                  "covered rows: LOO agreement (aggre) | LOO vote share |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  f"| {100 * r['head_top1']:.2f} | {100 * r['network_top1']:.2f} | {100 * r['coverage_stochastic']:.1f} | "
                  f"{100 * r['coverage_bounded']:.1f} | {100 * r['coverage_flip']:.1f} | {r['median_max_flips']:.0f} | "
                  f"{100 * r['certified_accuracy_stochastic']:.1f} | {100 * r['certified_accuracy_bounded']:.1f} | "
                  f"{_percent(r.get('covered_loo_agreement'))} | {_percent(r.get('covered_loo_vote_share'))} |", ""]
    (out / "strong_path.md").write_text("\n".join(L))
    print("\n".join(L))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--mode", nargs="+", default=["throughput", "e2e", "split"], choices=["throughput", "e2e", "split", "trial", "select"])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--split-head", choices=["auto", "disjoint", "all"], default="auto",
                   help="split mode: the head on the other rows only (disjoint), or on every row with the backbone "
                        "rows' labels held fixed (all; auto, the estimator's default: all for the ridge head) "
                        "(CNATClassifier(split_head=))")
    p.add_argument("--split-epochs", type=int, default=None, help="epochs of the split-mode backbone (default --epochs)")
    p.add_argument("--pseudo-label-epochs", type=int, default=None,
                   help="split mode: self-training (CNATClassifier(pseudo_label_epochs=)): a student network this many "
                        "epochs on every row, the head rows' images labelled by the split backbone")
    p.add_argument("--label-smoothing", type=float, default=0.2, help="of the backbone's training targets")
    p.add_argument("--radius", type=float, default=0.05,
                   help="flat l1 budget of every training row: CNAT training and the split bounded tier")
    p.add_argument("--elr-lambda", type=float, default=0.0, help="early-learning term of the network's loss (0: off)")
    p.add_argument("--elr-beta", type=float, default=0.7, help="momentum of the early-learning targets")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--widths", type=int, nargs=3, default=None, metavar="W",
                   help="FastCNN(widths=) of the three blocks (default FastCNN's 64 256 256; airbench95's: 128 384 384)")
    p.add_argument("--momentum", type=float, default=_RECIPE["momentum"][0], help="SGD (Nesterov) momentum")
    p.add_argument("--bn-bias-lr-scale", type=float, default=_RECIPE["bn_bias_lr_scale"][0],
                   help="BatchNorm biases train at this multiple of the learning rate (airbench94: 64)")
    p.add_argument("--bn-momentum", type=float, default=_RECIPE["bn_momentum"][0], help="FastCNN(batchnorm_momentum=) (airbench94: 0.4)")
    p.add_argument("--bn-weight", choices=["train", "frozen"], default=_RECIPE["bn_weight"][0],
                   help="FastCNN(batchnorm_weight=): frozen keeps the BatchNorm scales at 1 (airbench94)")
    p.add_argument("--logit-scale", type=float, default=_RECIPE["logit_scale"][0], help="FastCNN(logit_scale=) (airbench94: 1/9)")
    p.add_argument("--recipe", choices=["airbench94"], default=None,
                   help="sklearn_cnat.recipes.fast_cnn_recipe: the package's settings (then --lr, --momentum, "
                        "--weight-decay, --label-smoothing and the --bn-*/--logit-scale flags stay at their defaults; "
                        "--ema defaults to the recipe's, a fifth of the steps)")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--n-train", type=int, default=None, help="stratified training subset (trials)")
    p.add_argument("--n-test", type=int, default=None, help="every (10000 / n)-th test image (trials)")
    p.add_argument("--labels", choices=["votes", "aggre", "clean"], default="votes",
                   help="training evidence: the three annotations as votes, or the one-hot aggre label; clean "
                        "(the CIFAR-10 labels) only as a ceiling of what label noise costs, never to choose")
    p.add_argument("--ema", type=float, default=None, help="decay of the weight EMA per step (None: last weights)")
    p.add_argument("--tta", default="flip", choices=["flip", "flip_translate"], help="test-time views")
    p.add_argument("--holdout", type=int, default=5000, help="training rows held out by --mode select")
    p.add_argument("--select-labels", nargs="+", default=["votes", "aggre"], choices=["votes", "aggre"])
    p.add_argument("--select-ema", nargs="+", type=float, default=[0.998, 0.999, 0.9995])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", type=int, default=1, help="skorch's per-epoch table (to follow a long run)")
    args = p.parse_args(argv)
    _check_recipe_flags(p, args)
    torch.set_flush_denormal(True)  # subnormal activations/weights can slow CPU kernels 100-fold
    meta = dict(cpu=cpu_model(), threads=torch.get_num_threads(), torch=torch.__version__,
                command="python benchmarks/strong_path.py " + " ".join(sys.argv[1:] if argv is None else argv))
    from sklearn_cnat._precision import _describe

    meta["precision_auto"] = _describe("auto", "cpu")
    log(f"{meta}")
    rows = []
    if "throughput" in args.mode:
        rows += throughput()
    if {"e2e", "split", "trial", "select"} & set(args.mode):
        data = load(args.data, args.n_train, args.seed)
        if args.n_test:
            step = max(1, len(data.y_test) // args.n_test)
            data.x_test, data.y_test = data.x_test[::step], data.y_test[::step]
        for mode, fn in (("e2e", run_e2e), ("split", run_split)):
            if mode in args.mode:
                rows.append(fn(data, args))
        if "trial" in args.mode:
            rows += run_trial(data, args)
        if "select" in args.mode:
            rows += run_select(data, args)
    write(Path(args.out), rows, meta)


if __name__ == "__main__":
    main()
