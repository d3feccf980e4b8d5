"""Hostile traffic is harmless: the stream and packet servers fuzzed with random and mutated headers.

Each server runs as a runner does in a test, on a node's loop thread, on
loopback, and hypothesis throws at it, for a fixed budget, datagrams and
connections built to be wrong in every way the wire formats allow: random
bytes, truncated and overlong headers, wrong magic, version, flags, lengths,
flow IDs and field types, and, with HMAC on, unsigned and forged ones. After
each batch the server must still run and serve a valid client, must have
counted every bad input by reason (received + dropped = sent), recorded
every valid packet and echoed each exactly once, recorded no Error (bad
input is not the test's error), and kept its state bounded.

``make test`` sends a few thousand inputs; ``make reliability``
(ANTLER_RELIABILITY_LONG=1) a hundred thousand or so.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import socket
import struct
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

import antler
from antler.node.items import Batch, Error, Item, LogEntry, StreamInfo
from antler.node.launch.netns import LoopThread
from antler.node.runners.packet.server import MAX_FLOWS, PacketServer
from antler.node.runners.packet.wire import (
    ECHO,
    FIXED_LEN,
    REPLY,
    SIGNED,
    Packet,
    PacketFlag,
    PacketHeader,
    parse,
)
from antler.node.runners.stream.header import MAGIC, MAX_BODY, Header
from antler.node.runners.stream.server import StreamServer
from antler.node.runtime import NodeRuntime
from tests.lab import figures

pytestmark = pytest.mark.no_netns

LONG = os.environ.get("ANTLER_RELIABILITY_LONG") == "1"
PACKET_EXAMPLES = 3000 if LONG else 200
STREAM_EXAMPLES = 3000 if LONG else 200
PHASES = (Phase.explicit, Phase.reuse, Phase.generate)  # no shrinking: a failure says what it sent
KEY = b"fuzz key for the test"
MAX_PACKET = 1480


class Served:
    """A server runner running as on a node: its loop thread, its recorder's items, its core."""

    def __init__(self, runner: Any, tag: str, key: bytes | None) -> None:
        self.items: list[Item] = []
        self.rows: Counter[tuple[str, bool]] = Counter()
        """Rows counts the rows of each kind of batch recorded, by their sent column."""
        self._lock = threading.Lock()
        self.thread = LoopThread(f"fuzz-{tag}")
        self.runtime = NodeRuntime("srv", self._sink, hmac_key=key)
        feedback = self._call(runner.run(self.runtime.ctx.for_runner(tag), {}))
        self.addr = str(feedback["srv"])
        host, port = self.addr.rsplit(":", 1)
        self.sockaddr = (host, int(port))
        # The server object its canceler stops: its counters are what is checked.
        canceler: Any = self.runtime.ctx.cancelers[-1][1]
        self.core: Any = canceler.__self__

    def _sink(self, item: Item) -> None:
        with self._lock:
            if isinstance(item, Batch):
                # Counted and let go, as the driver writes them out, so the
                # memory bound measures the server rather than this list.
                sent = item.batch.column("sent").to_pylist() if "sent" in item.batch.schema.names else []
                self.rows[item.kind, True] += sum(1 for v in sent if v)
                self.rows[item.kind, False] += sum(1 for v in sent if not v)
                return
            self.items.append(item)

    def _call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.thread.loop).result(timeout)

    def legit_flows(self) -> int:
        """Count the server ends of flow ``legit`` started so far."""
        with self._lock:
            return sum(1 for i in self.items if isinstance(i, StreamInfo) and i.flow == "legit" and i.server)

    def errors(self) -> list[Error]:
        with self._lock:
            return [i for i in self.items if isinstance(i, Error)]

    def stop(self) -> list[str]:
        """Run the server's canceler (and flush); it returns the log lines."""
        self._call(self.runtime.cleanup())
        self.thread.stop()
        with self._lock:
            return [i.text for i in self.items if isinstance(i, LogEntry)]


