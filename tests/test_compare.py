"""antler-ray compare: matching tests by ID, pooling repetitions, the verdict's rule, the page and the exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from antler.cli import main
from antler.results.compare import Side, compare, verdict
from antler.results.repetitions import bootstrap_ci
from tests.lab.repetitions import write_reps

pytestmark = pytest.mark.no_netns

SWEEP = Path(__file__).parent / "data" / "sweep"
COMPETE = Path(__file__).parent / "data" / "compete"


def test_verdict_follows_the_intervals_and_the_direction() -> None:
    old = Side.of([20.0, 22.0, 21.0])
    assert (old.n, old.mean) == (3, 21.0) and (old.low, old.high) == bootstrap_ci([20.0, 22.0, 21.0])
    deeper = Side.of([40.0, 44.0, 42.0])
    assert verdict("rtt_ms_median", old, deeper) == "worse"
    assert verdict("goodput_mbps", old, deeper) == "better"
    assert verdict("share", old, deeper) == "changed"
    assert verdict("rtt_ms_median", old, Side.of([21.0, 23.0, 22.0])) == "within noise"  # the intervals overlap
    # One run a side: beyond noise when more than 5 % of the old value.
    assert verdict("rtt_ms_median", Side.of([20.0]), Side.of([20.9])) == "within noise"
    assert verdict("rtt_ms_median", Side.of([20.0]), Side.of([21.1])) == "worse"
    assert verdict("loss_pct", Side.of([0.0]), Side.of([0.0])) == "within noise"
    assert verdict("loss_pct", Side.of([]), Side.of([1.0])) == "missing"


def test_a_folder_compared_with_itself_is_within_noise_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for folder in (SWEEP, write_reps(tmp_path / "reps")):
        table = compare(folder, folder)
        assert len(table) and set(table["verdict"]) == {"within noise"}
        assert (table["change"] == 0).all()
    page = tmp_path / "same.html"
    assert (
        main(["compare", str(tmp_path / "reps"), str(tmp_path / "reps"), "--html", str(page), "--fail-on", "worse"])
        == 0
    )
    out = capsys.readouterr().out
    assert "worse" not in out and "within noise" in out
    assert "verdict-within-noise" in page.read_text()


def test_a_deeper_buffer_makes_the_rtt_worse_and_fails_ci(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = write_reps(tmp_path / "old"), write_reps(tmp_path / "new", rtt_scale=2.0)
    table = compare(old, new)
    rtt = table[table["metric"] == "rtt_ms_median"].set_index("test")
    # The repetitions are pooled per combination: three of cubic, two of bbr.
    assert list(rtt.index) == ["cca=bbr", "cca=cubic"]
    assert rtt.loc["cca=cubic", "old_n"] == 3 and rtt.loc["cca=cubic", "old_mean"] == pytest.approx(21.0)
    assert rtt.loc["cca=cubic", "new_mean"] == pytest.approx(42.0) and rtt.loc["cca=cubic", "change"] == pytest.approx(
        21
    )
    assert set(rtt["verdict"]) == {"worse"}
    assert set(table[table["metric"] != "rtt_ms_median"]["verdict"]) == {"within noise"}
    assert main(["compare", str(old), str(new)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("cca=cubic") and "rtt_ms_median" in x)
    lo, hi = bootstrap_ci([20.0, 22.0, 21.0])
    assert f"21 [{lo:.4g}, {hi:.4g}]" in line and line.rstrip().endswith("worse")
    assert main(["compare", str(old), str(new), "--fail-on", "worse"]) == 1


def test_single_runs_compare_by_the_tolerance(tmp_path: Path) -> None:
    new = tmp_path / "sweep"
    shutil.copytree(SWEEP, new)
    test = new / "experiment-cubic_cca-cubic_rig_rtt-10ms"
    flows = pd.read_parquet(test / "flows.parquet")
    flows["rtt_ms_p99"] = np.where(flows["flow"] == "udp", flows["rtt_ms_p99"] * 3, flows["rtt_ms_p99"])
    (test / "flows.parquet").unlink()
    flows.to_parquet(test / "flows.parquet")
    table = compare(SWEEP, new)
    changed = table[table["verdict"] != "within noise"]
    assert list(zip(changed["test"], changed["flow"], changed["metric"], changed["verdict"], strict=True)) == [
        ("experiment=cubic cca=cubic rig_rtt=10ms", "udp", "rtt_ms_p99", "worse")
    ]


def test_compare_refuses_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(SWEEP), str(tmp_path / "nope")]) == 2
    assert "no results at" in capsys.readouterr().err


def _one_buffer(src: Path, limit: str, dst: Path) -> Path:
    """Copy the stored compete sweep's tests of one buffer into dst, their IDs without rig_limit (so they match)."""
    for test in sorted(src.glob(f"experiment-compete_rig_limit-{limit}_rep-*")):
        meta = json.loads((test / "meta.json").read_text())
        meta["test_id"] = {k: v for k, v in meta["test_id"].items() if k != "rig_limit"}
        meta["path"] = f"experiment-compete_rep-{meta['test_id']['rep']}"
        shutil.copytree(test, dst / meta["path"])
        (dst / meta["path"] / "meta.json").write_text(json.dumps(meta))
    return dst


def test_measured_runs_with_the_deeper_buffer_have_a_worse_rtt(tmp_path: Path) -> None:
    shallow = _one_buffer(COMPETE, "100", tmp_path / "shallow")
    deep = _one_buffer(COMPETE, "1000", tmp_path / "deep")
    table = compare(shallow, deep).set_index(["flow", "metric"])
    assert table.loc[("udp", "rtt_ms_loaded_median"), "verdict"] == "worse"
    assert table.loc[("", "induced_latency_ms"), "verdict"] == "worse"
    assert table.loc[("", "share_bbr"), "verdict"] == "changed"  # a share has no better
    assert table.loc[("udp", "rtt_ms_loaded_median"), "old_n"] == 3
    assert set(compare(deep, deep)["verdict"]) == {"within noise"}
