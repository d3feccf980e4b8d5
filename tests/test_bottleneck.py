"""The userspace bottleneck's parts without a rig: header parsing and CE marking, the serialiser on a fake clock, the engine on a socket pair.

The queue discipline here is a small pfifo of the test's own, written
against the protocol of antler.rig.aqm.base, so these tests pin the
serialiser, not any one discipline.
"""

from __future__ import annotations

import io
import ipaddress
import itertools
import random
import socket
import struct
import threading
import time
from collections import deque
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from antler.rig.aqm.base import CE, ECT0, ECT1, NOT_ECT, DropSink, Packet, ignore_drop
from antler.rig.bottleneck import CATCH_UP_NS, DROPPED, MARKED, SENT, Bottleneck
from antler.rig.delay_link import Link, LinkSpec, serve
from antler.rig.ipheader import address_text, ipv4_checksum, parse, with_ecn
from antler.rig.queue_records import QueueRecords, main as queue_records_main, read


class Pfifo:
    """A packet-limited FIFO (tail drop), as tc's pfifo; marks CE when mark_all is set (an ECN test's queue)."""

    def __init__(self, limit: int = 1000, drop: DropSink = ignore_drop, mark_all: bool = False) -> None:
        self.q: deque[Packet] = deque()
        self.limit = limit
        self.nbytes = 0
        self.mark_all = mark_all

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        if len(self.q) >= self.limit:
            return False
        self.q.append(pkt)
        self.nbytes += pkt.length
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        if not self.q:
            return None
        pkt = self.q.popleft()
        self.nbytes -= pkt.length
        if self.mark_all and pkt.ecn in (ECT0, ECT1):
            pkt.ecn, pkt.marked = CE, True
        return pkt

    @property
    def backlog_packets(self) -> int:
        return len(self.q)

    @property
    def backlog_bytes(self) -> int:
        return self.nbytes


def ipv4(length: int, tos: int = 0, proto: int = 17, sport: int = 5000, dport: int = 7778, frag: int = 0) -> bytes:
    """Return an IPv4 packet of length bytes with a correct header checksum and a UDP/TCP port pair."""
    src, dst = ipaddress.IPv4Address("10.77.1.1").packed, ipaddress.IPv4Address("10.77.2.2").packed
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, length, 0x1234, frag, 64, proto, 0, src, dst))
    hdr[10:12] = struct.pack("!H", ipv4_checksum(bytes(hdr)))
    payload = struct.pack("!HH", sport, dport) + bytes(length - 24)
    return bytes(hdr) + payload


def ipv6(payload_len: int, tclass: int = 0, nxt: int = 6, sport: int = 443, dport: int = 50000) -> bytes:
    """Return an IPv6 packet with payload_len bytes of payload, the given traffic class and a port pair."""
    src, dst = ipaddress.IPv6Address("fd00::1").packed, ipaddress.IPv6Address("fd00::2").packed
    first = (6 << 28) | (tclass << 20) | 0x12345
    hdr = struct.pack("!IHBB16s16s", first, payload_len, nxt, 64, src, dst)
    return hdr + struct.pack("!HH", sport, dport) + bytes(payload_len - 4)


# --- headers


def test_ipv4_header_gives_length_ecn_and_five_tuple() -> None:
    length, ecn, key = parse(ipv4(1000, tos=0x28 | ECT1, proto=6, sport=40000, dport=7777))
    assert (length, ecn) == (1000, ECT1)
    assert key is not None
    proto, src, dst, sport, dport = key
    assert (proto, address_text(src), address_text(dst), sport, dport) == (6, "10.77.1.1", "10.77.2.2", 40000, 7777)


def test_ipv4_later_fragment_has_no_ports() -> None:
    _, _, key = parse(ipv4(500, frag=185))
    assert key is not None and key[3:] == (0, 0)


def test_ipv6_header_gives_length_ecn_and_five_tuple() -> None:
    length, ecn, key = parse(ipv6(960, tclass=0xB8 | ECT0))
    assert (length, ecn) == (1000, ECT0)
    assert key is not None
    proto, src, dst, sport, dport = key
    assert (proto, address_text(src), address_text(dst), sport, dport) == (6, "fd00::1", "fd00::2", 443, 50000)