def until(what: str, ok: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        time.sleep(0.002)


ANTLER_DIR = os.path.dirname(os.path.abspath(antler.__file__))
"""ANTLER_DIR is the package's folder: allocations made by code under it are the server's."""


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


@contextlib.contextmanager
def antler_memory() -> Iterator[Callable[[], float]]:
    """Trace allocations; the callable it yields gives the MB held now by antler's own code.

    Not the process's RSS: hypothesis keeps a record of every example it ran
    (126 MB of its own in the long packet fuzz, tracemalloc found, against
    16 MB held by the server: its capped duplicate windows), so RSS measures
    the harness.
    """
    tracemalloc.start(1)
    try:
        yield (
            lambda: (
                sum(
                    s.size
                    for s in tracemalloc.take_snapshot()
                    .filter_traces([tracemalloc.Filter(True, f"{ANTLER_DIR}{os.sep}*")])
                    .statistics("filename")
                )
                / 2**20
            )
        )
    finally:
        tracemalloc.stop()


# --- packets

flows = st.from_regex(r"[a-uw-z][a-z0-9.-]{0,15}", fullmatch=True)  # never v...: see datagrams
_seq = iter(range(1, 1 << 62))


@dataclass(frozen=True)
class Datagram:
    """One input: its bytes and what it was built to be (valid, unsigned, forged or garbage)."""

    kind: str
    data: bytes
    echo: bool = False


def _packet(flow: str, echo: bool, length: int, key: bytes | None) -> bytes:
    hlen = FIXED_LEN + len(flow) + (16 if key else 0)
    return Packet(PacketHeader(PacketFlag.ECHO if echo else PacketFlag(0), next(_seq), flow), max(length, hlen)).encode(
        key
    )


def _mutate(data: bytes, op: str, at: int, value: int, extra: bytes) -> bytes:
    b = bytearray(data)
    i = at % max(1, len(b))
    if op == "flip":
        b[i] ^= 1 << (value % 8)
    elif op == "set":
        b[i] = value % 256
    elif op == "cut":
        del b[i:]
    elif op == "append":
        b += extra
    elif op == "version":
        b[2] = value % 256
    elif op == "flags":
        b[3] = value % 256
    elif op == "flow_len":
        b[12] = value % 256
    elif op == "flow_bytes":
        b[13 : 13 + len(extra)] = extra
    elif op == "seq" and len(b) >= 12:
        b[4:12] = (value * 0x9E3779B97F4A7C15 % (1 << 64)).to_bytes(8, "big")  # anywhere in uint64
    return bytes(b)


VALID_FLOWS = 64
"""VALID_FLOWS is how many flows (v0 ... v63) valid packets go on, admitted before the fuzzing starts."""


def datagrams(key: bytes | None) -> st.SearchStrategy[Datagram]:
    # Valid packets go on flows of their own (v0 ... v63), which no other input
    # names: without HMAC, a forged packet of a flow can mark its later packets
    # as duplicates (a sequence number far ahead), so only they must all be echoed.
    # A few flows, admitted first (see admit_valid_flows): the server takes at
    # most MAX_FLOWS, and the mutated packets' random flow IDs fill that table
    # within the long run's budget; a new valid flow after that is dropped as
    # too-many-flows, as it should be, and no longer tries the echo path.
    valid = st.builds(
        lambda i, e, n: Datagram("valid", _packet(f"v{i}", e, n, key), e),
        st.integers(0, VALID_FLOWS - 1),
        st.booleans(),
        st.integers(0, MAX_PACKET),
    )
    mutated = st.builds(
        lambda f, e, n, op, at, v, x: Datagram("garbage", _mutate(_packet(f, e, n, key), op, at, v, x)),
        flows,
        st.booleans(),
        st.integers(0, 200),
        st.sampled_from(["flip", "set", "cut", "append", "version", "flags", "flow_len", "flow_bytes", "seq"]),
        st.integers(0, 2000),
        st.integers(0, 255),
        st.binary(min_size=1, max_size=40),
    )
    garbage = st.one_of(
        st.builds(lambda b: Datagram("garbage", b), st.binary(max_size=300)),
        st.builds(lambda b: Datagram("garbage", b"\xa7\x1e\x01" + b), st.binary(max_size=60)),
        st.builds(
            lambda n: Datagram("oversized", _packet("big", False, MAX_PACKET, key) + bytes(n)), st.integers(1, 3000)
        ),
    )
    kinds = [valid, mutated, garbage]
    if key is not None:
        kinds.append(
            st.builds(lambda f, n: Datagram("unsigned", _packet(f, True, n, None), True), flows, st.integers(0, 200))
        )
        kinds.append(
            st.builds(
                lambda f, n: Datagram("forged", _packet(f, True, n, b"not the key"), True), flows, st.integers(0, 200)
            )
        )
    return st.one_of(*kinds)


def _replies(sock: socket.socket, key: bytes | None, want: set[int], timeout: float = 10) -> set[int]:
    """_Replies reads echo replies until every seq in want came (or timeout), checking each; it returns the seqs."""
    got: set[int] = set()
    deadline = time.monotonic() + timeout
    while not want <= got and (left := deadline - time.monotonic()) > 0 and select.select([sock], [], [], left)[0]:
        flag, seq, _ = parse(sock.recv(65535), key)
        assert flag & REPLY and not flag & ECHO and bool(flag & SIGNED) == (key is not None)
        got.add(seq)
    return got


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "hmac"])
def test_the_packet_server_takes_hostile_datagrams_in_its_stride(key: bytes | None) -> None:
    served = Served(
        PacketServer(listen_addr="127.0.0.1:0", listen_addr_key="srv", max_packet_size=MAX_PACKET), "packet_server", key
    )
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sent: Counter[str] = Counter()
    rss0 = rss_mb()
    held = contextlib.ExitStack()
    antler_mb = held.enter_context(antler_memory())
    try:
        for i in range(VALID_FLOWS):
            client.sendto(_packet(f"v{i}", False, 0, key), served.sockaddr)
            sent["valid"] += 1
        until("the valid flows admitted", lambda: all(f"v{i}" in served.core.flows for i in range(VALID_FLOWS)))

        @settings(max_examples=PACKET_EXAMPLES, deadline=None, phases=PHASES, suppress_health_check=list(HealthCheck))
        @given(st.lists(datagrams(key), min_size=10, max_size=60))
        def check(batch: list[Datagram]) -> None:
            core = served.core
            before = core.received + core.dropped.total()
            dropped0 = Counter(core.dropped)
            echoed0 = core.echoed
            for d in batch:
                client.sendto(d.data, served.sockaddr)
                sent[d.kind] += 1
            until(
                "the server to take every datagram", lambda: core.received + core.dropped.total() == before + len(batch)
            )
            dropped = core.dropped - dropped0
            expect = Counter(d.kind for d in batch)
            # Every input was counted: received, or dropped with its reason.
            assert dropped.total() >= expect["unsigned"] + expect["forged"] + expect["oversized"]
            if key is not None:
                assert dropped["unsigned"] >= expect["unsigned"] and dropped["bad-signature"] >= expect["forged"]
            assert dropped["oversized"] >= expect["oversized"]
            # Every valid echo request got exactly one valid reply, signed when the test is.
            asks = [d for d in batch if d.kind == "valid" and d.echo]
            until("the echoes", lambda: core.echoed >= echoed0 + len(asks))
            seqs = {struct.unpack_from("!Q", d.data, 4)[0] for d in asks}
            assert seqs <= _replies(client, key, seqs)
            assert not served.errors(), served.errors()

        check()
        # State stays bounded whatever the input: flows, and the duplicate windows in them.
        core = served.core
        assert len(core.flows) <= MAX_FLOWS
        grown = rss_mb() - rss0
        server_mb = antler_mb()
    finally:
        held.close()
        client.close()
        log = served.stop()
    assert not served.errors()
    assert any(line.startswith("received ") for line in log)  # the counts are logged when it stops
    # The records: every valid packet is in packet_io with its flow, as received.
    assert served.rows["packet_io", False] == core.received
    assert served.rows["packet_io", True] == core.echoed
    name = "HMAC" if key else "plain"
    figures.record("hostile", f"packet server ({name}): datagrams fuzzed", sent.total())
    for kind, n in sorted(sent.items()):
        figures.record("hostile", f"packet server ({name}): {kind}", n)
    figures.record("hostile", f"packet server ({name}): dropped and counted", core.dropped.total())
    figures.record(
        "hostile", f"packet server ({name}): of them past its {MAX_FLOWS:,} flows", core.dropped["too-many-flows"]
    )
    figures.record(
        "hostile", f"packet server ({name}): memory held by its code (tracemalloc)", round(server_mb, 1), "MB"
    )
    figures.record(
        "hostile", f"packet server ({name}): process grown (hypothesis's records too)", round(grown, 1), "MB"
    )
    valid = served.rows["packet_io", False] - sent["valid"]
    figures.record(
        "hostile", f"packet server ({name}): valid packets not recorded", max(-valid, 0), "packets", lost=True
    )
    assert server_mb < 64, f"the server holds {server_mb:.0f} MB ({len(core.flows)} flows, {len(core.windows)} windows)"


