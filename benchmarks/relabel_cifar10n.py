"""Relabeling guidance on CIFAR-10N: which images should get two more votes?

Start from ONE human vote per training image (CIFAR-10N ``random_label1``), fit the
exact ridge head on fixed features, and certify the test images (tier stochastic).
Then acquire the two other real human votes (``random_label2``, ``random_label3``) for
1 %, 5 % and 10 % of the training images (``--budgets``), chosen

* by ``sklearn_cnat.relabel.suggest_relabels(strategy="expected")`` (ranked on the
  *selection* half of the test images, without their labels): expected certified-coverage
  gain under a vote model, greedy in blocks; the vote model (``--vote-models``) and the
  bandwidth (``--bandwidths``, or the exact gain) are chosen inside the selection half:
  ranked on one part of it, scored by the coverage reached on the other part,
* by the same with the exact (unsmoothed) expected gain,
* by the former ranking (``strategy="assumed"``: new votes agree with the plurality),
* by cleanlab's ActiveLab (``get_active_learning_scores`` with the leave-one-out
  probabilities), by cleanlab's label-quality score (lowest first), by the model's
  disagreement (entropy of the leave-one-out probabilities; with one vote per image there
  is no disagreement between annotators), at random,
* by the paper's Table 5 protocol: the hardest images by the disagreement of their three
  votes (an oracle: it reads the two votes before buying them; at 5 % it is the paper's rule),

refit, re-certify, and report the coverage lift on the *report* half of the test images
(never used to choose) and on the selection half, and the lift per 1,000 votes bought.

Features: label-free Coates-Ng k-means patch features (``--centroids``), or a cached
``.npz`` with ``F_train`` (aligned with the chosen training subset), ``F_test``, or a
split-mode cache (the command that writes the docs):

    python benchmarks/relabel_cifar10n.py --split-cache benchmarks/cache/split_aggre_<hash>.npz --n-test 10000

Writes ``docs/benchmarks/relabel_cifar10n.csv`` and ``.md``.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def _choose_alpha(F, pi, grid):
    """Ridge alpha with the best leave-one-out plurality accuracy on the training votes."""
    from sklearn_cnat._calibration import _ridge_loo_scores
    from sklearn_cnat.certificates._ridge import _ridge_fit

    labels = pi.argmax(1)
    best = None
    for alpha in grid:
        coef, intercept = _ridge_fit(F, pi, alpha)
        acc = float(np.mean(_ridge_loo_scores(F, pi, alpha, coef, intercept).argmax(1) == labels))
        if best is None or acc > best[1]:
            best = (alpha, acc)
    return best


def _markdown(frame):
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def _coverage_row(name, budget, idx, cert, base_cert, select, y_test, n_votes_bought):
    """One table row: coverage and lift on both halves, lift per 1,000 votes bought."""
    cov_r, cov_s = cert.certified[~select].mean(), cert.certified[select].mean()
    lift_r = cov_r - base_cert.certified[~select].mean()
    lift_s = cov_s - base_cert.certified[select].mean()
    return {
        "budget": budget, "selection": name, "relabelled": len(idx), "votes_bought": n_votes_bought,
        "coverage_report": cov_r, "lift_report_pts": 100 * lift_r,
        "lift_report_pts_per_1k_votes": 1000 * 100 * lift_r / n_votes_bought if n_votes_bought else 0.0,
        "coverage_select": cov_s, "lift_select_pts": 100 * lift_s,
        "top1_clean": float(np.mean(cert.prediction == y_test)),
        "certified_accuracy_report": float(np.mean(cert.certified[~select] & (cert.prediction[~select] == y_test[~select]))),
    }


def main(argv=None):
    from cleanlab.multiannotator import get_active_learning_scores
    from cleanlab.rank import get_label_quality_scores
    from scipy.special import softmax
    from sklearn.preprocessing import StandardScaler

    from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
    from sklearn_cnat._calibration import _ridge_loo_scores
    from sklearn_cnat.features import KMeansPatchFeatures
    from sklearn_cnat.relabel import suggest_relabels

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "cifar10n"))
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=2000, help="test images (half to select, half to report)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.05, 0.10],
                   help="fractions of the training images that get their two other votes")
    p.add_argument("--vote-models", nargs="+", default=["confusion", "model"],
                   help="vote models of suggest_relabels(strategy='expected'), chosen on the selection half")
    p.add_argument("--bandwidths", type=float, nargs="+", default=[1.0, 3.0, 10.0],
                   help="bandwidths of suggest_relabels, chosen on the selection half (with the exact gain)")
    p.add_argument("--n-scenarios", type=int, default=8)
    p.add_argument("--n-blocks", type=int, default=50, help="greedy blocks up to the largest budget")
    p.add_argument("--centroids", type=int, default=256)
    p.add_argument("--features", help="cached .npz with F_train and F_test")
    p.add_argument("--split-cache", help="a split-mode feature cache of benchmarks/cifar10n.py (F_b: half B, "
                                         "F_t: all test images); the training set is then half B")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that cache's half split")
    p.add_argument("--delta", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "relabel_cifar10n"))
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    rng = np.random.RandomState(args.seed)

    d = np.load(Path(args.data) / "cifar10.npz")
    lab = np.load(Path(args.data) / "cifar10n_labels.npz")
    if args.split_cache:
        perm = np.random.RandomState(args.split_seed).permutation(50000)  # benchmarks/cifar10n.py's halves
        train_idx = np.sort(perm[25000:])
    else:
        train_idx = np.sort(rng.choice(50000, args.n_train, replace=False))
    per_class = args.n_test // 10
    test_idx = np.concatenate([np.arange(c * 1000, c * 1000 + per_class) for c in range(10)])  # grouped by class
    y_test = d["y_test"][test_idx]
    select = np.zeros(len(test_idx), bool)
    select[rng.permutation(len(test_idx))[: len(test_idx) // 2]] = True

    if args.split_cache:
        cached = np.load(args.split_cache)
        F_train, F_test = cached["F_b"], cached["F_t"][test_idx]
        feature_name = (f"split-mode CNN features (extractor trained on the other half, top-1 "
                        f"{float(cached['extractor_top1']):.3f}; never saw these labels)")
    elif args.features:
        cached = np.load(args.features)
        F_train, F_test = cached["F_train"], cached["F_test"]
        feature_name = Path(args.features).name
    else:
        extractor = KMeansPatchFeatures(n_centroids=args.centroids, n_patches=100_000, random_state=args.seed)
        F_train = extractor.fit_transform(d["x_train"][train_idx])
        F_test = extractor.transform(d["x_test"][test_idx])
        feature_name = f"k-means patches, {args.centroids} centroids (label-free)"
    scaler = StandardScaler().fit(F_train)  # label-free
    F_train, F_test = scaler.transform(F_train), scaler.transform(F_test)
    t_feat = time.perf_counter() - t_start

    eye = np.eye(10, dtype=int)
    vote1 = lab["random_label1"][train_idx]
    one_vote = eye[vote1]
    three_votes = sum(eye[lab[f"random_label{k}"][train_idx]] for k in (1, 2, 3))
    pi1 = one_vote.astype(float)
    n = len(train_idx)
    alpha, loo_acc = _choose_alpha(F_train, pi1, [n * s for s in (0.01, 0.1, 1.0, 10.0)])

    def fit_certify(counts):
        clf = CNATClassifier(module="linear", head="ridge", alpha=alpha,
                             budget=NoiseBudgetTransformer(pi="votes", evidence="counts"))
        clf.fit(F_train, counts)
        return clf, clf.certify(F_test, tier="stochastic", delta=args.delta)

    base_clf, base_cert = fit_certify(one_vote)
    picks_at = {b: int(round(b * n)) for b in args.budgets}
    n_max = max(picks_at.values())

    # every ranking is a full order of the training rows; budget b takes its first b * n rows
    def ours(points, vote_model, bandwidth):
        return suggest_relabels(base_clf, F_test[points], n=n_max, k=2, delta=args.delta, vote_model=vote_model,
                                bandwidth=bandwidth, block_size=max(1, -(-n_max // args.n_blocks)),
                                n_scenarios=args.n_scenarios, random_state=args.seed)["index"].to_numpy()

    cache = {}

    def evaluate(idx):
        key = tuple(np.sort(idx))
        if key not in cache:
            counts = one_vote.copy()
            counts[idx] = three_votes[idx]
            cache[key] = fit_certify(counts)[1]
        return cache[key]

    # settings chosen inside the selection half: rank on its part A, score the coverage on its part B
    sel = np.flatnonzero(select)
    part_a = np.zeros(len(test_idx), bool)
    part_a[sel[np.random.RandomState(args.seed + 1).permutation(len(sel))[: len(sel) // 2]]] = True
    part_b = select & ~part_a
    grid = [(vm, bw) for vm in args.vote_models for bw in args.bandwidths] + [(args.vote_models[0], None)]
    validation = []
    for vm, bw in grid:
        order = ours(part_a, vm, bw)
        lifts = [100 * (evaluate(order[:k]).certified[part_b].mean() - base_cert.certified[part_b].mean())
                 for k in picks_at.values()]
        validation.append({"vote_model": vm, "bandwidth": "exact" if bw is None else bw,
                           **{f"lift_B_pts_{b:.0%}": v for b, v in zip(picks_at, lifts)},
                           "mean_lift_B_pts": float(np.mean(lifts))})
    validation = pd.DataFrame(validation)
    best = validation["mean_lift_B_pts"].to_numpy().argmax()  # first best in grid order
    best_vm, best_bw = grid[best]
    t0 = time.perf_counter()
    ours_order = ours(select, best_vm, best_bw)
    t_rank = time.perf_counter() - t0
    exact_order = ours(select, args.vote_models[0], None)
    old = suggest_relabels(base_clf, F_test[select], k=2, delta=args.delta, strategy="assumed")["index"].to_numpy()
    loo = _ridge_loo_scores(F_train, pi1, alpha, base_clf.coef_, base_clf.intercept_)
    proba = softmax(loo / base_clf.temperature_, axis=1)
    quality = get_label_quality_scores(vote1, proba)
    activelab, _ = get_active_learning_scores(vote1[:, None].astype(float), proba)
    entropy = -np.sum(proba * np.log(np.clip(proba, 1e-300, None)), axis=1)
    tiebreak = rng.permutation(n)  # seeded order among equal scores
    oracle = 1.0 - three_votes.max(axis=1) / 3.0  # disagreement of the three real votes (not seen before buying)
    bw_name = "exact" if best_bw is None else f"bandwidth={best_bw:g}"
    orders = {
        f"ours: suggest_relabels (expected, vote_model={best_vm}, {bw_name})": ours_order,
        f"suggest_relabels (expected, vote_model={args.vote_models[0]}, exact)": exact_order,
        "suggest_relabels (assumed plurality, old)": old,
        "cleanlab ActiveLab": np.lexsort((tiebreak, activelab)),
        "cleanlab label quality": np.lexsort((tiebreak, quality)),
        "disagreement (model entropy)": np.lexsort((tiebreak, -entropy)),
        "random": tiebreak,
        "Table 5 protocol (oracle 3-vote disagreement)": np.lexsort((tiebreak, -oracle)),
    }
    rows = [_coverage_row("none (1 vote each)", 0.0, [], base_cert, base_cert, select, y_test, 0)]
    for b, k in picks_at.items():
        for name, order in orders.items():
            idx = order[:k]
            rows.append(_coverage_row(name, b, idx, evaluate(idx), base_cert, select, y_test, 2 * k))
    rows.append(_coverage_row("all (3 votes each)", 1.0, np.arange(n), evaluate(np.arange(n)), base_cert, select,
                              y_test, 2 * n))
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    ours_name = next(iter(orders))
    chosen = table[table["selection"] == ours_name].set_index("budget")
    summary = []
    for rival in ("cleanlab ActiveLab", "cleanlab label quality", "random"):
        r = table[table["selection"] == rival].set_index("budget")
        summary.append(f"{rival}: " + ", ".join(
            f"{b:.0%} {chosen.loc[b, 'lift_report_pts'] - r.loc[b, 'lift_report_pts']:+.2f}" for b in picks_at))
    header = (f"Relabeling on CIFAR-10N: {n} training images (1 vote each to start), {len(test_idx)} clean "
              f"test images ({select.sum()} to select, {(~select).sum()} to report), features: {feature_name}, "
              f"ridge alpha = {alpha:g} (best leave-one-out accuracy {loo_acc:.3f} on the 1-vote labels), "
              f"tier stochastic at delta = {args.delta}; at each budget the chosen images get their two other "
              f"real votes (2 votes bought per image). Ours: suggest_relabels(strategy='expected'), greedy in "
              f"{args.n_blocks} blocks up to the largest budget, ranked on the selection half; vote model and "
              f"bandwidth chosen inside the selection half (ranked on {part_a.sum()} of its points, scored on the "
              f"other {part_b.sum()}; table below): {best_vm}, {bw_name}. Wall time "
              f"{time.perf_counter() - t_start:.0f} s (features {t_feat:.0f} s, our ranking {t_rank:.1f} s).\n\n"
              f"Ours minus rival, coverage lift on the report half in points: " + "; ".join(summary) + ".")
    val_md = ("Choice of the settings (selection half only: lift of coverage on part B, in points, when "
              "part A ranks):\n\n" + _markdown(validation))
    md = header + "\n\n" + _markdown(table) + "\n\n" + val_md + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
