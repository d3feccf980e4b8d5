"""The AQMs with real traffic through the dumbbell: +experiment=aqm's sweep, ECN marks, the kernel's qdisc over time.

CUBIC and a sparse UDP echo flow through the userspace bottleneck (50 Mbit/s,
20 ms RTT, 30 s) for each queue discipline, against the figures the physics
of each queue gives. They take real time, so they are marked slow.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.analyze import analyze
from antler.results import TestResult, load

pytestmark = [pytest.mark.slow, pytest.mark.science, pytest.mark.usefixtures("ray_session")]
LOADED_S = 6.0
"""LOADED_S: the echo's RTT counts as under load from 6 s on (the upload starts at 2 s; slow start is over by 6 s)."""


def run(where: Path, *args: str) -> dict[str, TestResult]:
    """Run antler-ray in where; return the tests of the run, by their qdisc."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(where)
        assert main(["run", *args]) == 0
    tests = load(where / "results" / "latest").values()
    return {t.meta["rig"]["qdisc"].split()[0]: t for t in tests}


def flow(test: TestResult, name: str) -> pd.Series:
    """Return a flow's row of flows.parquet."""
    flows = pd.read_parquet(test.path / "flows.parquet")
    return flows[flows["flow"] == name].iloc[0]


def loaded_rtt_ms(test: TestResult) -> float:
    """Return the echo's median RTT (ms) under load."""
    rtt = analyze(test).rtt
    return float(rtt[rtt["t_s"] > LOADED_S]["rtt_ms"].median())


def goodput_mbps(test: TestResult) -> float:
    """Return the tcp flow's goodput (Mbit/s)."""
    return float(flow(test, "tcp")["goodput_mbps"])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, TestResult]]:
    """The issue's sweep, once for the module: +experiment=aqm over pfifo, codel, fq_codel and pie."""
    where = tmp_path_factory.mktemp("aqm")
    yield run(where, "-m", "+experiment=aqm", "rig.qdisc=pfifo,codel,fq_codel,pie")


def test_pfifo_is_the_queues_physics(sweep: dict[str, TestResult]) -> None:
    t = sweep["pfifo"]
    assert t.meta["rig"]["bottleneck"] == "userspace"
    # 1000 packets of 1514 bytes at 50 Mbit/s is 242 ms, plus the 20 ms base.
    assert 150 <= loaded_rtt_ms(t) <= 270
    assert 44 <= goodput_mbps(t) <= 50


def test_codel_keeps_the_queue_short_and_the_goodput(sweep: dict[str, TestResult]) -> None:
    t = sweep["codel"]
    assert goodput_mbps(t) >= 42
    assert loaded_rtt_ms(t) <= 35
    a = analyze(t)
    tcp = a.queue[(a.queue["flow"] == "tcp") & (a.queue["t_s"] > 5)]
    assert tcp["qdelay_ms"].median() <= 10
    assert flow(t, "tcp")["drops"] > 0  # CoDel without ecn drops to signal


def test_fq_codel_isolates_the_sparse_flow(sweep: dict[str, TestResult]) -> None:
    t = sweep["fq_codel"]
    assert loaded_rtt_ms(t) <= 23
    assert goodput_mbps(t) >= 42
    # The sparse flow's packets go out of the new-flows list: they hardly wait.
    assert flow(t, "udp")["qdelay_ms_median"] < flow(t, "tcp")["qdelay_ms_median"]


def test_pie_controls_the_delay(sweep: dict[str, TestResult]) -> None:
    assert loaded_rtt_ms(sweep["pie"]) <= 50


def test_the_comparison_page_and_each_tests_queue_panel_show_the_aqms_apart(sweep: dict[str, TestResult]) -> None:
    index = (next(iter(sweep.values())).path.parent / "index.html").read_text()
    for column in ("goodput_mbps", "rtt_ms_median", "qdelay_ms_median"):
        assert column in index
    medians = {q: float(flow(t, "tcp")["qdelay_ms_median"]) for q, t in sweep.items()}
    # pfifo's standing queue is an order of magnitude above every AQM's.
    assert all(medians["pfifo"] > 5 * m for q, m in medians.items() if q != "pfifo"), medians
    for t in sweep.values():
        page = (t.path / "timeseries.html").read_text()
        assert "Queue delay (ms)" in page
        assert f"{t.meta['rig']['qdisc'].split()[0]}" in page and "(userspace)" in page