def test_short_or_unknown_packets_are_not_ect_without_a_flow() -> None:
    assert parse(b"\x45" * 10) == (10, 0, None)
    assert parse(b"\x20" + bytes(59)) == (60, 0, None)


@pytest.mark.parametrize("tos", [0x00, 0x02, 0x01, 0xB8 | 2, 0xFE, 0xFD])
@pytest.mark.parametrize("length", [28, 1500, 65535 - 4])
def test_ce_rewrite_keeps_the_ipv4_checksum_a_recomputation_gives(tos: int, length: int) -> None:
    pkt = ipv4(length, tos=tos)
    marked = with_ecn(pkt, CE)
    assert marked[1] == (tos & 0xFC) | CE
    # RFC 1624's incremental update agrees with the checksum computed afresh over the new header.
    assert struct.unpack("!H", marked[10:12])[0] == ipv4_checksum(marked[:20])
    assert marked[:1] + marked[2:10] + marked[12:] == pkt[:1] + pkt[2:10] + pkt[12:]
    assert parse(marked)[1] == CE


def test_ce_rewrite_of_ipv6_changes_only_the_ecn_bits() -> None:
    pkt = ipv6(100, tclass=0xB8 | ECT1)
    marked = with_ecn(pkt, CE)
    assert parse(marked)[1] == CE
    assert (struct.unpack("!I", marked[:4])[0] >> 20) & 0xFF == 0xB8 | CE
    assert marked[0] == pkt[0] and marked[2:] == pkt[2:]
    assert (marked[1] & 0x0F) == (pkt[1] & 0x0F)  # the flow label's high bits


# --- the serialiser, on a fake clock

RATE_BPS = 12_000_000
"""At 12 Mbit/s a 1486-byte IP packet (1500 with the Ethernet header) takes exactly 1 ms."""
SLOT_NS = 1_000_000


def test_back_to_back_packets_leave_one_serialisation_time_apart() -> None:
    bn = Bottleneck(lambda drop: Pfifo(drop=drop), RATE_BPS)
    t0 = 5_000_000_000
    for _ in range(3):
        assert bn.arrive(ipv4(1486), t0)
    ends: list[int] = []
    now = t0
    while bn.next_start_ns() >= 0:
        now = max(now, bn.next_start_ns())
        if ends:
            assert bn.send(now - 1) is None  # the line is still busy with the one before
        sent = bn.send(now)
        assert sent is not None
        ends.append(sent[0])
    assert ends == [t0 + SLOT_NS, t0 + 2 * SLOT_NS, t0 + 3 * SLOT_NS]
    assert bn.next_start_ns() == -1 and bn.send(now) is None


def test_an_idle_line_starts_on_arrival_and_counts_the_ethernet_header() -> None:
    bn = Bottleneck(lambda drop: Pfifo(drop=drop), RATE_BPS)
    bn.arrive(ipv4(1486), 0)
    assert bn.send(0) == (SLOT_NS, ipv4(1486))
    # Arriving after the line went idle: max(now, link_free) is now.
    bn.arrive(ipv4(86), 3 * SLOT_NS)
    sent = bn.send(3 * SLOT_NS)
    assert sent is not None and sent[0] == 3 * SLOT_NS + (86 + 14) * 8 * 1_000_000_000 // RATE_BPS


def test_a_late_caller_keeps_the_rate_up_to_the_catch_up_bound() -> None:
    bn = Bottleneck(lambda drop: Pfifo(drop=drop), RATE_BPS)
    for _ in range(4):
        bn.arrive(ipv4(1486), 0)
    first = bn.send(0)
    assert first is not None and first[0] == SLOT_NS
    # The link wakes 300 us late for the second slot: it still ends at 2 ms, not 2.3 ms.
    second = bn.send(SLOT_NS + 300_000)
    assert second is not None and second[0] == 2 * SLOT_NS
    # Far later than the bound: the schedule restarts CATCH_UP_NS behind the real time, no bigger burst.
    late = 2 * SLOT_NS + 10 * CATCH_UP_NS
    third = bn.send(late)
    assert third is not None and third[0] == late - CATCH_UP_NS + SLOT_NS


