"""CoDel, Controlled Delay (RFC 8289): drop (or mark) at dequeue while packets wait above a target delay.

The state machine follows RFC 8289 section 5 (``dequeue``, section 5.5, and
its helpers ``dodequeue`` and ``control_law``, section 5.6) with the Linux
kernel's additions (include/net/codel_impl.h): with ``ecn`` an ECN-capable
packet is marked CE instead of dropped (RFC 8289 section 5.5 allows either), and
``ce_threshold`` marks ECT packets whose sojourn exceeds it (the DCTCP-style
shallow threshold). The control law ``t + interval / sqrt(count)`` (RFC 8289
section 5.6) reads a table of exact values where the kernel uses a Newton
step for ``1/sqrt``; it runs only at a drop, never per packet.

:class:`CodelFlow` is one queue with its CoDel state; :class:`CodelEngine`
drives a flow's dequeue and is shared by :class:`Codel` (one flow) and
fq_codel (:mod:`antler.rig.aqm.fq_codel`, one per hash bucket).
"""

from __future__ import annotations

import math
from collections import deque

from antler.rig.aqm.base import CE, NOT_ECT, DropSink, Packet, ignore_drop

CODEL_TARGET_NS = 5_000_000
"""CODEL_TARGET_NS is the default target sojourn, 5 ms (RFC 8289 section 4.3, the kernel's default)."""
CODEL_INTERVAL_NS = 100_000_000
"""CODEL_INTERVAL_NS is the default interval, 100 ms (RFC 8289 section 4.2, the kernel's default)."""
CODEL_LIMIT = 1000
"""CODEL_LIMIT is codel's default limit in packets (the kernel's DEFAULT_CODEL_LIMIT)."""
MTU_BYTES = 1500
"""MTU_BYTES is MAXPACKET of RFC 8289: below one full packet of backlog CoDel never drops (IP bytes)."""
_LAW_TABLE_SIZE = 4096


class CodelFlow:
    """One FIFO with its CoDel state variables (RFC 8289 section 5.2), and its bytes held."""

    __slots__ = (
        "bytes",
        "count",
        "deficit",
        "drop_next_ns",
        "dropping",
        "first_above_ns",
        "in_list",
        "index",
        "lastcount",
        "ldelay_ns",
        "q",
    )

    def __init__(self, index: int = 0) -> None:
        self.q: deque[Packet] = deque()
        self.bytes = 0
        self.index = index
        self.deficit = 0
        self.in_list = False
        self.count = 0
        self.lastcount = 0
        self.dropping = False
        self.first_above_ns = 0
        self.drop_next_ns = 0
        self.ldelay_ns = 0


