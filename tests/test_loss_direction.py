"""Loss is reported per direction for echo flows, as irtt does (issue 16, part 5)."""

from __future__ import annotations

import pytest

from antler.node.launch.netns import launch_thread as launch
from antler.report.html import flow_table
from tests.lab.netns import NetnsFactory
from tests.lab.trees import on, run_tree

N = 200


def _echo_flow(client_ns: str, server_ns: str, echo: bool = True) -> dict[str, object]:
    return {
        "serial": [
            on(server_ns, {"packet_server": {"listen_addr": ":7781"}}),
            on(client_ns, {"packet_client": {"addr": "10.77.44.2:7781", "flow": "dir",
               "sender": [{"unresponsive": {"wait": ["2ms"], "length": [64], "duration": "400ms", "echo": echo}}]}}),
        ]
    }  # fmt: skip


@pytest.mark.parametrize(("where", "port", "up", "down"), [("client", "--sport", 0, 20), ("server", "--dport", 20, 0)])
def test_every_tenth_packet_dropped_one_way_shows_on_that_way_only(
    netns: NetnsFactory, where: str, port: str, up: int, down: int
) -> None:
    """Issue 16: with 10 % loss on the reply path only, flows.parquet showed lost = 0 (counted at the server)."""
    a, b = netns.new("dc"), netns.new("ds")
    netns.link(a, "10.77.44.1/24", b, "10.77.44.2/24")
    # Every tenth packet is dropped on arrival: replies at the client, or requests at the server.
    (a if where == "client" else b).run("iptables", "-A", "INPUT", "-p", "udp", port, "7781", "-m", "statistic",
                                        "--mode", "nth", "--every", "10", "--packet", "0", "-j", "DROP")  # fmt: skip
    out = run_tree(_echo_flow(a.name, b.name), launch=launch, timeout="90s")
    assert out.ok, out.errors()
    f = out.packet_flows().loc["dir"]
    assert f.sent == N
    assert (f.lost_up, f.lost_down) == (up, down), f
    assert f.loss_up_pct == pytest.approx(100 * up / N)
    # Down counts against what the server echoed: every request that reached it.
    assert f.loss_down_pct == pytest.approx(100 * down / (N - up))
    page = flow_table(out.packet_flows().reset_index())
    assert "lost up" in page and "lost down" in page and "loss down (%)" in page


def test_a_flow_without_echo_has_no_down_direction(netns: NetnsFactory) -> None:
    a, b = netns.new("dc"), netns.new("ds")
    netns.link(a, "10.77.44.1/24", b, "10.77.44.2/24")
    out = run_tree(_echo_flow(a.name, b.name, echo=False), launch=launch, timeout="90s")
    assert out.ok, out.errors()
    f = out.packet_flows().loc["dir"]
    assert f.lost_up == 0 and f.lost_down != f.lost_down  # NaN: there is no reply path
