"""Tail-drop FIFOs: pfifo (a limit in packets) and bfifo (a limit in bytes), as the kernel's sch_fifo."""

from __future__ import annotations

from collections import deque

from antler.rig.aqm.base import DropSink, Packet, ignore_drop

PFIFO_LIMIT = 1000
"""PFIFO_LIMIT is pfifo's default limit in packets: the kernel's default, the device's txqueuelen (1000 on a veth)."""
ETH_OVERHEAD_BYTES = 14
"""ETH_OVERHEAD_BYTES is the Ethernet header the kernel counts in a packet's length on a veth (qdisc_pkt_len)."""
BFIFO_LIMIT = PFIFO_LIMIT * (1500 + ETH_OVERHEAD_BYTES)
"""BFIFO_LIMIT is bfifo's default limit in bytes: txqueuelen times the device's MTU with its link header (1,514,000)."""


class PacketFifo:
    """The packets a single-FIFO discipline holds, oldest first, with their IP bytes (pfifo, bfifo, PIE).

    ``_push`` and ``_pop`` keep the byte count with the deque; the backlog
    properties are the QueueDiscipline protocol's.
    """

    __slots__ = ("_bytes", "_q")

    def __init__(self) -> None:
        self._q: deque[Packet] = deque()
        self._bytes = 0

    def _push(self, pkt: Packet) -> None:
        self._q.append(pkt)
        self._bytes += pkt.length

    def _pop(self) -> Packet | None:
        if not self._q:
            return None
        pkt = self._q.popleft()
        self._bytes -= pkt.length
        return pkt

    @property
    def backlog_packets(self) -> int:
        """The packets held now."""
        return len(self._q)

    @property
    def backlog_bytes(self) -> int:
        """The bytes held now (IP lengths)."""
        return self._bytes


class Pfifo(PacketFifo):
    """A FIFO that holds at most ``limit`` packets and refuses (tail-drops) the rest."""

    __slots__ = ("drop", "limit")

    def __init__(self, limit: int = PFIFO_LIMIT, *, drop: DropSink = ignore_drop) -> None:
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1 packet")
        super().__init__()
        self.limit = limit
        self.drop = drop

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt, or return False when the queue holds ``limit`` packets already."""
        if len(self._q) >= self.limit:
            return False
        self._push(pkt)
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the oldest packet, or None when empty."""
        return self._pop()


class Bfifo(PacketFifo):
    """A FIFO that holds at most ``limit`` bytes and refuses (tail-drops) a packet that would exceed it.

    As the kernel's bfifo on a veth, a packet counts as its IP length plus the
    14-byte Ethernet header (``overhead_bytes``) against the limit, so the same
    ``bfifo limit B`` holds the same packets on either bottleneck.
    """

    __slots__ = ("_held", "drop", "limit", "overhead_bytes")

    def __init__(
        self, limit: int = BFIFO_LIMIT, *, overhead_bytes: int = ETH_OVERHEAD_BYTES, drop: DropSink = ignore_drop
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit {limit} must be at least 1 byte")
        self.limit = limit
        self.overhead_bytes = overhead_bytes
        self.drop = drop
        super().__init__()
        self._held = 0

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt, or return False when it would take the held bytes (with overhead) above ``limit``."""
        size = pkt.length + self.overhead_bytes
        if self._held + size > self.limit:
            return False
        self._push(pkt)
        self._held += size
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the oldest packet, or None when empty."""
        pkt = self._pop()
        if pkt is not None:
            self._held -= pkt.length + self.overhead_bytes
        return pkt
