"""Load held: many stream clients against one server, many packet flows on one node, every flow recorded.

Each test runs a generated experiment through the command (``antler-ray
run``), as a user does: the nodes are Ray actors in two namespaces the
fixture makes, a client and a server joined by a veth (10.77.181.0/24). The
link is shaped by tbf at :data:`RATE` each way, so the flows share a
bottleneck instead of the machine's two cores.

What is checked is what a user would look for in the result folder: a
``flow_status`` of ``ok`` for every flow, its ``stream_io`` or ``packet_io``
rows on both ends, and counts that agree: a stream's last byte count is the
same on client and server, a packet flow sent every packet its schedule
holds, and what the result holds per namespace matches the kernel's own UDP
counters (``/proc/net/snmp`` in each namespace), so nothing was lost between
the socket and the Parquet file.

``make test`` holds :data:`STREAM_CLIENTS` = 20 clients and
:data:`PACKET_FLOWS` = 5 flows for a few seconds; ``make reliability``
(ANTLER_RELIABILITY_LONG=1) holds 200 and 50, the issue's counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from antler.results import TestResult, load
from tests.lab import figures
from tests.lab.netns import Netns, NetnsFactory

LONG = os.environ.get("ANTLER_RELIABILITY_LONG") == "1"
STREAM_CLIENTS = 200 if LONG else 20
"""STREAM_CLIENTS is how many stream clients run at once against one server."""
PACKET_FLOWS = 50 if LONG else 5
"""PACKET_FLOWS is how many packet flows run at once from one node."""
STREAM_SECONDS = 10 if LONG else 4
PACKET_SECONDS = 10 if LONG else 4
PACKET_WAIT_MS = 50
"""PACKET_WAIT_MS is each packet flow's interval: 20 packets/s a flow, 1,000/s for 50 flows, echoed."""
RATE = "50mbit"
"""RATE is the tbf rate of each direction of the link: the flows' bottleneck."""
NET = "10.77.181"
CLIENT_ADDR, SERVER_ADDR = f"{NET}.1", f"{NET}.2"
ANTLER = [sys.executable, "-m", "antler"]

pytestmark = pytest.mark.slow


@dataclass
class Pair:
    """A client namespace and a server namespace joined by a shaped veth."""

    client: Netns
    server: Netns

    def node(self, ns: Netns) -> dict[str, Any]:
        return {"id": "client" if ns is self.client else "server", "netns": {"name": ns.name}}

    def udp(self) -> dict[str, dict[str, int]]:
        """Return each namespace's kernel UDP counters (the Udp: lines of /proc/net/snmp)."""
        return {"client": _udp(self.client), "server": _udp(self.server)}


def _udp(ns: Netns) -> dict[str, int]:
    lines = [line.split() for line in ns.run("cat", "/proc/net/snmp").stdout.splitlines() if line.startswith("Udp:")]
    names, values = lines[0][1:], lines[1][1:]
    return dict(zip(names, map(int, values), strict=True))


@pytest.fixture
def pair(netns: NetnsFactory) -> Pair:
    c, s = netns.new("lc"), netns.new("ls")
    ic, is_ = netns.link(c, f"{CLIENT_ADDR}/24", s, f"{SERVER_ADDR}/24")
    # A queue of 400 ms at the rate: room for every flow's first window, so
    # SYNs and first segments are seldom dropped.
    c.run("tc", "qdisc", "add", "dev", ic, "root", "tbf", "rate", RATE, "burst", "64kb", "latency", "400ms")
    s.run("tc", "qdisc", "add", "dev", is_, "root", "tbf", "rate", RATE, "burst", "64kb", "latency", "400ms")
    return Pair(c, s)