def test_the_rate_holds_over_many_packets_of_mixed_sizes() -> None:
    bn = Bottleneck(lambda drop: Pfifo(limit=100_000, drop=drop), 50_000_000)
    rng = random.Random(1)
    sizes = [rng.choice((52, 576, 1500)) for _ in range(5000)]
    for s in sizes:
        bn.arrive(ipv4(s), 0)
    now = last = 0
    while bn.next_start_ns() >= 0:
        now = bn.next_start_ns()
        sent = bn.send(now)
        assert sent is not None
        last = sent[0]
    expected_ns = sum(s + 14 for s in sizes) * 8 / 50e6 * 1e9
    assert abs(last - expected_ns) <= len(sizes)  # at most 1 ns of rounding per packet


def test_records_say_each_packets_fate_sojourn_and_backlog() -> None:
    rows: list[tuple[int, int, int, int, int, int, int]] = []

    def record(pkt: Packet, verdict: int, sojourn_ns: int, ecn_out: int, backlog_pkts: int, backlog_b: int) -> None:
        rows.append((pkt.t_enqueue_ns, verdict, sojourn_ns, pkt.ecn_in, ecn_out, backlog_pkts, backlog_b))

    bn = Bottleneck(lambda drop: Pfifo(limit=2, drop=drop, mark_all=True), RATE_BPS, record)
    assert bn.arrive(ipv4(1486, tos=ECT0), 0)
    assert bn.arrive(ipv4(1486, tos=NOT_ECT), 10)
    assert not bn.arrive(ipv4(1486), 20)  # the limit: tail drop
    first = bn.send(0)
    assert first is not None and parse(first[1])[1] == CE
    assert bn.send(SLOT_NS) is not None
    assert rows == [
        (20, DROPPED, -1, NOT_ECT, NOT_ECT, 2, 2972),
        (0, MARKED, 0, ECT0, CE, 0, 0),
        (10, SENT, SLOT_NS - 10, NOT_ECT, NOT_ECT, 1, 1486),
    ]
    assert (bn.arrived, bn.sent, bn.dropped_count, bn.marked) == (3, 2, 1, 1)


def test_a_drop_after_taking_is_counted_through_the_drop_sink() -> None:
    class HeadDrop(Pfifo):
        def __init__(self, drop: DropSink) -> None:
            super().__init__(drop=drop)
            self.sink = drop

        def dequeue(self, now_ns: int) -> Packet | None:
            pkt = super().dequeue(now_ns)
            if pkt is not None and self.q:
                self.sink(pkt, now_ns)
                return super().dequeue(now_ns)
            return pkt

    def make(drop: DropSink) -> HeadDrop:
        return HeadDrop(drop)

    bn = Bottleneck(make, RATE_BPS)
    bn.arrive(ipv4(100), 0)
    bn.arrive(ipv4(200), 0)
    sent = bn.send(0)
    assert sent is not None and parse(sent[1])[0] == 200
    assert (bn.sent, bn.dropped_count) == (1, 1)


def test_a_rate_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Bottleneck(lambda drop: Pfifo(drop=drop), 0)


# --- the engine: one thread, a socket pair for a TUN device