class CodelEngine:
    """CoDel's dequeue over flows of one qdisc, with the qdisc's totals, parameters and counters.

    ``drops`` counts packets CoDel dropped, ``marks`` those it marked CE in
    place of a drop, ``ce_marks`` those marked for a sojourn above ``ce_threshold``.
    """

    __slots__ = (
        "_bytes",
        "_law",
        "_packets",
        "ce_marks",
        "ce_threshold_ns",
        "drop",
        "drops",
        "ecn",
        "interval_ns",
        "marks",
        "mtu_bytes",
        "target_ns",
    )

    def __init__(
        self,
        target_ns: int,
        interval_ns: int,
        ecn: bool,
        ce_threshold_ns: int | None,
        drop: DropSink,
        mtu_bytes: int = MTU_BYTES,
    ) -> None:
        for name, value in (("target", target_ns), ("interval", interval_ns)):
            if value <= 0:
                raise ValueError(f"{name} {value} ns must be above 0")
        self.target_ns = target_ns
        self.interval_ns = interval_ns
        self.ecn = ecn
        self.ce_threshold_ns = ce_threshold_ns
        self.drop = drop
        self.mtu_bytes = mtu_bytes
        self._law = [0] + [round(interval_ns / math.sqrt(c)) for c in range(1, _LAW_TABLE_SIZE)]
        self._packets = 0
        self._bytes = 0
        self.drops = 0
        self.marks = 0
        self.ce_marks = 0

    def control_law(self, t_ns: int, count: int) -> int:
        """Return the next drop time after t_ns: ``t + interval / sqrt(count)`` (RFC 8289 section 5.6)."""
        if count < _LAW_TABLE_SIZE:
            return t_ns + self._law[count]
        return t_ns + round(self.interval_ns / math.sqrt(count))

    def _pop(self, f: CodelFlow) -> Packet | None:
        if not f.q:
            return None
        pkt = f.q.popleft()
        f.bytes -= pkt.length
        self._bytes -= pkt.length
        self._packets -= 1
        return pkt

    def _ok_to_drop(self, pkt: Packet | None, f: CodelFlow, now_ns: int) -> bool:
        """Return whether pkt may be dropped: RFC 8289 section 5.6's ``dodequeue`` after its dequeue."""
        if pkt is None:
            f.first_above_ns = 0
            return False
        f.ldelay_ns = sojourn = now_ns - pkt.t_enqueue_ns
        if sojourn < self.target_ns or self._bytes <= self.mtu_bytes:
            f.first_above_ns = 0  # went below target: stay below for at least an interval
            return False
        if f.first_above_ns == 0:
            f.first_above_ns = now_ns + self.interval_ns
            return False
        return now_ns >= f.first_above_ns

    def _discard(self, pkt: Packet, now_ns: int) -> None:
        self.drops += 1
        self.drop(pkt, now_ns)

    def dequeue_flow(self, f: CodelFlow, now_ns: int) -> Packet | None:
        """Return f's next packet at now_ns after CoDel's drops or marks (RFC 8289 section 5.5), or None."""
        pkt = self._pop(f)
        ok_to_drop = self._ok_to_drop(pkt, f, now_ns)
        if pkt is None:
            f.dropping = False
            return None
        if f.dropping:
            if not ok_to_drop:
                f.dropping = False  # sojourn went below target: leave the dropping state
            # The next drop is due: drop and take the next one; a large backlog can make several due at once.
            while f.dropping and pkt is not None and now_ns >= f.drop_next_ns:
                f.count += 1
                if self.ecn and pkt.ecn != NOT_ECT:
                    pkt.ecn = CE
                    pkt.marked = True
                    self.marks += 1
                    f.drop_next_ns = self.control_law(f.drop_next_ns, f.count)
                    break
                self._discard(pkt, now_ns)
                pkt = self._pop(f)
                if not self._ok_to_drop(pkt, f, now_ns):
                    f.dropping = False
                else:
                    f.drop_next_ns = self.control_law(f.drop_next_ns, f.count)
        elif ok_to_drop:
            # Enter the dropping state: drop (or mark) this one and schedule the next drop.
            if self.ecn and pkt.ecn != NOT_ECT:
                pkt.ecn = CE
                pkt.marked = True
                self.marks += 1
            else:
                self._discard(pkt, now_ns)
                pkt = self._pop(f)
                self._ok_to_drop(pkt, f, now_ns)
            f.dropping = True
            # Dropped recently: start near the drop rate that controlled the queue last time (section 5.5).
            delta = f.count - f.lastcount
            f.count = delta if delta > 1 and now_ns - f.drop_next_ns < 16 * self.interval_ns else 1
            f.lastcount = f.count
            f.drop_next_ns = self.control_law(now_ns, f.count)
        if (
            pkt is not None
            and self.ce_threshold_ns is not None
            and f.ldelay_ns > self.ce_threshold_ns
            and pkt.ecn != NOT_ECT
        ):
            pkt.ecn = CE
            pkt.marked = True
            self.ce_marks += 1
        return pkt


class Codel(CodelEngine):
    """CoDel on one FIFO of at most ``limit`` packets (RFC 8289; the kernel's sch_codel).

    Defaults are the kernel's: target 5 ms, interval 100 ms, limit 1000
    packets, ``noecn``, no ce_threshold. Times are ns.
    """

    __slots__ = ("flow", "limit")

    def __init__(
        self,
        limit: int = CODEL_LIMIT,
        target: int = CODEL_TARGET_NS,
        interval: int = CODEL_INTERVAL_NS,
        ecn: bool = False,
        ce_threshold: int | None = None,
        *,
        drop: DropSink = ignore_drop,
    ) -> None:
        super().__init__(target, interval, ecn, ce_threshold, drop)
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1 packet")
        self.limit = limit
        self.flow = CodelFlow()

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt, or return False when ``limit`` packets are held (tail drop)."""
        if self._packets >= self.limit:
            return False
        self.flow.q.append(pkt)
        self.flow.bytes += pkt.length
        self._bytes += pkt.length
        self._packets += 1
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the packet to send at now_ns after CoDel's drops (to ``drop``) and marks, or None."""
        return self.dequeue_flow(self.flow, now_ns)

    @property
    def backlog_packets(self) -> int:
        """The packets held now."""
        return self._packets

    @property
    def backlog_bytes(self) -> int:
        """The bytes held now (IP lengths)."""
        return self._bytes
