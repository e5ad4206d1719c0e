"""Relabeling guidance on CIFAR-10N: which 5 % of images should get two more votes?

Start from ONE human vote per training image (CIFAR-10N ``random_label1``), fit the
exact ridge head on fixed features, and certify the test images (tier stochastic).
Then acquire the two other real human votes (``random_label2``, ``random_label3``) for
5 % of the training images, chosen

* by ``sklearn_cnat.relabel.suggest_relabels`` (ranked on the *selection* half of the
  test images, without their labels), assuming the new votes agree with the current
  label (``assume="plurality"``) or follow the model's leave-one-out probabilities
  (``assume="model"``),
* at random,
* by cleanlab's label-quality score (lowest first; out-of-sample probabilities from the
  exact leave-one-out ridge scores),

refit, re-certify, and report the coverage lift on the *report* half of the test images
(never used to choose) and on the selection half.

Features: label-free Coates-Ng k-means patch features (``--centroids``), or a cached
``.npz`` with ``F_train`` (aligned with the chosen training subset), ``F_test``.

    python benchmarks/relabel_cifar10n.py --n-train 10000 --centroids 256

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


def main(argv=None):
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
    p.add_argument("--fraction", type=float, default=0.05)
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
    one_vote = eye[lab["random_label1"][train_idx]]
    three_votes = sum(eye[lab[f"random_label{k}"][train_idx]] for k in (1, 2, 3))
    pi1 = one_vote.astype(float)
    n = len(train_idx)
    alpha, loo_acc = _choose_alpha(F_train, pi1, [n * s for s in (0.01, 0.1, 1.0, 10.0)])

    def fit_certify(counts):
        clf = CNATClassifier(module="linear", head="ridge", alpha=alpha,
                             budget=NoiseBudgetTransformer(pi="votes", evidence="counts"))
        clf.fit(F_train, counts)
        cert = clf.certify(F_test, tier="stochastic", delta=args.delta)
        return clf, cert

    base_clf, base_cert = fit_certify(one_vote)
    n_pick = int(round(args.fraction * n))
    t0 = time.perf_counter()
    ranking = suggest_relabels(base_clf, F_test[select], k=2, delta=args.delta)
    t_rank = time.perf_counter() - t0
    ranking_model = suggest_relabels(base_clf, F_test[select], k=2, delta=args.delta, assume="model")
    loo = _ridge_loo_scores(F_train, pi1, alpha, base_clf.coef_, base_clf.intercept_)
    quality = get_label_quality_scores(pi1.argmax(1), softmax(loo / base_clf.temperature_, axis=1))
    picks = {
        "suggest_relabels (assume=plurality)": ranking["index"].to_numpy()[:n_pick],
        "suggest_relabels (assume=model)": ranking_model["index"].to_numpy()[:n_pick],
        "random": rng.choice(n, n_pick, replace=False),
        "cleanlab_quality": np.argsort(quality, kind="stable")[:n_pick],
    }
    rows = [{
        "selection": "none (1 vote each)", "relabelled": 0,
        "coverage_report": base_cert.certified[~select].mean(), "coverage_select": base_cert.certified[select].mean(),
        "lift_report": 0.0, "lift_select": 0.0,
        "top1_clean": float(np.mean(base_cert.prediction == y_test)),
        "certified_accuracy_report": float(np.mean(base_cert.certified[~select] & (base_cert.prediction[~select] == y_test[~select]))),
    }]
    for name, idx in picks.items():
        counts = one_vote.copy()
        counts[idx] = three_votes[idx]
        _, cert = fit_certify(counts)
        rows.append({
            "selection": name, "relabelled": len(idx),
            "coverage_report": cert.certified[~select].mean(), "coverage_select": cert.certified[select].mean(),
            "lift_report": cert.certified[~select].mean() - base_cert.certified[~select].mean(),
            "lift_select": cert.certified[select].mean() - base_cert.certified[select].mean(),
            "top1_clean": float(np.mean(cert.prediction == y_test)),
            "certified_accuracy_report": float(np.mean(cert.certified[~select] & (cert.prediction[~select] == y_test[~select]))),
        })
    all_three = three_votes
    _, cert3 = fit_certify(all_three)
    rows.append({
        "selection": "all (3 votes each)", "relabelled": n,
        "coverage_report": cert3.certified[~select].mean(), "coverage_select": cert3.certified[select].mean(),
        "lift_report": cert3.certified[~select].mean() - base_cert.certified[~select].mean(),
        "lift_select": cert3.certified[select].mean() - base_cert.certified[select].mean(),
        "top1_clean": float(np.mean(cert3.prediction == y_test)),
        "certified_accuracy_report": float(np.mean(cert3.certified[~select] & (cert3.prediction[~select] == y_test[~select]))),
    })
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    header = (f"Relabeling on CIFAR-10N: {n} training images (1 vote each to start), {len(test_idx)} clean "
              f"test images ({select.sum()} to select, {(~select).sum()} to report), features: {feature_name}, "
              f"ridge alpha = {alpha:g} (best leave-one-out accuracy {loo_acc:.3f} on the 1-vote labels), "
              f"tier stochastic at delta = {args.delta}, {n_pick} images ({args.fraction:.0%}) get two more real votes. "
              f"Wall time {time.perf_counter() - t_start:.0f} s (features {t_feat:.0f} s, ranking {t_rank:.1f} s).")
    md = header + "\n\n" + _markdown(table) + "\n"
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
