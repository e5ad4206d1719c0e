"""CI-sized run of benchmarks/certified_peers.py: every method's table row is produced and consistent."""

import csv
import json
import math

import pytest


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("certified_peers.py", "certified_peers_benchmark")


def _num(v):
    return float(v) if v not in ("", None) else math.nan


def _read(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def run(bench, tmp_path_factory):
    pytest.importorskip("matplotlib")
    out = tmp_path_factory.mktemp("peers")
    args = ["--synthetic", "--quick", "--out", str(out), "--cache", str(out / "cache"), "--n-train", "300"]
    bench.main(args + ["--mode", "label_free", "split"])
    bench.main(args + ["--mode", "dpa", "--dpa-partitions", "3", "--no-reannotation"])
    return out


def test_table_is_produced_and_consistent(bench, run):
    rows = _read(run / "certified_peers.csv")
    assert {r["mode"] for r in rows} == {"label_free", "split"}
    families = {r["family"] for r in rows}
    assert families == {"ours", "SS-DPA", "kNN", "rNN", "Rosenfeld", "DPA"}
    for mode in ("label_free", "split"):
        mine = [r for r in rows if r["mode"] == mode]
        assert len({r["n_test"] for r in mine}) == 1  # identical test points
        assert len({r["n_train"] for r in mine if r["family"] != "DPA"}) == 1  # identical training rows
    for r in rows:
        top1 = _num(r["clean_top1"])
        assert 0.0 <= top1 <= 1.0
        acc = [_num(r[f"cert_acc_m{m}"]) for m in bench.MS]
        if r["median_flips"] == "":
            assert all(math.isnan(a) for a in acc) and 0.0 <= _num(r["cert_acc_own"]) <= top1
            continue
        assert all(a <= top1 + 1e-12 for a in acc), r  # certified and correct <= correct
        assert all(a >= b - 1e-12 for a, b in zip(acc, acc[1:])), r  # non-increasing in m
        assert _num(r["median_flips"]) >= -1
        assert r["statement"] and r["covers"]


def test_reannotation_rows(run):
    rows = _read(run / "certified_peers_reannotation.csv")
    assert {r["mode"] for r in rows} == {"label_free", "split"}
    assert any(r["method"].startswith("ours") for r in rows)
    assert not any(r["method"].startswith("DPA") for r in rows)
    for r in rows:
        for col in ("changed_all", "changed_certified", "changed_uncertified", "changed_certified_m100",
                    "changed_covered"):
            v = _num(r.get(col, ""))
            assert math.isnan(v) or 0.0 <= v <= 1.0
        assert int(r["n_certified"]) + int(r["n_uncertified"]) > 0
        if r["n_covered"] not in ("", "0") and not r["method"].startswith("Rosenfeld"):
            # max_flips >= the real number of flips: the refitted prediction cannot change (Rosenfeld's
            # statement is about the smoothed classifier, not the ridge prediction served after a refit)
            assert _num(r["changed_covered"]) == 0.0


def test_outputs_ratio_and_figures(run):
    runs = json.loads((run / "certified_peers_runs.json").read_text())
    for mode in ("label_free", "split"):
        info = runs[mode]["info"]
        assert info["ratio_ours_to_best_peer"] == pytest.approx(info["ours_median_flips"]
                                                                / info["best_peer_median_flips"]) \
            if info["best_peer_median_flips"] > 0 else True
        assert (run / f"certified_peers_{mode}.png").stat().st_size > 0
    text = (run / "certified_peers.md").read_text()
    assert "Ratio of our median certified flips" in text and "Published anchors" in text
    assert "DPA networks, k=3" in text and "Real re-annotation" in text


def test_rebuild_rewrites_the_same_tables(bench, run):
    before = (run / "certified_peers.csv").read_text()
    bench.main(["--synthetic", "--quick", "--out", str(run), "--cache", str(run / "cache"), "--n-train", "300",
                "--rebuild"])
    assert (run / "certified_peers.csv").read_text() == before
    info = json.loads((run / "certified_peers_runs.json").read_text())["label_free"]["info"]
    if info["ours_top1"] >= info["best_peer_top1"]:  # then the leave-one-out row itself competes
        assert info["ratio_at_no_lower_accuracy"] >= info["ratio_ours_to_best_peer"] - 1e-12
    else:
        assert math.isnan(info["ratio_at_no_lower_accuracy"]) or info["ours_no_lower_accuracy"] is not None
