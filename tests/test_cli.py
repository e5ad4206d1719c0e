import csv

import numpy as np
import pytest

from sklearn_cnat.cli import EXIT_OK, EXIT_USAGE, build_parser, main


def test_help_is_complete(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--images", "--votes", "--cifar10n", "--mapping", "--geometry", "--delta", "--output"):
        assert flag in out
    assert main([]) == EXIT_USAGE


def test_run_default_digits_small(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "out"
    code = main(["run", "--output", str(out), "--epochs", "2", "--quiet", "--n-relabel", "5"])
    assert code == EXIT_OK
    printed = capsys.readouterr().out
    assert "cnat-ridge" in printed and "coverage_stochastic" in printed
    for name in ("results.md", "results.csv", "coverage.png", "reliability.png", "relabel_priority.csv"):
        assert (out / name).exists(), name
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["method"] for r in rows] == ["cross-entropy", "cnat", "cnat-ridge"]
    ridge = rows[2]
    assert 0 <= float(ridge["cert_acc_stochastic"]) <= float(ridge["coverage_stochastic"]) <= 1
    assert float(ridge["accuracy"]) > 0.8
    relabel = list(csv.DictReader((out / "relabel_priority.csv").open()))
    assert len(relabel) == 5


def test_user_arrays(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    rng = np.random.RandomState(0)
    y = rng.randint(0, 2, 60)
    images = rng.randint(0, 80, size=(60, 8, 8, 3)).astype(np.uint8)
    images[y == 1] += 100
    votes = np.eye(2, dtype=int)[y] * 2 + np.eye(2, dtype=int)[rng.randint(0, 2, 60)]
    np.save(tmp_path / "x.npy", images)
    np.savetxt(tmp_path / "votes.csv", votes, fmt="%d", delimiter=",")
    code = main(["run", "--images", str(tmp_path / "x.npy"), "--votes", str(tmp_path / "votes.csv"),
                 "--output", str(tmp_path / "o"), "--epochs", "1", "--quiet", "--n-relabel", "3"])
    assert code == EXIT_OK
    assert (tmp_path / "o" / "results.csv").exists()


def test_clear_errors_and_exit_codes(tmp_path, capsys):
    assert main(["run", "--images", str(tmp_path / "missing.npy"), "--output", str(tmp_path)]) == EXIT_USAGE
    assert "images not found" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", np.zeros((10, 4, 4, 3), dtype=np.uint8))
    np.save(tmp_path / "v.npy", np.ones((7, 2), dtype=int))
    assert main(["run", "--images", str(tmp_path / "x.npy"), "--votes", str(tmp_path / "v.npy"),
                 "--output", str(tmp_path)]) == EXIT_USAGE
    assert "10 images but 7 rows of votes" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((10, 4), dtype=np.uint8))
    assert main(["run", "--images", str(tmp_path / "bad.npy"), "--votes", str(tmp_path / "v.npy"),
                 "--output", str(tmp_path)]) == EXIT_USAGE
    assert "expected images" in capsys.readouterr().err
    assert main(["run", "--votes", str(tmp_path / "v.npy"), "--output", str(tmp_path)]) == EXIT_USAGE


def test_parser_defaults():
    args = build_parser().parse_args(["run"])
    assert args.mapping == "flat" and args.radius == 0.05 and args.delta == 0.05


# --------------------------------------------------------------------------- users' files: names, crowd exports


CLASSES = ["cat", "dog", "eel"]


def _image_folder(root, n_per_class=12, seed=0):
    """Class folders of 8x8 PNGs and the crowd's votes (1 to 3 per image, 75 % right)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    names, votes = [], []
    for k, c in enumerate(CLASSES):
        (root / "imgs" / c).mkdir(parents=True)
        for j in range(n_per_class):
            img = rng.integers(0, 60, (8, 8, 3)).astype(np.uint8)
            img[..., k] += 150
            Image.fromarray(img).save(root / "imgs" / c / f"{c}{j:02d}.png")
            names.append(f"{c}{j:02d}.png")
            workers = rng.choice(5, size=rng.integers(1, 4), replace=False)
            votes.append([(f"w{w}", k if rng.random() < 0.75 else int(rng.integers(0, 3))) for w in workers])
    return names, votes


def _run_csv(root, votes_file, name, *extra):
    out = root / name
    code = main(["run", "--images", str(root / "imgs"), "--votes", str(votes_file), "--output", str(out),
                 "--epochs", "1", "--quiet", "--n-relabel", "4", *extra])
    assert code == EXIT_OK
    rows = {r["method"]: r for r in csv.DictReader((out / "results.csv").open())}
    return rows, list(csv.DictReader((out / "relabel_priority.csv").open()))


MEASURED = ("accuracy", "ece", "brier", "coverage_stochastic", "cert_acc_stochastic", "coverage_bounded",
            "cert_acc_bounded", "median_max_flips")


def test_long_format_in_shuffled_order_equals_counts_in_folder_order(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    names, votes = _image_folder(tmp_path)
    long = [(n, w, CLASSES[k]) for n, vs in zip(names, votes) for w, k in vs]
    order = np.random.default_rng(1).permutation(len(long))
    with (tmp_path / "long.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "annotator", "label"])
        writer.writerows(long[i] for i in order)
    with (tmp_path / "counts.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image"] + CLASSES)
        for n, vs in zip(names, votes):
            writer.writerow([n] + [sum(k == c for _, k in vs) for c in range(3)])
    # one column per annotator, integer labels (indices of the sorted class folders), blanks for missing
    with (tmp_path / "annotators.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image"] + [f"w{w}" for w in range(5)])
        for n, vs in zip(names, votes):
            given = dict(vs)
            writer.writerow([n] + [given.get(f"w{w}", "") for w in range(5)])
    from_long, relabel = _run_csv(tmp_path, tmp_path / "long.csv", "long")
    from_counts, _ = _run_csv(tmp_path, tmp_path / "counts.csv", "counts")
    from_annotators, _ = _run_csv(tmp_path, tmp_path / "annotators.csv", "ann", "--evidence", "annotators")
    for method in from_counts:
        for col in MEASURED:
            assert from_long[method][col] == from_counts[method][col] == from_annotators[method][col], (method, col)
    assert float(from_counts["cnat-ridge"]["accuracy"]) > 0.5
    assert all(r["item"].split("/")[0] in CLASSES and r["item"].endswith(".png") for r in relabel)
    assert "indices of the sorted class folders" in capsys.readouterr().err


def test_votes_are_matched_by_name_and_position_only_when_nameless(tmp_path, capsys):
    names, votes = _image_folder(tmp_path, n_per_class=3)
    (tmp_path / "wrong.csv").write_text("image,annotator,label\n"
                                        + "".join(f"x{n},w1,cat\n" for n in names))
    assert main(["run", "--images", str(tmp_path / "imgs"), "--votes", str(tmp_path / "wrong.csv"),
                 "--output", str(tmp_path / "o"), "--quiet"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "do not match the images" in err and "first: 'cat/cat00.png'" in err and "'xcat00.png'" in err
    # both sides without names: by position, and it says so
    rng = np.random.RandomState(0)
    np.save(tmp_path / "x.npy", rng.randint(0, 255, (40, 8, 8, 3)).astype(np.uint8))
    np.savetxt(tmp_path / "v.csv", np.eye(2, dtype=int)[rng.randint(0, 2, 40)] * 2, fmt="%d", delimiter=",")
    code = main(["run", "--images", str(tmp_path / "x.npy"), "--votes", str(tmp_path / "v.csv"),
                 "--output", str(tmp_path / "o2"), "--epochs", "1", "--quiet", "--n-relabel", "2"])
    assert code == EXIT_OK
    assert "by position (neither names its items)" in capsys.readouterr().err
    relabel = list(csv.DictReader((tmp_path / "o2" / "relabel_priority.csv").open()))
    assert all(0 <= int(r["item"]) < 40 for r in relabel)  # rows of the input, not of the shuffled split


def test_cli_docs_show_the_current_help():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert "--8<--" not in text
    block = text.split("<!-- cnat run --help -->")[1].split("```text\n")[1].split("```")[0]
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    import os

    os.environ["COLUMNS"] = "100"
    try:
        assert block.strip() == run.format_help().strip()
    finally:
        del os.environ["COLUMNS"]


def test_feature_split_gives_whole_model_certificates_for_the_head_rows(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    names, votes = _image_folder(tmp_path)
    long = tmp_path / "long.csv"
    long.write_text("image,annotator,label\n" + "".join(
        f"{n},{w},{CLASSES[c]}\n" for n, vs in zip(names, votes) for w, c in vs))
    rows, _ = _run_csv(tmp_path, long, "split", "--feature-split", "0.5", "--backbone", "small_cnn")
    assert rows["cnat-ridge"]["scope"] == "model" and rows["cnat"]["scope"] == "-"
    for bad in ("0", "1", "1.5"):
        assert main(["run", "--images", str(tmp_path / "imgs"), "--votes", str(long), "--feature-split", bad,
                     "--output", str(tmp_path / "bad")]) == EXIT_USAGE
        assert "--feature-split must be a fraction in (0, 1)" in capsys.readouterr().err
    assert main(["run", "--feature-split", "0.5", "--output", str(tmp_path / "bad")]) == EXIT_USAGE
    assert "--feature-split needs image data" in capsys.readouterr().err
    for bad, message in ((["--pseudo-label-epochs", "2"], "--pseudo-label-epochs needs --feature-split"),
                         (["--feature-split", "0.5", "--pseudo-label-epochs", "0"], "--pseudo-label-epochs must be >= 1")):
        assert main(["run", "--images", str(tmp_path / "imgs"), "--votes", str(long), *bad,
                     "--output", str(tmp_path / "bad")]) == EXIT_USAGE
        assert message in capsys.readouterr().err
    # the head on every row, the backbone rows' labels held: still scope model, relabel list of covered items
    # the default head sees every row, the backbone rows' labels held; disjoint: the other rows only
    rows, relabel = _run_csv(tmp_path, long, "split_disjoint", "--feature-split", "0.5", "--split-head", "disjoint",
                             "--backbone", "small_cnn")
    assert rows["cnat-ridge"]["scope"] == "model" and len(relabel) == 4


def test_ema_tta_and_elr_reach_the_networks_and_bad_values_are_refused(tmp_path, capsys, monkeypatch):
    pytest.importorskip("matplotlib")
    import sklearn_cnat.cli as cli

    names, votes = _image_folder(tmp_path)
    long = tmp_path / "long.csv"
    long.write_text("image,annotator,label\n" + "".join(
        f"{n},{w},{CLASSES[c]}\n" for n, vs in zip(names, votes) for w, c in vs))
    seen = []
    real = cli._estimators
    monkeypatch.setattr(cli, "_estimators", lambda args, data, n: seen.append(real(args, data, n)) or seen[-1])
    rows, _ = _run_csv(tmp_path, long, "ema", "--ema", "0.9", "--tta", "flip_translate", "--elr", "3",
                       "--backbone", "small_cnn")
    assert set(rows) == {"cross-entropy", "cnat", "cnat-ridge"}
    for est in seen[0].values():
        assert est.ema == 0.9 and est.tta == "flip_translate" and est.tta_ == "flip_translate"
        assert "weight_ema" in dict(est.net_.callbacks_)
        assert est.elr_lambda == 3.0 and est.net_.elr_memory.abs().sum() > 0
    for bad in ("0", "1", "-0.5", "nan", "often"):
        assert main(["run", "--images", str(tmp_path / "imgs"), "--votes", str(long), "--ema", bad,
                     "--output", str(tmp_path / "bad")]) == EXIT_USAGE
        assert "--ema must be a decay in (0, 1)" in capsys.readouterr().err
    for bad in ("-1", "nan"):
        assert main(["run", "--images", str(tmp_path / "imgs"), "--votes", str(long), "--elr", bad,
                     "--output", str(tmp_path / "bad")]) == EXIT_USAGE
        assert "--elr must be a weight >= 0" in capsys.readouterr().err
    for flag in (["--ema", "0.99"], ["--tta", "flip"], ["--elr", "3"]):
        assert main(["run", *flag, "--output", str(tmp_path / "bad")]) == EXIT_USAGE
        assert "--ema, --tta and --elr need image data" in capsys.readouterr().err


def test_relabel_list_is_the_expected_gain_ranking_with_item_names(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import sklearn_cnat.relabel as relabel

    calls = []
    real = relabel.suggest_relabels

    def recording(*args, **kwargs):
        calls.append((kwargs, real(*args, **kwargs)))
        return calls[-1][1].copy()

    monkeypatch.setattr(relabel, "suggest_relabels", recording)
    names, votes = _image_folder(tmp_path)
    with (tmp_path / "long.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "annotator", "label"])
        writer.writerows((n, w, CLASSES[k]) for n, vs in zip(names, votes) for w, k in vs)
    _, listed = _run_csv(tmp_path, tmp_path / "long.csv", "o", "--vote-model", "model")
    (kwargs, ranking), = calls
    assert kwargs["strategy"] == "expected" and kwargs["vote_model"] == "model" and kwargs["random_state"] == 0
    assert [int(r["index"]) for r in listed] == ranking["index"].tolist()
    np.testing.assert_allclose([float(r["coverage_gain"]) for r in listed], ranking["coverage_gain"], rtol=1e-12)
    # every listed item is an image file of the folder (by name), each once
    files = {f"{c}/{n}" for c in CLASSES for n in names if n.startswith(c)}
    assert all(r["item"] in files for r in listed) and len({r["item"] for r in listed}) == len(listed) == 4


def test_fast_cnn_estimators_are_the_package_recipe():
    """cnat run --backbone fast_cnn on images trains sklearn_cnat.recipes.fast_cnn_recipe (the
    benchmark's --recipe airbench94), with the batch and weight average sized to the data."""
    import sklearn_cnat.cli as cli
    from sklearn_cnat.recipes import fast_cnn_recipe

    data = {"kind": "images", "X": np.zeros((4, 32, 32, 3), dtype=np.uint8), "classes": ["a", "b"]}
    for n, batch in ((50000, 256), (2560, 256), (2000, 128), (300, 16)):
        args = build_parser().parse_args(["run", "--images", "x", "--feature-split", "0.5"])
        ests = cli._estimators(args, data, n)
        expected = fast_cnn_recipe(n, max_epochs=20, batch_size=batch, module_kwargs={"whiten": True})
        for name in ("cross-entropy", "cnat"):
            params = ests[name].get_params()
            assert {k: params[k] for k in expected} == expected, (n, name)
        split = fast_cnn_recipe(int(round(0.5 * n)), max_epochs=20, batch_size=batch, module_kwargs={"whiten": True})
        ridge = ests["cnat-ridge"].get_params()
        assert {k: ridge[k] for k in split} == split and ridge["feature_split"] == 0.5
        assert ridge["split_head"] == "all"
        assert ridge["alpha"] == list(cli._ALPHAS)  # --alpha not given: the grid
        assert ridge["pseudo_label_epochs"] is None
    args = build_parser().parse_args(["run", "--images", "x", "--feature-split", "0.5", "--pseudo-label-epochs", "7"])
    assert cli._estimators(args, data, 2000)["cnat-ridge"].pseudo_label_epochs == 7
    args = build_parser().parse_args(["run", "--images", "x", "--ema", "none", "--tta", "flip", "--alpha", "3"])
    ests = cli._estimators(args, data, 50000)
    assert ests["cnat"].ema is None and ests["cnat"].tta == "flip" and ests["cnat-ridge"].alpha == 3.0
    small = {"kind": "images", "X": np.zeros((4, 8, 8, 3), dtype=np.uint8), "classes": ["a", "b"]}
    args = build_parser().parse_args(["run", "--images", "x"])
    assert cli._estimators(args, small, 100)["cnat"].module_kwargs["whiten"] is False  # under 9 x 9 pixels
