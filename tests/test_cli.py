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
