"""Links that change and paths that differ, with real traffic through the dumbbell (issue 24).

Both directions shaped by default, a reverse-only rate, rig.schedule's
changes (applied, recorded, drawn), and a Mahimahi trace on the userspace
bottleneck. Each runs a real test of 10-15 s, so they are marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.analyze import analyze
from antler.results import TestResult, load

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]
PREFIX = "rig.netns_prefix=lkt-"


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def only_test(cwd: Path) -> TestResult:
    (test,) = load(cwd / "results" / "latest").values()
    return test


def goodputs(test: TestResult) -> dict[str, float]:
    flows = pd.read_parquet(test.path / "flows.parquet")
    return {str(r.flow): float(r.goodput_mbps) for r in flows.itertuples() if pd.notna(r.goodput_mbps)}


def test_two_downloads_through_the_default_dumbbell_share_its_50_mbits(cwd: Path) -> None:
    assert main(["run", "+experiment=tcp_ndown", "n=2", "duration=10s", PREFIX]) == 0
    test = only_test(cwd)
    down = goodputs(test)
    assert set(down) == {"down0", "down1"}
    assert 44 <= sum(down.values()) <= 50, down
    rig = test.meta["rig"]
    assert rig["reverse"]["rate_bps"] == rig["forward"]["rate_bps"] == 50_000_000
    assert rig["reverse"]["qdisc"] == "pfifo limit 1000"
    assert "50 Mbit/s pfifo limit 1000 (kernel) each way" in (test.path / "timeseries.html").read_text()


def test_a_reverse_rate_shapes_a_download_while_the_forward_direction_stays_unshaped(cwd: Path) -> None:
    args = ["run", "+experiment=tcp_ndown", "n=1", "duration=10s", "rig.rate=0", "rig.reverse.rate=20mbit", PREFIX]
    assert main(args) == 0
    test = only_test(cwd)
    (down,) = goodputs(test).values()
    assert 20 * 0.88 <= down <= 20, down
    rig = test.meta["rig"]
    assert rig["forward"]["rate_bps"] == 0 and rig["forward"]["bottleneck"] == "kernel"
    assert "→ unshaped, ← 20 Mbit/s pfifo limit 1000 (kernel)" in (test.path / "timeseries.html").read_text()


def test_ratedrop_on_the_schedule_changes_within_5_ms_and_goodput_follows(cwd: Path) -> None:
    assert main(["run", "+experiment=ratedrop", "duration=15s", PREFIX]) == 0
    test = only_test(cwd)
    events = pd.read_parquet(test.path / "rig_events.parquet")
    # Two steps, each on both directions' htb.
    assert list(events["label"]) == ["rate 10 Mbit/s"] * 2 + ["rate 50 Mbit/s"] * 2
    assert sorted(events["direction"]) == ["forward", "forward", "reverse", "reverse"]
    assert (events["lag_ms"] < 5).all() and (events["lag_ms"] >= 0).all(), events
    assert (events["error"] == "").all()
    a = analyze(test, 1.0)
    g = a.goodput[a.goodput["flow"] == "tcp"]
    assert a.t0 is not None
    for step in events[events["direction"] == "forward"].itertuples():
        t_s = (step.took_effect - a.t0).total_seconds()
        rate_mbps = step.value / 1e6
        after = g[(g["t_s"] > t_s + 1) & (g["t_s"] <= t_s + 2.5)]["goodput_mbps"]
        assert len(after) and (after >= 0.85 * rate_mbps).all(), (step.label, list(after))
        if rate_mbps < 20:
            assert (after <= rate_mbps * 1.02).all(), (step.label, list(after))
    page = (test.path / "timeseries.html").read_text().replace("\\u002f", "/")  # the figure's JSON escapes "/"
    assert '"text":"rate 10 Mbit/s"' in page and '"text":"rate 50 Mbit/s"' in page  # the lines' labels
    steps = json.loads((test.path / "meta.json").read_text())["rig"]["schedule"]
    assert [s["label"] for s in steps] == ["rate 10 Mbit/s", "rate 50 Mbit/s"]


def test_a_constant_trace_of_one_opportunity_a_millisecond_gives_a_cubic_upload_11_5_mbits(cwd: Path) -> None:
    assert main(["run", "+experiment=trace", "duration=10s", PREFIX]) == 0
    test = only_test(cwd)
    assert 11.3 <= goodputs(test)["tcp"] <= 11.7
    assert test.meta["rig"]["forward"]["trace"].endswith("const-12mbit.trace")
    assert test.meta["rig"]["forward"]["bottleneck"] == "userspace"
    assert "trace const-12mbit.trace" in (test.path / "timeseries.html").read_text()