def test_the_engine_releases_at_the_rate_then_the_delay() -> None:
    """Ten 1 ms packets sent at once come back 1 ms apart, the first after 1 ms + the 5 ms delay."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    bn = Bottleneck(lambda drop: Pfifo(drop=drop), RATE_BPS)
    link = Link(LinkSpec("x-test", 5_000_000), random.Random(1), bottleneck=bn, fd=ours.fileno())
    engine = threading.Thread(target=serve, args=([link], 50_000, 300_000_000))
    engine.start()
    try:
        sent_at = time.monotonic_ns()
        for i in range(10):
            theirs.send(ipv4(1486, sport=i))
        theirs.settimeout(2)
        back = []
        for _ in range(10):
            data = theirs.recv(65536)
            back.append((time.monotonic_ns() - sent_at, parse(data)[2]))
    finally:
        engine.join()
        theirs.close()
        ours.close()
    assert [key[3] for _, key in back if key] == list(range(10))
    times_ms = [t / 1e6 for t, _ in back]
    # The first leaves after its own slot and the delay; each next one a slot later (1 ms apart).
    # Never before its slot and the delay; late by at most a few ms of a busy host (the test runs at normal priority).
    assert 5.95 <= times_ms[0] <= 12.0
    gaps = [b - a for a, b in itertools.pairwise(times_ms)]
    assert 0.9 <= sorted(gaps)[len(gaps) // 2] <= 1.1
    assert 14.95 <= times_ms[-1] <= 30.0
    assert link.stats.released == 10 and bn.sent == 10


# --- queue records


def test_queue_records_round_trip_into_a_table(tmp_path: Path) -> None:
    records = QueueRecords(limit=4)
    bn = Bottleneck(lambda drop: Pfifo(limit=2, drop=drop, mark_all=True), RATE_BPS, records.record)
    bn.arrive(ipv4(1486, tos=ECT0, proto=6, sport=40000, dport=7777), 1_000)
    bn.arrive(ipv4(500, sport=5000, dport=7778), 2_000)
    bn.arrive(ipv4(500), 3_000)  # over the limit of 2: dropped
    bn.arrive(b"\x00" * 30, 4_000)  # not IP: no flow; refused too
    bn.send(1_000)
    bn.send(SLOT_NS + 1_000)
    bn.arrive(ipv4(100), 5 * SLOT_NS)  # past the records' limit of 4 rows
    bn.send(5 * SLOT_NS)
    path = tmp_path / "records.bin"
    before_ns = time.time_ns() - time.monotonic_ns()
    records.write(str(path))
    table = read(str(path)).to_pylist()
    assert records.left_out == 1 and len(table) == 4
    offset_ns = table[0]["t_ns"] - 3_000
    assert abs(offset_ns - before_ns) < 1_000_000_000  # t_ns is Unix time
    rows = [{k: v for k, v in r.items() if k != "t_ns"} | {"t": r["t_ns"] - offset_ns} for r in table]
    common = {"direction": "up", "ecn_out": NOT_ECT, "ecn_in": NOT_ECT}
    up = {"protocol": 17, "src": "10.77.1.1", "dst": "10.77.2.2"}
    nothing = {"protocol": None, "src": None, "dst": None, "sport": None, "dport": None}
    assert rows[0] == common | up | {"t": 3_000, "length": 500, "sojourn_ns": None, "verdict": "dropped",
                                     "backlog_packets": 2, "backlog_bytes": 1986, "sport": 5000, "dport": 7778}  # fmt: skip
    assert rows[1] == common | nothing | {"t": 4_000, "length": 30, "sojourn_ns": None, "verdict": "dropped",
                                          "backlog_packets": 2, "backlog_bytes": 1986}  # fmt: skip
    assert rows[2] == common | up | {"t": 1_000, "length": 1486, "sojourn_ns": 0, "verdict": "marked", "ecn_in": ECT0,
                                     "ecn_out": CE, "protocol": 6, "backlog_packets": 0, "backlog_bytes": 0,
                                     "sport": 40000, "dport": 7777}  # fmt: skip
    assert rows[3]["verdict"] == "sent" and rows[3]["sojourn_ns"] == SLOT_NS - 1_000


def test_the_converter_prints_parquet_and_a_missing_file_still_gives_a_table(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    records = QueueRecords()
    bn = Bottleneck(lambda drop: Pfifo(drop=drop), RATE_BPS, records.record)
    bn.arrive(ipv4(100), 0)
    bn.send(0)
    path = tmp_path / "r.bin"
    records.write(str(path))
    assert queue_records_main([str(path)]) == 0
    assert pq.read_table(io.BytesIO(capsysbinary.readouterr().out)).num_rows == 1
    assert not path.exists()
    assert queue_records_main([str(path)]) == 1
    out = capsysbinary.readouterr()
    assert pq.read_table(io.BytesIO(out.out)).num_rows == 0
    assert b"No such file" in out.err