def run_experiment(cwd: Path, name: str, run: dict[str, Any], timeout_s: float) -> tuple[TestResult, float]:
    """Run one test through the command, as a user does; it returns its result and the seconds it took."""
    conf = cwd / "conf" / "experiment"
    conf.mkdir(parents=True)
    test = {"test": {"id": {"experiment": name}, "run": run}}
    (conf / f"{name}.yaml").write_text("# @package _global_\n" + json.dumps(test, indent=1) + "\n")
    start = time.monotonic()
    done = subprocess.run(
        [*ANTLER, "run", "--config-dir", str(cwd / "conf"), f"+experiment={name}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    (result,) = load(cwd / "results" / "latest").values()
    return result, took


def test_stream_clients_against_one_server_are_all_held_and_recorded(tmp_path: Path, pair: Pair) -> None:
    flows = [f"s{i:03d}" for i in range(STREAM_CLIENTS)]
    clients = [
        {
            "stream_client": {
                "addr": f"{SERVER_ADDR}:7777",
                # Half upload, half download: the server both receives and sends.
                ("upload" if i % 2 == 0 else "download"): {
                    "flow": flow,
                    "duration": f"{STREAM_SECONDS}s",
                    "sample_io_interval": "100ms",
                },
            }
        }
        for i, flow in enumerate(flows)
    ]
    run = {
        "serial": [
            {"child": {"node": pair.node(pair.server), "stream_server": {"listen_addr": f"{SERVER_ADDR}:7777"}}},
            {"child": {"node": pair.node(pair.client), "parallel": clients}},
        ]
    }
    result, took = run_experiment(tmp_path, "streamload", run, timeout_s=STREAM_SECONDS + 170)
    status, info, io = result["flow_status"], result["stream_info"], result["stream_io"]
    ok = set(status[status["status"] == "ok"]["flow"])
    ends = io.groupby("flow")["server"].nunique()
    both = set(ends[ends == 2].index)
    totals = io.groupby(["flow", "server"])["total_bytes"].max().unstack("server")
    unequal = totals[totals[False] != totals[True]] if {False, True} <= set(totals.columns) else totals
    clients_ = info[~info["server"]]
    spread_s = (clients_["tinit"].max() - clients_["tinit"].min()).total_seconds()
    figures.record("load", "stream clients run at once against one server", STREAM_CLIENTS, "flows")
    figures.record("load", "stream flows ok, sampled on both ends", len(ok & both), "flows")
    figures.record("load", "stream bytes recorded (each flow: client = server)", int(totals.max(axis=1).sum()), "bytes")
    figures.record("load", "stream_io rows recorded", len(io), "rows")
    figures.record("load", "stream clients started within", round(spread_s, 2), "s")
    figures.record("load", "stream: the command took", round(took, 1), "s")
    figures.record("load", "stream flows not ok or missing an end", len(set(flows) - (ok & both)), "flows", lost=True)
    figures.record("load", "stream flows whose byte counts differ between ends", len(unequal), "flows", lost=True)

    assert result.meta["status"] == "ok"
    assert result["errors"].empty, result["errors"]
    assert sorted(status["flow"]) == flows
    assert set(status["status"]) == {"ok"}, status[status["status"] != "ok"]
    # Both ends of every flow, each with its samples.
    assert sorted(info.groupby("flow")["server"].apply(sorted).items()) == [(f, [False, True]) for f in flows]
    assert both == set(flows)
    # Every byte sent was received: the last counts of the two ends agree.
    assert unequal.empty, f"client and server byte counts differ:\n{unequal}"
    assert (totals[False] > 0).all()
    # Counts only grow: no sample out of order, none lost into a fall.
    rising = io.groupby(["flow", "server"])["total_bytes"].apply(lambda s: s.is_monotonic_increasing)
    assert rising.all(), rising[~rising]
    # Held at once: every client had started before the first one's duration was up.
    assert spread_s < STREAM_SECONDS, f"the clients started over {spread_s:.1f}s"


def test_packet_flows_on_one_node_are_all_recorded_as_the_kernel_counted_them(tmp_path: Path, pair: Pair) -> None:
    flows = [f"p{i:02d}" for i in range(PACKET_FLOWS)]
    planned = -(-PACKET_SECONDS * 1000 // PACKET_WAIT_MS)  # sent while the schedule is before the duration
    clients = [
        {
            "packet_client": {
                "addr": f"{SERVER_ADDR}:7778",
                "flow": flow,
                "sender": [
                    {
                        "unresponsive": {
                            "wait": [f"{PACKET_WAIT_MS}ms"],
                            "length": [200],
                            "duration": f"{PACKET_SECONDS}s",
                            "echo": True,
                        }
                    }
                ],
            }
        }
        for flow in flows
    ]
    run = {
        "serial": [
            {"child": {"node": pair.node(pair.server), "packet_server": {"listen_addr": f"{SERVER_ADDR}:7778"}}},
            {"child": {"node": pair.node(pair.client), "parallel": clients}},
        ]
    }
    before = pair.udp()
    result, took = run_experiment(tmp_path, "packetload", run, timeout_s=PACKET_SECONDS + 170)
    after = pair.udp()
    kernel = {ns: {k: after[ns][k] - before[ns].get(k, 0) for k in after[ns]} for ns in after}
    status, info, io = result["flow_status"], result["packet_info"], result["packet_io"]
    # One column per (server, sent): the client's sends and replies, the server's receipts and echoes.
    rows = io.groupby(["flow", "server", "sent"]).size().unstack(["server", "sent"], fill_value=0)
    rows = rows.reindex(index=flows, columns=CLIENT_SENT + SERVER_GOT, fill_value=0)
    sent, replies = rows[CLIENT_SENT[0]], rows[CLIENT_SENT[1]]
    received, echoed = rows[SERVER_GOT[0]], rows[SERVER_GOT[1]]
    ok = set(status[status["status"] == "ok"]["flow"])
    seqs = io.groupby(["flow", "server", "sent"])["seq"].apply(frozenset)
    whole = range(planned)
    complete = {f for f in flows if all(seqs.get((f, *end), frozenset()) == frozenset(whole) for end in ALL_ENDS)}
    kernel_minus_result = {
        "client sends": kernel["client"]["OutDatagrams"] - int(sent.sum()),
        "server receipts": kernel["server"]["InDatagrams"] - int(received.sum()),
        "server echoes": kernel["server"]["OutDatagrams"] - int(echoed.sum()),
        "client replies": kernel["client"]["InDatagrams"] - int(replies.sum()),
    }
    figures.record("load", "packet flows run at once on one node (echoed, 20 packets/s each)", PACKET_FLOWS, "flows")
    figures.record("load", "packet flows ok, every seq on both ends", len(ok & complete), "flows")
    figures.record("load", "packets sent and recorded, as the kernel counted", int(sent.sum()), "packets")
    figures.record("load", "packets echoed and recorded, as the kernel counted", int(echoed.sum()), "packets")
    figures.record("load", "packet_io rows recorded", len(io), "rows")
    figures.record("load", "packets: the command took", round(took, 1), "s")
    figures.record(
        "load", "packet flows not ok or missing a packet", len(set(flows) - (ok & complete)), "flows", lost=True
    )
    figures.record(
        "load",
        "packets the kernel counted but the result lacks",
        sum(kernel_minus_result.values()),
        "packets",
        lost=True,
    )

    assert result.meta["status"] == "ok"
    assert result["errors"].empty, result["errors"]
    assert sorted(status["flow"]) == flows
    assert set(status["status"]) == {"ok"}, status[status["status"] != "ok"]
    assert sorted(info.groupby("flow")["server"].apply(sorted).items()) == [(f, [False, True]) for f in flows]
    # What the result holds is what each namespace's kernel counted: nothing
    # lost between the sockets and the files.
    assert kernel_minus_result == dict.fromkeys(kernel_minus_result, 0), (kernel_minus_result, kernel)
    # Every packet of every schedule was sent, arrived, was echoed and came
    # back, each recorded once (the link drops nothing at these rates).
    assert (sent == planned).all(), sent[sent != planned]
    assert not io.duplicated(["flow", "server", "sent", "seq"]).any()
    assert complete == set(flows), sorted(set(flows) - complete)


CLIENT_SENT = [(False, True), (False, False)]
"""CLIENT_SENT is the client's (server, sent) columns: its sends, then the replies it received."""
SERVER_GOT = [(True, False), (True, True)]
"""SERVER_GOT is the server's (server, sent) columns: what it received, then its echoes."""
ALL_ENDS = CLIENT_SENT + SERVER_GOT