def test_a_sequence_number_beyond_int64_is_dropped_and_the_server_goes_on() -> None:
    # It stopped the server's receive thread (OverflowError in the int64 seq column),
    # so the test failed at its end and nothing more was echoed.
    served = Served(PacketServer(listen_addr="127.0.0.1:0", listen_addr_key="srv"), "packet_server", None)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        huge = bytearray(_packet("huge", True, 0, None))
        huge[4:12] = bytes([0xFF] * 8)  # seq 2**64 - 1
        client.sendto(bytes(huge), served.sockaddr)
        ok = _packet("after", True, 0, None)
        client.sendto(ok, served.sockaddr)
        assert _replies(client, None, {struct.unpack_from("!Q", ok, 4)[0]})
        assert served.core.dropped == Counter({"bad-seq": 1})
    finally:
        client.close()
        served.stop()
    assert not served.errors()


def test_forged_flows_from_many_ports_cannot_exhaust_the_servers_memory() -> None:
    # Valid-looking packets of 4,096 flows from 16 source ports: each (flow,
    # port) pair once took a 64 KB duplicate window, 4 GB in all.
    served = Served(PacketServer(listen_addr="127.0.0.1:0", listen_addr_key="srv"), "packet_server", None)
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(16)]
    rss0 = rss_mb()

    def taken(n: int) -> bool:
        return bool(served.core.received + served.core.dropped.total() >= n)

    try:
        n = 0
        for i in range(MAX_FLOWS):
            for s in socks[: 1 + i % len(socks)]:
                s.sendto(_packet(f"f{i}", False, 0, None), served.sockaddr)
                n += 1
            if i % 256 == 255:
                until("the server", functools.partial(taken, n - 4096))
        until("the server", functools.partial(taken, n))
        grown = rss_mb() - rss0
    finally:
        for s in socks:
            s.close()
        served.stop()
    figures.record("hostile", "forged flows x source ports sent", n)
    figures.record("hostile", "memory grown by 4,096 forged flows from 16 ports", round(grown, 1), "MB")
    assert grown < 128, f"the server's process grew {grown:.0f} MB"


