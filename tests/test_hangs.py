"""Nothing hangs: whatever is stuck, a test ends within its timeout plus 10 s, with an Error naming what was stuck.

Stuck things tried: a peer that vanishes mid-flow (its packets silently
dropped by iptables, no FIN, no RST), a server that never accepts (a
listener nobody accepts on, and one whose SYNs are dropped), a command that
ignores SIGINT, and a Ray node that stops answering (SIGSTOP). Each test
runs its tree as the command does (antler.node.do) on nodes in namespaces
made for it (10.77.171.0/24 and 10.77.172.0/24).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from antler.config.test import parse_run
from antler.node import do
from antler.node.items import Batch, Error, FlowStatus, Item, LogEntry
from antler.node.launch import Launchers
from antler.node.launch.netns import enter, launch_thread
from antler.node.metric import Duration
from tests.lab import figures
from tests.lab.netns import Netns, NetnsFactory, unique_name

GRACE_S = 10.0
"""GRACE_S is the promise: a stuck test ends within its timeout plus this."""
NET1, NET2 = "10.77.171", "10.77.172"


@dataclass
class Ended:
    """How a tree ended: passed or not, its items, how long it took."""

    ok: bool
    items: list[Item]
    took_s: float

    def errors(self) -> list[tuple[str, str, str]]:
        return sorted((i.node_id, i.tag, i.message) for i in self.items if isinstance(i, Error))

    def logs(self) -> list[str]:
        return [i.text for i in self.items if isinstance(i, LogEntry)]

    def status(self, flow: str) -> str:
        (s,) = {i.status for i in self.items if isinstance(i, FlowStatus) and i.flow == flow}
        return s

    def received(self, flow: str) -> int:
        rows = [
            r
            for i in self.items
            if isinstance(i, Batch) and i.kind == "stream_io" and i.flow == flow
            for r in i.batch.to_pylist()
            if r["server"]
        ]
        return max((r["total_bytes"] for r in rows), default=0)


def run(tree: dict[str, Any], timeout_s: float, launch: Any = launch_thread) -> Ended:
    items: list[Item] = []
    start = time.monotonic()
    ok = asyncio.run(do(parse_run(tree), items.append, launch=launch, timeout=Duration(int(timeout_s * 1e9))))
    return Ended(ok, items, time.monotonic() - start)


@dataclass
class Star:
    """A server namespace with two client namespaces, each on a veth of its own."""

    server: Netns
    one: Netns
    two: Netns

    def on(self, ns: Netns, run: dict[str, Any]) -> dict[str, Any]:
        return {"child": {"node": {"id": ns.name, "netns": {"name": ns.name}}, **run}}


@pytest.fixture
def star(netns: NetnsFactory) -> Star:
    s, a, b = netns.new("hs"), netns.new("ha"), netns.new("hb")
    netns.link(a, f"{NET1}.1/24", s, f"{NET1}.2/24")
    netns.link(b, f"{NET2}.1/24", s, f"{NET2}.2/24")
    a.ip("route", "add", "default", "via", f"{NET1}.2")
    b.ip("route", "add", "default", "via", f"{NET2}.2")
    return Star(s, a, b)


def upload(flow: str, duration: str, **where: str) -> dict[str, Any]:
    return {"stream_client": {**where, "upload": {"flow": flow, "duration": duration, "sample_io_interval": "10ms"}}}


def test_a_peer_that_vanishes_mid_flow_ends_the_test_and_the_server_serves_the_next(star: Star) -> None:
    s, a, b = star.server, star.one, star.two
    # Silently, both ways: no FIN, no RST, every packet to and from the client dropped.
    vanish = f"iptables -I INPUT -s {NET1}.1 -j DROP && iptables -I OUTPUT -d {NET1}.1 -j DROP"
    tree = {
        "serial": [
            star.on(s, {"stream_server": {"listen_addr": f"{NET1}.2:0", "listen_addr_key": "srv"}}),
            {
                "parallel": [
                    star.on(a, upload("gone", "30s", addr_key="srv")),
                    {
                        "serial": [
                            {"sleep": "1s"},
                            star.on(s, {"system": {"command": "sh", "args": ["-c", vanish]}}),
                            star.on(b, upload("after", "1s", addr_key="srv")),
                        ]
                    },
                ]
            },
        ]
    }
    timeout = 6.0
    ended = run(tree, timeout)
    assert not ended.ok and ended.took_s < timeout + GRACE_S
    assert (a.name, "stream_client", "still running (flow gone) when the test timed out after 6s") in ended.errors()
    # The server lost a client and went on serving: the next flow passed, every byte counted.
    assert ended.status("after") == "ok" and ended.received("after") > 0
    figures.record("hangs", "peer vanished mid-flow (iptables DROP): test ended after", round(ended.took_s, 1), "s")


@pytest.mark.parametrize("how", ["listener that never accepts", "SYNs dropped"])
def test_a_server_that_never_accepts_ends_the_test_naming_the_flow(star: Star, how: str) -> None:
    s, a = star.server, star.one
    steps: list[dict[str, Any]] = []
    listener = None
    if how == "SYNs dropped":
        steps.append(star.on(s, {"system": {"command": "iptables -I INPUT -p tcp --dport 7999 -j DROP"}}))
    else:
        # Nobody accepts: the kernel completes the handshake, the server never answers.
        listener = listen_in(s.name, 7999)
    steps.append(star.on(a, upload("never", "2s", addr=f"{NET1}.2:7999")))
    timeout = 3.0
    try:
        ended = run({"serial": steps}, timeout)
    finally:
        if listener is not None:
            listener.close()
    assert not ended.ok and ended.took_s < timeout + GRACE_S
    assert (a.name, "stream_client", "still running (flow never) when the test timed out after 3s") in ended.errors()
    figures.record("hangs", f"server: {how}: test ended after", round(ended.took_s, 1), "s")


def test_a_command_that_ignores_sigint_is_killed_and_named() -> None:
    stubborn = "trap '' INT; while :; do sleep 0.1; done"
    timeout = 1.0
    ended = run({"system": {"command": "sh", "args": ["-c", stubborn]}}, timeout)
    assert not ended.ok and ended.took_s < timeout + GRACE_S
    assert ended.errors() == [
        ("-", "node", "test timed out after 1s"),
        ("-", "system", "still running when the test timed out after 1s"),
    ]
    assert "sh: still running 5s after SIGINT: killed" in ended.logs()
    figures.record("hangs", "command ignoring SIGINT: test ended after", round(ended.took_s, 1), "s")


@pytest.mark.usefixtures("ray_session")
def test_a_ray_node_that_stops_answering_ends_the_test_naming_it() -> None:
    ns = unique_name("hr")
    node = {"id": "frozen", "netns": {"name": ns, "create": True}}
    # The node's own process stops, as a host that hangs: no crash, no closed connection.
    tree = {
        "child": {
            "node": node,
            "serial": [{"system": {"command": "sh -c", "args": ["kill -STOP $PPID"]}}, {"sleep": "60s"}],
        }
    }
    launchers = Launchers()
    timeout = 30.0
    try:
        ended = run(tree, timeout, launch=launchers)
    finally:
        launchers.close()
    assert not ended.ok and ended.took_s < 6 + GRACE_S  # DEAD_AFTER_SECONDS, well before the timeout
    (err,) = [e for e in ended.errors() if e[0] == "frozen"]
    assert err[2].startswith("node 'frozen'") and "no answer" in err[2], err
    figures.record("hangs", "Ray node stopped (SIGSTOP): test ended after", round(ended.took_s, 1), "s")


def listen_in(netns: str, port: int) -> socket.socket:
    """Return a TCP socket listening in a namespace, which nothing accepts on."""
    made: list[socket.socket] = []

    def make() -> None:
        enter(netns)  # this thread only: setns is per thread
        sock = socket.socket()
        sock.bind(("0.0.0.0", port))
        sock.listen(0)
        made.append(sock)

    t = threading.Thread(target=make)
    t.start()
    t.join()
    return made[0]
