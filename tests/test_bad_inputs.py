"""Bad inputs, one table: each names its error class and message, through the API and through ``cnat run``.

Every row builds its files in a fresh folder next to a good image folder (four class
folders ``cat dog eel fox``, two PNGs each) and a good long-format CSV. ``api`` is the
Python call (``None`` where the input only exists on the command line), ``cli`` the
arguments after ``cnat run`` (``None`` where the input only exists in the API). The CLI
must exit 2 with ``cnat: error:`` and the message, no traceback, before any training.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from sklearn_cnat import CNATClassifier, NoiseBudgetTransformer
from sklearn_cnat.aggregation import DawidSkene
from sklearn_cnat.cli import EXIT_USAGE, main
from sklearn_cnat.datasets import load_image_folder
from sklearn_cnat.evidence import read_evidence
from sklearn_cnat.exceptions import (
    CertificationError,
    CNATTypeError,
    CNATValueError,
    InputFileError,
    NoiseBudgetError,
)
from sklearn_cnat.pipeline import make_pipeline

CLASSES = ["cat", "dog", "eel", "fox"]
NAMES = [f"{c}{j}.png" for c in CLASSES for j in range(2)]  # file names, folder order


def _png(path, value=0, size=4):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _write(path, text, mode="w"):
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _truncated_png(path):
    """A 32x32 noisy PNG cut to 40 % of its bytes (PIL: "image file is truncated")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(0.4 * len(data))])


def _long_rows(n_votes=2):
    return "".join(f"{name},w{a},{name[:3]}\n" for name in NAMES for a in range(n_votes))


def _counts_csv(columns, rows=None):
    rows = rows or [f"{name}," + ",".join("1" if j == CLASSES.index(name[:3]) % len(columns) else "0"
                                          for j in range(len(columns))) for name in NAMES]
    return "image," + ",".join(columns) + "\n" + "\n".join(rows) + "\n"


@pytest.fixture
def root(tmp_path):
    for name in NAMES:
        _png(tmp_path / "imgs" / name[:3] / name, value=40 * CLASSES.index(name[:3]))
    _write(tmp_path / "long.csv", "image,annotator,label\n" + _long_rows())
    return tmp_path


def _votes(root, text, name="v.csv", mode="w"):
    return _write(root / name, text, mode)


def _names(root):
    return load_image_folder(root / "imgs").names