# --- stream headers


def _body(header: dict[str, Any]) -> bytes:
    data = json.dumps(header).encode()
    return MAGIC + bytes([1, 0]) + len(data).to_bytes(2, "big") + data


def _valid(key: bytes | None, flow: str = "legit") -> Header:
    h = Header(flow=flow, direction="up", duration_ns=10**8)
    return h.signed(key) if key else h


FIELDS = {
    "flow": st.one_of(st.integers(), st.sampled_from(["UP", "", "a" * 17, "up flow"]), st.none()),
    "direction": st.one_of(st.sampled_from(["sideways", "", "UP"]), st.integers()),
    "duration_ns": st.one_of(st.integers(max_value=-1), st.text(max_size=5), st.booleans()),
    "buf_len": st.sampled_from([0, -1, 64 * 1024 * 1024 + 1, "big"]),
    "tos": st.sampled_from([256, -1, "ef"]),
    "cca": st.one_of(st.integers(), st.text(min_size=16, max_size=30)),
}


@dataclass(frozen=True)
class Conn:
    """One hostile connection: the bytes it sends, whether it then hangs up hard, what the server counts."""

    kind: str
    data: bytes
    reason: str = ""
    reset: bool = False


def conns(key: bytes | None) -> st.SearchStrategy[Conn]:
    valid = _valid(key).encode()
    kinds = [
        st.builds(lambda b: Conn("random", b), st.binary(min_size=1, max_size=200)),
        st.builds(lambda b: Conn("bad-magic", b"XXXX" + b, "bad-magic"), st.binary(min_size=4, max_size=50)),
        st.builds(
            lambda v: Conn("bad-version", MAGIC + bytes([v % 256 or 2, 0, 0, 2]) + b"{}", "bad-version"),
            st.integers(2, 255),
        ),
        st.builds(
            lambda n: Conn("too-long", MAGIC + bytes([1, 0]) + n.to_bytes(2, "big"), "too-long"),
            st.integers(MAX_BODY + 1, 65535),
        ),
        st.builds(
            lambda b: Conn("not-json", MAGIC + bytes([1, 0]) + len(b).to_bytes(2, "big") + b, "not-json"),
            st.binary(min_size=1, max_size=100).filter(lambda b: not _is_json(b)),
        ),
        st.builds(lambda n: Conn("cut-short", valid[:n], "cut-short"), st.integers(1, len(valid) - 1)),
        st.builds(lambda: Conn("reset-after-header", valid, "", reset=True)),
    ]
    # One strategy per bad field, drawing its value.
    kinds += [
        st.builds(lambda v, f=f: Conn(f"bad-{f}", _body({**json.loads(valid[8:]), f: v}), "bad-field"), s)
        for f, s in FIELDS.items()
    ]
    if key is not None:
        unsigned = _valid(None, "nosig").encode()
        forged = Header(flow="forged", direction="up", duration_ns=10**8, sig="ab" * 16).encode()
        kinds += [
            st.just(Conn("unsigned", unsigned, "bad-signature")),
            st.just(Conn("forged", forged, "bad-signature")),
        ]
    return st.one_of(*kinds)


