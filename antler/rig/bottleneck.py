"""The userspace bottleneck's serialiser: a queue discipline emptied at the rig's rate, on the link's clock.

A :class:`Bottleneck` sits in front of one delay link's delay stage (see
:mod:`antler.rig.delay_link`). Each packet the link reads is handed to
:meth:`Bottleneck.arrive`, which parses its header (:mod:`antler.rig.ipheader`)
and enqueues it in the queue discipline (:mod:`antler.rig.aqm.base`'s
protocol). Whenever the line is free, :meth:`Bottleneck.send` dequeues the
next packet and returns the time its transmission ends::

    start  = max(arrival, link_free)     # the line is work-conserving
    end    = start + (ip_length + 14) * 8 / rate
    link_free = end

The 14 bytes are the Ethernet header that htb counts on a veth, so pfifo at
50 Mbit/s gives the same goodput through the kernel's bottleneck or this one.
The caller releases the packet into the delay stage at ``end``.

The line's schedule runs on ``link_free``, not on the moment the caller got
round to calling :meth:`send`: a link that wakes 30 µs late still sends at the
rate, catching up (by at most :data:`CATCH_UP_NS`, about htb's own burst),
rather than losing the 30 µs from every packet's slot. The queue discipline
is called with the real time (its sojourns are what packets really waited).

Every packet's fate can go to a :class:`Recorder` (queue records); none is
kept when there is none. Times are ``time.monotonic_ns()`` in the link and a
fake clock in tests; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from antler.rig.aqm.base import CE, DropSink, Packet, QueueDiscipline, ignore_drop
from antler.rig.aqm.parse import make_queue, userspace_kinds as aqm_kinds
from antler.rig.ipheader import ETHERNET_HEADER_BYTES, parse, with_ecn

CATCH_UP_NS = 1_000_000
"""CATCH_UP_NS bounds how far the line's schedule may lag the real time: a late link bursts at most 1 ms of packets."""
SENT, DROPPED, MARKED = 0, 1, 2
"""The verdicts of a queue record: sent as it came, dropped, or sent marked CE."""

Record = Callable[[Packet, int, int, int, int, int], None]
"""Record receives (pkt, verdict, sojourn_ns or -1, ecn_out, backlog_packets, backlog_bytes) at enqueue."""


class Bottleneck:
    """A queue discipline emptied at rate_bps: arrivals in, transmissions out with their end times (ns)."""

    def __init__(
        self, make_queue: Callable[[DropSink], QueueDiscipline], rate_bps: int, record: Record | None = None
    ) -> None:
        """Serialise at rate_bps (> 0) from the queue make_queue returns given its drop sink.

        record, if given, gets every packet's fate. Raises ValueError for a
        rate that is not positive.
        """
        if rate_bps <= 0:
            raise ValueError(f"rate {rate_bps} bit/s must be positive")
        self.queue = make_queue(self.dropped)
        self.ns_per_byte = 8e9 / rate_bps
        self.link_free_ns = 0
        self.paused = False
        self.record = record
        self.arrived = self.sent = self.dropped_count = self.marked = 0
        # The backlog at each held packet's enqueue, for its record (only kept when recording).
        self._backlog_at: dict[int, tuple[int, int]] = {}

    def arrive(self, data: bytes, now_ns: int) -> bool:
        """Enqueue a packet read at now_ns; return False if the discipline refused it (a drop)."""
        length, ecn, key = parse(data)
        pkt = Packet(data, length, ecn, key, now_ns)
        q = self.queue
        if not q.backlog_packets and self.link_free_ns < now_ns:
            # An idle line starts on this packet's arrival.
            self.link_free_ns = now_ns
        backlog = (q.backlog_packets, q.backlog_bytes)
        self.arrived += 1
        if not q.enqueue(pkt, now_ns):
            self.dropped_count += 1
            if self.record is not None:
                self.record(pkt, DROPPED, -1, pkt.ecn, *backlog)
            return False
        if self.record is not None:
            self._backlog_at[id(pkt)] = backlog
        return True

    def dropped(self, pkt: Packet, now_ns: int) -> None:
        """Count (and record) a packet the discipline dropped after taking it: its DropSink."""
        self.dropped_count += 1
        if self.record is not None:
            self.record(pkt, DROPPED, -1, pkt.ecn, *self._backlog_at.pop(id(pkt), (0, 0)))

    def next_start_ns(self) -> int:
        """Return when the line can send the next packet (ns), or -1 when nothing is queued."""
        return self.link_free_ns if self.queue.backlog_packets and not self.paused else -1

    def send(self, now_ns: int) -> tuple[int, bytes] | None:
        """Dequeue the next packet if the line is free at now_ns: its transmission's end (ns) and its bytes.

        Returns None while the line is busy or nothing is queued. A packet the
        discipline marked comes back with its ECN bits set to CE (IPv4's
        checksum fixed).
        """
        if now_ns < self.link_free_ns or self.paused:
            return None
        pkt = self.queue.dequeue(now_ns)
        if pkt is None:
            return None
        start = max(self.link_free_ns, now_ns - CATCH_UP_NS)
        end = start + int((pkt.length + ETHERNET_HEADER_BYTES) * self.ns_per_byte)
        self.link_free_ns = end
        return end, self.sent_bytes(pkt, now_ns)

    def sent_bytes(self, pkt: Packet, now_ns: int) -> bytes:
        """Count (and record) a packet whose transmission begins at now_ns; return its bytes, CE set if marked."""
        self.sent += 1
        data = pkt.data
        verdict = SENT
        if pkt.ecn != pkt.ecn_in:
            data = with_ecn(data, pkt.ecn)
        if pkt.marked or (pkt.ecn == CE and pkt.ecn_in != CE):
            verdict = MARKED
            self.marked += 1
        if self.record is not None:
            backlog = self._backlog_at.pop(id(pkt), (0, 0))
            self.record(pkt, verdict, now_ns - pkt.t_enqueue_ns, pkt.ecn, *backlog)
        return data

    def set_rate(self, rate_bps: int, now_ns: int) -> None:
        """Serialise at rate_bps from the next packet on (a schedule's step); 0 stops the line until a rate returns.

        The packet on the line finishes at the old rate, as on a real link.
        """
        self.paused = rate_bps <= 0
        if not self.paused:
            self.ns_per_byte = 8e9 / rate_bps
            self.link_free_ns = max(self.link_free_ns, now_ns)

    def text(self) -> str:
        """Return the bottleneck's counts as words for the link's log line."""
        return f"bottleneck: arrived {self.arrived} sent {self.sent} dropped {self.dropped_count} marked {self.marked}"


def userspace_kinds() -> frozenset[str]:
    """Return the queue-discipline kinds the userspace bottleneck implements (``pfifo``, ``bfifo``, ..., ``py``)."""
    return frozenset(aqm_kinds())


def queue_maker(text: str, config_dir: Path | None = None) -> Callable[[DropSink], QueueDiscipline]:
    """Return a maker of the queue discipline spelled as tc spells it (``pfifo limit 1000``), given a drop sink.

    The text is checked at once: raises ValueError naming what is wrong
    (an unknown kind, a bad parameter). A ``py:MODULE:CLASS`` loads
    MODULE.py from config_dir first (see :mod:`antler.rig.aqm.plugin`).
    """
    make_queue(text, drop=ignore_drop, config_dir=config_dir)  # raises on a bad spelling, before the link starts

    def maker(drop: DropSink) -> QueueDiscipline:
        return make_queue(text, drop=drop, config_dir=config_dir)

    return maker