def test_codel_ecn_marks_the_tcp_flow_instead_of_dropping(tmp_path: Path) -> None:
    (t,) = run(tmp_path, "+experiment=aqm", "rig.qdisc=codel ecn", "rig.ecn=on").values()
    assert t.meta["rig"]["ecn"] == "on"
    tcp = flow(t, "tcp")
    assert tcp["ecn"] == 1
    assert tcp["marks"] > 0
    assert tcp["drops"] <= 0.05 * tcp["marks"]
    assert tcp["ce_pct"] > 0
    # TCP_INFO's delivered_ce counts the segments acknowledged with ECE; RFC
    # 3168's receiver sets ECE on every ACK until the sender's CWR, so each
    # mark shows as up to a window's worth of them: never fewer than the marks.
    tcp_info = pd.read_parquet(t.path / "tcp_info.parquet")
    assert tcp_info["delivered_ce"].max() >= tcp["marks"]


def test_dualpi2_keeps_an_ect1_echo_short_beside_classic_cubic(tmp_path: Path) -> None:
    (t,) = run(tmp_path, "+experiment=aqm", "rig.qdisc=dualpi2", "echo_ecn=1").values()
    assert loaded_rtt_ms(t) <= 23
    assert goodput_mbps(t) >= 40


def test_the_kernel_pfifos_backlog_over_time(tmp_path: Path) -> None:
    (t,) = run(tmp_path, "+experiment=cubic", "rig.bottleneck=kernel", "duration=15s").values()
    q = pd.read_parquet(t.path / "qdisc.parquet")
    leaf = q[q["handle"] == "10:"].sort_values("t_ns")
    assert leaf["kind"].iloc[0] == "pfifo"
    assert leaf["backlog_packets"].max() >= 900
    # The last sample's drops are those tc -s logged at the tear-down.
    log = (t.path / "log.txt").read_text()
    logged = [int(n) for n in re.findall(r"pfifo 10: parent 1:1 .*?\n.*?dropped (\d+)", log)]
    # tc -s prints both directions' pfifos, in either order; the forward one (the upload's) has the drops.
    assert logged and int(leaf["drops"].iloc[-1]) == max(logged) > 0
    assert analyze(t).queue["backlog_packets"].max() >= 900


STEP_MARKER = '''
from collections import deque

from antler.rig.aqm import mark_ce, parse_time_ns


class Step:
    """Mark CE whatever waited above threshold; drop it if it is not ECN-capable."""

    def __init__(self, drop, threshold="1ms", limit="1000"):
        self.drop, self.threshold_ns, self.limit = drop, parse_time_ns(threshold), int(limit)
        self.queue, self.backlog_bytes = deque(), 0

    @property
    def backlog_packets(self):
        return len(self.queue)

    def enqueue(self, pkt, now_ns):
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(pkt)
        self.backlog_bytes += pkt.length
        return True

    def dequeue(self, now_ns):
        while self.queue:
            pkt = self.queue.popleft()
            self.backlog_bytes -= pkt.length
            if now_ns - pkt.t_enqueue_ns <= self.threshold_ns or mark_ce(pkt):
                return pkt
            self.drop(pkt, now_ns)
        return None
'''


def test_a_users_aqm_from_the_config_dir_runs_and_its_marks_are_recorded(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mystep.py").write_text(STEP_MARKER)
    args = ["--config-dir", str(conf), "+experiment=aqm", "rig.qdisc='py:mystep:Step threshold=2ms'", "rig.ecn=on"]
    (t,) = run(tmp_path, *args, "duration=10s").values()
    assert t.meta["rig"]["bottleneck"] == "userspace"
    queue = pd.read_parquet(t.path / "queue.parquet")
    marked = queue[queue["verdict"] == "marked"]
    assert len(marked) > 0 and (marked["ecn_out"] == 3).all()
    assert flow(t, "tcp")["marks"] == len(marked[marked["protocol"] == 6])