# (id, make(root) -> None (files), api(root) -> raises, error class, api regex, cli(root) -> argv or None, cli regex)
CASES = [
    # ---- votes files
    ("votes-missing", None, lambda r: read_evidence(r / "nope.csv"), InputFileError, "votes file not found",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "nope.csv")], "votes file not found"),
    ("votes-is-folder", None, lambda r: read_evidence(r / "imgs"), InputFileError, "is a folder",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "imgs")], "is a folder"),
    ("votes-suffix", lambda r: _votes(r, "{}", "v.json"), lambda r: read_evidence(r / "v.json"), InputFileError,
     r"v.json: votes must be a \.csv", lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.json")],
     r"v.json: votes must be a \.csv"),
    ("votes-empty", lambda r: _votes(r, ""), lambda r: read_evidence(r / "v.csv"), InputFileError,
     "v.csv: the file is empty", lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")],
     "v.csv: the file is empty"),
    ("votes-header-only", lambda r: _votes(r, "image,annotator,label\n"), lambda r: read_evidence(r / "v.csv"),
     InputFileError, "header but no rows", lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")],
     "header but no rows"),
    ("votes-duplicate-header", lambda r: _votes(r, "image,cat,cat\na.png,1,0\n"),
     lambda r: read_evidence(r / "v.csv"), InputFileError, "names the column 'cat' twice",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "names the column 'cat' twice"),
    ("votes-not-utf8", lambda r: _votes(r, b"image,label\n\xff\xfe\x00\x81,1\n", mode="wb"),
     lambda r: read_evidence(r / "v.csv"), InputFileError, "not a UTF-8 text file",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "not a UTF-8 text file"),
    ("votes-ragged", lambda r: _votes(r, "image,annotator,label\na.png,w1,cat\nb.png,w1,cat,dog,eel\n"),
     lambda r: read_evidence(r / "v.csv"), InputFileError, "v.csv: not a valid CSV file",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "not a valid CSV file"),
    ("votes-npy-corrupt", lambda r: _votes(r, b"\x93NUMPY garbage", "v.npy", mode="wb"),
     lambda r: read_evidence(r / "v.npy"), InputFileError, r"v.npy: not a readable \.npy array",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.npy")], r"not a readable \.npy array"),
    # ---- long format
    ("long-blank-label", lambda r: _votes(r, "image,annotator,label\ncat0.png,w1,cat\ncat1.png,w1,\n"),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "v.csv: the label is blank in line 3",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "the label is blank in line 3"),
    ("long-blank-item", lambda r: _votes(r, "image,annotator,label\n,w1,cat\n"),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "the item is blank in line 2",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "the item is blank in line 2"),
    ("long-duplicate-vote", lambda r: _votes(r, "image,annotator,label\ncat0.png,w1,cat\ncat0.png,w1,dog\n"),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError,
     "annotator 'w1' labelled item 'cat0.png' twice \\(line 2 and line 3\\)",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "labelled item 'cat0.png' twice"),
    ("long-declared-no-annotator", lambda r: _votes(r, "image,label\ncat0.png,cat\n"),
     lambda r: read_evidence(r / "v.csv", evidence="long"), NoiseBudgetError, "has no annotator column",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv"), "--evidence", "long"],
     "has no annotator column"),
    ("long-unknown-class", lambda r: _votes(r, "image,annotator,label\n" + _long_rows().replace("fox1.png,w0,fox",
                                                                                             "fox1.png,w0,gnu")),
     lambda r: read_evidence(r / "v.csv", classes=CLASSES), NoiseBudgetError,
     r"labels contain labels outside the classes \['cat', 'dog', 'eel', 'fox'\]: 'gnu'",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "not class folders.*'gnu'"),
    ("long-names-do-not-match", lambda r: _votes(r, "image,annotator,label\n"
                                                 + _long_rows().replace("dog1.png", "dog9.png")),
     lambda r: read_evidence(r / "v.csv").align(_names(r), what="images"), NoiseBudgetError,
     r"do not match the images \(7 matched\); 1 of the 8 images have no votes \(first: 'dog/dog1.png'\); 1 of "
     r"the 8 items in v.csv are not among the images \(first: 'dog9.png'\)",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")],
     r"have no votes \(first: 'dog/dog1.png'\).*\(first: 'dog9.png'\)"),
    ("long-image-without-votes", lambda r: _votes(r, "image,annotator,label\n" + "".join(
        line + "\n" for line in _long_rows().splitlines() if not line.startswith("eel0.png"))),
     lambda r: read_evidence(r / "v.csv").align(_names(r), what="images"), NoiseBudgetError,
     r"1 of the 8 images have no votes \(first: 'eel/eel0.png'\)",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "have no votes.*eel/eel0.png"),
    # ---- wide tables
    ("counts-blank-auto", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat0.png,1,0", "cat0.png,1,")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError,
     "ambiguous under evidence='auto'.*vote counts.*annotator label matrix.*evidence='annotators'",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "ambiguous.*evidence='annotators'"),
    ("counts-minus-one-auto", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat0.png,1,0", "cat0.png,1,-1")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "ambiguous.*column 1: -1",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "ambiguous.*column 1: -1"),
    ("counts-negative", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat0.png,1,0", "cat0.png,1,-2")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "vote counts must be non-negative",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "must be non-negative"),
    ("counts-fraction", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat0.png,1,0", "cat0.png,1,0.5")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "vote counts must be integers",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "must be integers"),
    ("counts-zero-votes", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat0.png,1,0,0,0", "cat0.png,0,0,0,0")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "1 rows have zero votes \\(e.g. row 0\\)",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "zero votes"),
    ("counts-3-columns-4-folders", lambda r: _votes(r, _counts_csv(CLASSES[:3], [
        f"{n},{int(n[:3] == 'cat')},{int(n[:3] == 'dog')},{int(n[:3] in ('eel', 'fox'))}" for n in NAMES])),
     lambda r: read_evidence(r / "v.csv", classes=CLASSES), NoiseBudgetError,
     "vote counts have 3 columns but classes has 4 entries",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")],
     "has 3 count columns but .* has 4 class folders"),
    ("counts-columns-not-classes", lambda r: _votes(r, _counts_csv(["ant", "bee", "cow", "doe"])),
     lambda r: read_evidence(r / "v.csv", classes=CLASSES), NoiseBudgetError,
     r"the count columns \['ant', 'bee', 'cow', 'doe'\] are not the classes",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")],
     "count columns of v.csv .* are not the class folders"),
    ("annotator-named-numbers", lambda r: _votes(r, "image,annotator_1,annotator_2\n"
                                                 + "".join(f"{n},{i % 4},{i % 4}\n" for i, n in enumerate(NAMES))),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "named like annotators.*evidence='annotators'",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "named like annotators"),
    ("wide-duplicate-item", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat1.png", "cat0.png")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError,
     "item 'cat0.png' appears twice \\(line 2 and line 3\\)",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "appears twice"),
    ("wide-blank-item", lambda r: _votes(r, _counts_csv(CLASSES).replace("cat1.png", "")),
     lambda r: read_evidence(r / "v.csv"), NoiseBudgetError, "item column 'image' is blank in line 3",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "is blank in line 3"),
    ("wide-without-names", lambda r: _votes(r, "\n".join(",".join("1" if c == n[:3] else "0" for c in CLASSES)
                                                      for n in NAMES) + "\n"),
     lambda r: read_evidence(r / "v.csv").align(_names(r)), NoiseBudgetError, "v.csv has no item names to match",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "v.csv")], "does not name its items"),
    ("multiannotator-output", None,
     lambda r: read_evidence({"label_quality": pd.DataFrame({"consensus_label": [0]})}), NoiseBudgetError,
     "already scored", None, None),
    ("evidence-kind", None, lambda r: read_evidence([0, 1], evidence="lines"), NoiseBudgetError,
     "evidence must be one of", lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "long.csv"),
                                           "--evidence", "lines"], "invalid choice: 'lines'"),
    # ---- images
    ("images-missing", None, lambda r: load_image_folder(r / "nope"), InputFileError, "image folder not found",
     lambda r: ["--images", str(r / "nope"), "--votes", str(r / "long.csv")], "images not found"),
    ("images-truncated-png", lambda r: _truncated_png(r / "imgs" / "cat" / "cat0.png"),
     lambda r: load_image_folder(r / "imgs"), InputFileError, r"cat0.png: cannot decode the image .*truncated",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "long.csv")], r"cat/cat0.png: cannot decode"),
    ("images-not-an-image", lambda r: _write(r / "imgs" / "dog" / "dog0.png", "hello"),
     lambda r: load_image_folder(r / "imgs"), InputFileError, "dog0.png: not an image PIL can read",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "long.csv")], "dog0.png: not an image"),
    ("images-mixed-layout", lambda r: _png(r / "imgs" / "stray.png"),
     lambda r: load_image_folder(r / "imgs"), InputFileError, "both at its top level .*layout='classes'",
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "long.csv")], "both at its top level"),
    ("images-none", lambda r: (r / "empty").mkdir(), lambda r: load_image_folder(r / "empty"), InputFileError,
     "empty: no image files", lambda r: ["--images", str(r / "empty"), "--votes", str(r / "long.csv")],
     "no image files"),
    ("images-sizes-differ", lambda r: _png(r / "imgs" / "fox" / "fox1.png", size=6),
     lambda r: load_image_folder(r / "imgs"), InputFileError, "different sizes.*pass image_size", None, None),
    ("images-layout-option", None, lambda r: load_image_folder(r / "imgs", layout="tree"), CNATValueError,
     "layout must be 'auto', 'classes' or 'flat'", None, None),
    ("images-npy-shape", lambda r: np.save(r / "x.npy", np.zeros((8, 4), dtype=np.uint8)), None, None, None,
     lambda r: ["--images", str(r / "x.npy"), "--votes", str(r / "long.csv")], "expected images of shape"),
    ("images-npy-votes-named", lambda r: np.save(r / "x.npy", np.zeros((8, 4, 4, 3), dtype=np.uint8)), None,
     None, None, lambda r: ["--images", str(r / "x.npy"), "--votes", str(r / "long.csv")],
     "names its items .* array without file names"),
    # ---- estimators and certificates
    ("aggregator-without-identities", None,
     lambda r: NoiseBudgetTransformer(aggregator=DawidSkene()).fit(np.array([[2, 0], [1, 1]])), NoiseBudgetError,
     "aggregator=DawidSkene .* needs to know who gave which vote; counts evidence", None, None),
    ("aggregator-with-pred-probs", None,
     lambda r: NoiseBudgetTransformer(evidence="annotators", aggregator=DawidSkene()).fit(
         np.array([[0, 1], [1, 1]]), pred_probs=np.full((2, 2), 0.5)), NoiseBudgetError,
     "pred_probs cannot be combined with an aggregator", None, None),
    ("aggregator-stochastic-tier", None,
     lambda r: CNATClassifier(head="ridge", budget=NoiseBudgetTransformer(
         evidence="annotators", aggregator=DawidSkene(), classes=[0, 1])).fit(
         np.arange(12.0).reshape(6, 2), np.array([[0, 0, 1], [1, 1, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0], [1, 1, 0]])
     ).certify(np.zeros((2, 2)), tier="stochastic"), CertificationError,
     "tier='stochastic' needs each row of pi to be fixed by that example's own votes.*aggregator DawidSkene",
     None, None),
    ("long-frame-named-items", None,
     lambda r: NoiseBudgetTransformer().fit(pd.DataFrame({"task": ["a.png", "b.png"], "worker": [1, 1],
                                                          "label": [0, 1]})), NoiseBudgetError,
     r"long-format votes name their items \('a.png'.*align\(item_names\)", None, None),
    ("align-duplicate-names", None,
     lambda r: read_evidence(r / "long.csv").align(["cat0.png", "cat0.png"], what="images"), NoiseBudgetError,
     "the images contain the name 'cat0.png' more than once", None, None),
    ("dawid-skene-columns", None, lambda r: DawidSkene().fit(pd.DataFrame({"task": [0], "label": [1]})),
     CNATValueError, r"columns task, worker, label; missing \['worker'\]", None, None),
    ("pipeline-step-needs-y", None,
     lambda r: make_pipeline(__import__("sklearn.feature_selection", fromlist=["SelectKBest"]).SelectKBest(k=1),
                             CNATClassifier(head="ridge")).fit(np.eye(4), np.eye(4, 2, dtype=int) + 1),
     CNATValueError, "a step before the final estimator needs y to fit", None, None),
    ("pipeline-final-cannot-certify", None,
     lambda r: make_pipeline(__import__("sklearn.linear_model", fromlist=["Ridge"]).Ridge()).fit(
         np.eye(3), [0.0, 1.0, 2.0]).certify(np.eye(3)), CNATTypeError, "'ridge' \\(Ridge\\) has no certify",
     None, None),
    # ---- options (command line only)
    ("option-delta-0", None, None, None, None, lambda r: ["--delta", "0"], r"--delta must be in \(0, 1\)"),
    ("option-delta-1.5", None, None, None, None, lambda r: ["--delta", "1.5"], r"--delta must be in \(0, 1\) .*got 1.5"),
    ("option-test-size-0", None, None, None, None, lambda r: ["--test-size", "0"], r"--test-size must be in \(0, 1\)"),
    ("option-test-size-1", None, None, None, None, lambda r: ["--test-size", "1"], r"--test-size must be in"),
    ("option-radius", None, None, None, None, lambda r: ["--radius", "3"], r"--radius must be in \[0, 2\]"),
    ("option-alpha", None, None, None, None, lambda r: ["--alpha", "0"], "--alpha must be > 0"),
    ("option-epochs", None, None, None, None, lambda r: ["--epochs", "0"], "--epochs must be >= 1"),
    ("option-votes-alone", None, None, None, None, lambda r: ["--votes", str(r / "long.csv")], "--votes needs --images"),
    ("option-output-file", lambda r: _write(r / "out.txt", "x"), None, None, None,
     lambda r: ["--output", str(r / "out.txt")], "--output .*out.txt exists and is not a folder"),
    ("option-test-size-too-small", None, None, None, None,
     lambda r: ["--images", str(r / "imgs"), "--votes", str(r / "long.csv"), "--test-size", "0.05"],
     "--test-size 0.05 cannot split 8 examples"),
]
IDS = [c[0] for c in CASES]
API = [c for c in CASES if c[2] is not None]
CLI = [c for c in CASES if c[5] is not None]


