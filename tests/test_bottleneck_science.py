"""The userspace bottleneck with real traffic through the dumbbell: the CUBIC experiment through it, and beside the kernel's.

They take real time (30 s tests), so they are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.analyze import analyze
from antler.results import TestResult, load

pytestmark = [pytest.mark.slow, pytest.mark.science, pytest.mark.usefixtures("ray_session")]


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def goodput_and_loaded_rtt(test: TestResult) -> tuple[float, float]:
    """Return the tcp flow's goodput (Mbit/s) and the echo's median RTT (ms) under load (after the first 6 s)."""
    flows = pd.read_parquet(test.path / "flows.parquet")
    goodput = float(flows[flows["flow"] == "tcp"].iloc[0]["goodput_mbps"])
    rtt = analyze(test).rtt
    return goodput, float(rtt[rtt["t_s"] > 6]["rtt_ms"].median())


def test_cubic_through_the_userspace_pfifo_has_the_kernels_goodput_and_queue_physics(cwd: Path) -> None:
    assert main(["run", "+experiment=cubic", "rig.bottleneck=userspace", "duration=30s"]) == 0
    (test,) = load(cwd / "results" / "latest").values()
    goodput, rtt_ms = goodput_and_loaded_rtt(test)
    assert 44 <= goodput <= 50
    # A full pfifo of 1000 packets at 50 Mbit/s is 1000 * 1514 * 8 / 50e6 = 242 ms, plus the 20 ms base.
    assert 150 <= rtt_ms <= 270
    assert test.meta["rig"]["bottleneck"] == "userspace"
    assert "pfifo limit 1000 (userspace)" in (test.path / "timeseries.html").read_text()
    queue = pd.read_parquet(test.path / "queue.parquet")
    up = queue[(queue["protocol"] == 6) & (queue["dport"] == 7777)]
    assert len(up) > 100_000  # every data packet of 30 s at 50 Mbit/s
    sent = queue[queue["verdict"] == "sent"]
    assert sent["backlog_packets"].max() == 999  # the queue fills to its limit...
    dropped = queue[queue["verdict"] == "dropped"]
    assert len(dropped) > 0 and (dropped["backlog_packets"] == 1000).all()  # ...and tail-drops what finds it full
    assert 150 <= sent["sojourn_ns"].median() / 1e6 <= 250


def test_kernel_and_userspace_bottlenecks_agree(cwd: Path) -> None:
    assert main(["run", "-m", "+experiment=cubic", "rig.bottleneck=kernel,userspace", "duration=30s"]) == 0
    tests = load(cwd / "results" / "latest")
    by = {t.meta["rig"]["bottleneck"]: goodput_and_loaded_rtt(t) for t in tests.values()}
    (k_goodput, k_rtt), (u_goodput, u_rtt) = by["kernel"], by["userspace"]
    assert abs(u_goodput - k_goodput) <= 0.03 * k_goodput, by
    assert abs(u_rtt - k_rtt) <= 0.05 * k_rtt, by