def _is_json(b: bytes) -> bool:
    try:
        json.loads(b)
    except ValueError:
        return False
    return True


def _legit_flow(addr: tuple[str, int], key: bytes | None) -> dict[str, Any]:
    """_Legit_flow runs a valid client's header exchange and a short upload; it returns the server's reply."""
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(_valid(key).encode())
        prefix = _read(s, 8)
        body = json.loads(_read(s, int.from_bytes(prefix[6:8], "big")))
        s.sendall(b"x" * 1000)
        s.shutdown(socket.SHUT_WR)
        return dict(body)


def _read(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "the server closed the connection"
        buf += chunk
    return buf


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "hmac"])
def test_the_stream_server_takes_hostile_headers_and_keeps_serving(key: bytes | None) -> None:
    from antler.node.metric import Duration

    served = Served(
        StreamServer(listen_addr="127.0.0.1:0", listen_addr_key="srv", header_timeout=Duration(2_000_000_000)),
        "stream_server",
        key,
    )
    tried: Counter[str] = Counter()
    fds0 = len(os.listdir("/proc/self/fd"))
    try:

        @settings(max_examples=STREAM_EXAMPLES, deadline=None, phases=PHASES, suppress_health_check=list(HealthCheck))
        @given(conns(key))
        def check(conn: Conn) -> None:
            core = served.core
            dropped0 = Counter(core.dropped)
            # The server may hang up first, as soon as it has seen enough (ENOTCONN, EPIPE, ECONNRESET).
            with socket.create_connection(served.sockaddr, timeout=10) as s, contextlib.suppress(OSError):
                s.sendall(conn.data)
                if conn.reset:
                    # Gone without a goodbye: RST, mid-flow.
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    s.shutdown(socket.SHUT_WR)
            # The next client is served as if nothing had happened ...
            legit0 = served.legit_flows()
            assert _legit_flow(served.sockaddr, key).get("ok") is True
            # ... and once it has (connections are accepted in order), both have ended.
            until("the valid flow on the server", lambda: served.legit_flows() > legit0)
            until("every connection to end", lambda: not core.conns)
            dropped = core.dropped - dropped0
            if conn.reason:
                assert dropped == Counter({conn.reason: 1}), (conn, dropped)
            elif conn.reset:
                assert dropped.total() == dropped["connection-error"] <= 1, (conn, dropped)
            else:
                assert dropped.total() == 1, (conn, dropped)  # random bytes: dropped, for some reason
            assert not served.errors(), served.errors()
            tried[conn.kind] += 1

        check()
    finally:
        log = served.stop()
    assert not served.errors()
    fds = len(os.listdir("/proc/self/fd"))
    assert fds <= fds0 + 2, f"{fds - fds0} descriptors more than before"
    name = "HMAC" if key else "plain"
    if served.core.dropped:
        assert any(line.startswith("dropped ") for line in log)  # counted by reason when it stops
    figures.record("hostile", f"stream server ({name}): hostile connections", tried.total())
    figures.record("hostile", f"stream server ({name}): valid flows served after them", served.legit_flows())
    for kind, n in sorted(tried.items()):
        figures.record("hostile", f"stream server ({name}): {kind}", n)
    figures.record("hostile", f"stream server ({name}): dropped and counted", served.core.dropped.total())