def test_the_table_is_large():
    assert len(API) >= 30 and len(CLI) >= 30 and len(set(IDS)) == len(IDS)


@pytest.mark.parametrize("case", API, ids=[c[0] for c in API])
def test_api_error(case, root):
    _, make, call, error, match, _, _ = case
    if make is not None:
        make(root)
    with pytest.raises(error, match=match) as info:
        call(root)
    assert type(info.value) is error  # the exact class, not a subclass


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_error(case, root, capsys, monkeypatch):
    _, make, _, _, _, argv, match = case
    if make is not None:
        make(root)

    def no_training(*args, **kwargs):  # every bad input must stop before any model is trained
        raise AssertionError("training started")

    monkeypatch.setattr("sklearn_cnat.cli._estimators", no_training)
    args = ["run", "--quiet", "--output", str(root / "out")] + argv(root)
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's own errors (an invalid choice) exit 2 as well
        code = exc.code
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert "Traceback" not in err
    assert "error:" in err
    assert __import__("re").search(match, err), err


def test_cli_errors_without_traceback_in_a_real_process(root):
    _truncated_png(root / "imgs" / "cat" / "cat0.png")
    for argv, message in (([], "cat0.png: cannot decode"), (["--delta", "1.5"], "--delta must be in (0, 1)")):
        cmd = [sys.executable, "-m", "sklearn_cnat.cli", "run", "--quiet", "--images", str(root / "imgs"),
               "--votes", str(root / "long.csv"), "--output", str(root / "o")] + argv
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not Path(root / "o" / "results.csv").exists()
