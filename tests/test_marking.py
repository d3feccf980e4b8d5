"""Marking applies both ways: echo replies carry the request's DSCP and ECN, seen on the wire (issue 16, part 4)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from antler.config.test import parse_run
from antler.node.launch.netns import launch_thread as launch
from antler.node.runners.packet.server import _Flow
from antler.node.spec import ConfigError
from antler.results import load
from tests.lab.netns import NetnsFactory
from tests.lab.trees import on, run_tree

N = 10


def _capture(ns: str, dev: str, count: int) -> subprocess.Popen[str]:
    """_capture starts tcpdump on dev in ns and returns once it listens (its readiness line on stderr)."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpdump", "-l", "-n", "-v", "-i", dev, "-c", str(count), "udp port 7779"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "listening on" in line or not line:
            break
    return proc


@pytest.mark.parametrize(("dscp", "ecn"), [(10, 1), (46, 2), (10, 0)])
def test_echo_replies_leave_with_the_requests_dscp_and_ecn(netns: NetnsFactory, dscp: int, ecn: int) -> None:
    """Issue 16: requests left marked with dscp 10 but the server's replies left with TOS 0."""
    a, b = netns.new("mc"), netns.new("ms")
    client_if, _ = netns.link(a, "10.77.43.1/24", b, "10.77.43.2/24")
    cap = _capture(a.name, client_if, 2 * N)
    try:
        out = run_tree(
            {
                "serial": [
                    on(b.name, {"packet_server": {"listen_addr": ":7779"}}),
                    on(a.name, {"packet_client": {"addr": "10.77.43.2:7779", "flow": "mark", "dscp": dscp, "ecn": ecn,
                                "sender": [{"unresponsive": {"wait": ["5ms"], "length": [64], "duration": "50ms",
                                                            "echo": True}}]}}),
                ]
            },
            launch=launch, timeout="90s",
        )  # fmt: skip
        text, _ = cap.communicate(timeout=20)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    assert out.ok, out.errors()
    tos = (dscp << 2) | ecn
    # tcpdump -v: "IP (tos 0x29,ECT(1), ttl 64, ...) 10.77.43.1.X > 10.77.43.2.7779: UDP"
    seen = re.findall(r"IP \(tos (0x[0-9a-f]+).*\n?\s*(10\.77\.43\.\d)\.\d+ > (10\.77\.43\.\d)\.\d+", text)
    up = [int(t, 16) for t, src, _ in seen if src == "10.77.43.1"]
    down = [int(t, 16) for t, src, _ in seen if src == "10.77.43.2"]
    assert len(up) == N and len(down) == N, text
    assert set(up) == {tos}
    assert set(down) == {tos}, f"replies left with TOS {sorted(set(down))}, requests with {tos:#x}"
    # And the records say the same, for all four kinds of row.
    io = out.table("packet_io")
    assert set(io["tos"]) == {tos}, io.groupby(["server", "sent"])["tos"].unique()


def test_a_ce_marked_request_is_answered_with_the_flows_ect_not_ce() -> None:
    f = _Flow(cols=None)  # type: ignore[arg-type]
    assert f.reply_tos((10 << 2) | 3) == (10 << 2) | 2, "CE before any ECT seen: ECT(0)"
    assert f.reply_tos((10 << 2) | 1) == (10 << 2) | 1
    assert f.reply_tos((10 << 2) | 3) == (10 << 2) | 1, "CE on an ECT(1) flow: ECT(1)"
    assert f.reply_tos(0) == 0


def test_ecn_on_a_tcp_flow_is_refused_with_the_reason() -> None:
    """Issue 16: `ecn: 1` on a TCP flow was accepted, though the kernel owns TCP's ECN bits."""
    with pytest.raises(ConfigError, match=r"upload: ecn 1 on a TCP flow: the kernel owns TCP's ECN bits.*tcp_ecn"):
        parse_run({"stream_client": {"addr": "10.77.43.2:1", "upload": {"flow": "t", "ecn": 1}}})
    parse_run({"stream_client": {"addr": "10.77.43.2:1", "upload": {"flow": "t", "dscp": 10}}})


def test_results_of_format_1_load_with_tos_unknown(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).with_name("data") / "result" / "cca-cubic", tmp_path / "t")
    test = load(tmp_path / "t")["."]
    assert test.format_version == 1 and test.meta["format_version"] == 2
    io = test.arrow("packet_io")
    assert "tos" in io.column_names and io.column("tos").null_count == io.num_rows > 0


def test_flows_of_format_1_load_with_the_new_columns_unknown(tmp_path: Path) -> None:
    shutil.copytree(Path(__file__).with_name("data") / "result" / "cca-cubic", tmp_path / "t")
    # flows.parquet as format 1 wrote it: without the columns format 2 added.
    pd.DataFrame({"flow": ["udp"], "kind": ["packet"], "lost": [1.0]}).to_parquet(tmp_path / "t" / "flows.parquet")
    flows = load(tmp_path / "t")["."]["flows"]
    for name in ("lost_up", "loss_down_pct", "status", "error"):
        assert name in flows.columns and flows[name].isna().all()
