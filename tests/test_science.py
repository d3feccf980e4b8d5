"""Checks of the science through the dumbbell rig, as a researcher would check a new tool.

They take real time (a 30 s test among them), so they are marked slow; CI
still runs them.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.analyze import analyze, packet_flows
from antler.results import TestResult, load

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def run(cwd: Path, *args: str) -> TestResult:
    assert main(["run", *args]) == 0
    (test,) = load(cwd / "results" / "latest").values()
    return test


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_cubic_goodput_base_rtt_and_bufferbloat(cwd: Path) -> None:
    test = run(cwd, "+experiment=cubic", "duration=12s", "lead=2s")
    flows = pd.read_parquet(test.path / "flows.parquet")
    tcp = flows[flows["flow"] == "tcp"].iloc[0]
    assert tcp["cca"] == "cubic"
    assert 44 <= tcp["goodput_mbps"] <= 50
    rtt = analyze(test).rtt  # t_s from the start of the first flow: the echo flow
    base = rtt[rtt["t_s"] < 1.8]["rtt_ms"]
    loaded = rtt[rtt["t_s"] > 6]["rtt_ms"]
    assert len(base) >= 50
    # the echo flow sees rig.rtt before the load starts...
    assert abs(base.median() - 20) <= 1
    # ...and a pfifo of 1000 packets at 50 Mbit/s fills: bufferbloat, visible
    assert loaded.median() - base.median() >= 50
    emulator = test.meta["rig"]["emulator"]
    assert emulator in ("netem", "tun")
    # the chart says how the delay was made: never a silent change of experiment
    assert f"delay by {emulator}" in (test.path / "timeseries.html").read_text()


TWO_FLOWS = """# @package _global_
defaults:
  - /rig: dumbbell
  - _self_
duration: 30s
cca: bbr
test:
  id: {experiment: twoflows}
  run:
    serial:
      - serial: ${rig_setup:}
      - child:
          node: ${rig.nodes.right}
          stream_server: {listen_addr: "${rig.addr.right}:7777", listen_addr_key: tcp}
      - parallel:
          - child:
              node: ${rig.nodes.left}
              stream_client: {addr_key: tcp, upload: {flow: a, cca: "${cca}", duration: "${duration}", sample_io_interval: 10ms}}
          - child:
              # a second sender host, as in a dumbbell with two senders: the
              # flows' threads then do not share one Python process (GIL)
              node: {id: left2, netns: {name: "${rig.netns_prefix}left"}}
              stream_client: {addr_key: tcp, upload: {flow: b, cca: "${cca}", duration: "${duration}", sample_io_interval: 10ms}}
      - serial: ${rig_teardown:}
"""


@pytest.mark.science
def test_two_flows_of_one_cca_share_the_bottleneck(cwd: Path) -> None:
    (cwd / "c" / "experiment").mkdir(parents=True)
    (cwd / "c" / "experiment" / "twoflows.yaml").write_text(TWO_FLOWS)
    # BBR through a BDP-sized queue (20 ms x 50 Mbit/s is 83 packets): on a
    # quiet machine nine runs split no worse than 25.4/22.1 Mbit/s (Jain's
    # index 0.995), but when the CPUs are busy one flow can hold the larger
    # share for 20 s: 28.0/19.1 and 18.9/28.5 (0.961) with a busy loop beside
    # it or under CI. Loss-based flows on this drop-tail path converge by
    # chance within 20 s: Reno pairs split up to 31/16, and iperf3's own
    # CUBIC pairs up to 27/21 (bench/README.md). What a user would call not
    # sharing (one flow held to half the other's rate or less) scores 0.9 or
    # lower.
    test = run(cwd, "--config-dir", str(cwd / "c"), "+experiment=twoflows", "rig.limit=100")
    series = analyze(test, interval_s=1.0).goodput
    late = series[(series["t_s"] > 10) & (series["t_s"] <= 29)]
    rates = late.groupby("flow", observed=True)["goodput_mbps"].mean()
    assert set(rates.index) == {"a", "b"}
    assert 40 <= rates.sum() <= 50
    jain = rates.sum() ** 2 / (len(rates) * (rates**2).sum())
    assert jain > 0.9, rates.to_dict()


LOSSY = """# @package _global_
defaults:
  - /rig: dumbbell
  - _self_
test:
  id: {experiment: lossy}
  run:
    serial:
      - serial: ${rig_setup:}
      - child:
          node: ${rig.nodes.right}
          packet_server: {listen_addr: "${rig.addr.right}:7778"}
      - child:
          node: ${rig.nodes.left}
          packet_client:
            addr: "${rig.addr.right}:7778"
            flow: probe
            sender: [{unresponsive: {wait: [1ms], length: [100], duration: 6s}}]
      - serial: ${rig_teardown:}
"""


def test_rig_loss_is_measured_on_a_packet_flow(cwd: Path) -> None:
    (cwd / "c" / "experiment").mkdir(parents=True)
    (cwd / "c" / "experiment" / "lossy.yaml").write_text(LOSSY)
    test = run(cwd, "--config-dir", str(cwd / "c"), "+experiment=lossy", "rig.loss=1%", "rig.rtt=2ms")
    probe = packet_flows(test["packet_info"], test["packet_io"]).set_index("flow").loc["probe"]
    assert probe["sent"] >= 5000
    # one-way flow: the server's count is what crossed the lossy link
    loss_pct = 100 * (1 - probe["server_received"] / probe["sent"])
    assert 0.5 <= loss_pct <= 1.5
