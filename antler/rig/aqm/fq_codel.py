"""FQ-CoDel (RFC 8290): flows hashed into queues, each with CoDel, served by deficit round robin with new-flow priority.

Enqueue and dequeue follow RFC 8290 sections 4.1 and 4.2 as the kernel's
sch_fq_codel implements them: a packet joins its flow's queue (its 5-tuple
hashed into ``flows`` buckets); a flow that was in neither list joins the
tail of *new flows* with a quantum of credit. Dequeue serves the head of new
flows, else of old flows; a flow out of credit gets a quantum more and moves
to the tail of old flows; a flow that empties leaves the lists, except that
an empty new flow passes through old flows first (so new flows cannot starve
old ones, RFC 8290 section 4.2). Over ``limit`` packets (or
``memory_limit`` bytes) it drops from the head of the fattest flow, up to
half its bytes or 64 packets (the kernel's ``fq_codel_drop``, RFC 8290
section 4.1). Credit counts each packet's IP length plus the 14-byte
Ethernet header, as the kernel counts it on a veth, so the default quantum
(1514) is one full-size packet per round on both bottlenecks.
"""

from __future__ import annotations

from collections import deque

from antler.rig.aqm.base import DropSink, Packet, ignore_drop
from antler.rig.aqm.codel import CODEL_INTERVAL_NS, CODEL_TARGET_NS, CodelEngine, CodelFlow
from antler.rig.aqm.fifo import ETH_OVERHEAD_BYTES

FQ_CODEL_FLOWS = 1024
"""FQ_CODEL_FLOWS is the default number of flow queues (the kernel's)."""
FQ_CODEL_LIMIT = 10240
"""FQ_CODEL_LIMIT is the default limit in packets (the kernel's 10 * 1024)."""
FQ_CODEL_QUANTUM = 1514
"""FQ_CODEL_QUANTUM is the default DRR quantum in bytes: the kernel's psched_mtu of an Ethernet device."""
FQ_CODEL_MEMORY_LIMIT = 32 << 20
"""FQ_CODEL_MEMORY_LIMIT is the default cap on the bytes held (the kernel's 32 MB)."""
DROP_BATCH = 64
"""DROP_BATCH is the most packets one overflow drops from the fat flow (the kernel's drop_batch_size)."""


class FqCodel(CodelEngine):
    """FQ-CoDel over ``flows`` hashed flow queues (RFC 8290; the kernel's sch_fq_codel).

    Defaults are the kernel's: 1024 flows, quantum 1514 bytes, limit 10240
    packets, memory_limit 32 MB, target 5 ms, interval 100 ms, ``ecn`` on,
    no ce_threshold. Times are ns. ``drop_overlimit`` counts the packets the
    fat-flow drop removed. ``memory_limit`` counts the IP bytes held (the
    kernel counts its buffers' true size, somewhat more per packet).
    """

    __slots__ = ("_flows", "_new", "_old", "drop_overlimit", "limit", "memory_limit", "overhead_bytes", "quantum")

    def __init__(
        self,
        flows: int = FQ_CODEL_FLOWS,
        quantum: int = FQ_CODEL_QUANTUM,
        limit: int = FQ_CODEL_LIMIT,
        target: int = CODEL_TARGET_NS,
        interval: int = CODEL_INTERVAL_NS,
        ecn: bool = True,
        ce_threshold: int | None = None,
        memory_limit: int = FQ_CODEL_MEMORY_LIMIT,
        *,
        overhead_bytes: int = ETH_OVERHEAD_BYTES,
        drop: DropSink = ignore_drop,
    ) -> None:
        super().__init__(target, interval, ecn, ce_threshold, drop)
        for name, value in (("flows", flows), ("quantum", quantum), ("limit", limit), ("memory_limit", memory_limit)):
            if value < 1:
                raise ValueError(f"{name} {value} must be at least 1")
        self.limit = limit
        self.quantum = quantum
        self.memory_limit = memory_limit
        self.overhead_bytes = overhead_bytes
        self._flows = [CodelFlow(i) for i in range(flows)]
        self._new: deque[CodelFlow] = deque()
        self._old: deque[CodelFlow] = deque()
        self.drop_overlimit = 0

    def flow_of(self, pkt: Packet) -> int:
        """Return the index of the flow queue pkt's flow key hashes into."""
        return hash(pkt.flow_key) % len(self._flows)

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt into its flow's queue; over the limits, drop from the fattest flow's head (to ``drop``).

        Always True: a packet taken and then dropped (even this one) is reported through ``drop``.
        """
        f = self._flows[self.flow_of(pkt)]
        f.q.append(pkt)
        f.bytes += pkt.length
        self._bytes += pkt.length
        self._packets += 1
        if not f.in_list:
            f.in_list = True
            f.deficit = self.quantum
            self._new.append(f)
        if self._packets > self.limit or self._bytes > self.memory_limit:
            self._drop_fat_flow(now_ns)
        return True

    def _drop_fat_flow(self, now_ns: int) -> None:
        """Drop from the head of the flow with the most bytes: half of them, at most DROP_BATCH packets."""
        fat = max((f for f in (*self._new, *self._old) if f.bytes), key=lambda f: (f.bytes, -f.index))
        threshold = fat.bytes >> 1
        dropped_bytes, n = 0, 0
        while True:
            pkt = self._pop(fat)
            if pkt is None:
                break
            dropped_bytes += pkt.length
            n += 1
            self.drop(pkt, now_ns)
            if n >= DROP_BATCH or dropped_bytes >= threshold:
                break
        fat.count += n  # tell CoDel to signal harder too
        self.drop_overlimit += n

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the packet to send at now_ns (new flows first, DRR by quantum), or None when empty."""
        new, old = self._new, self._old
        while True:
            if new:
                head = new
            elif old:
                head = old
            else:
                return None
            f = head[0]
            if f.deficit <= 0:
                f.deficit += self.quantum
                head.popleft()
                old.append(f)
                continue
            pkt = self.dequeue_flow(f, now_ns)
            if pkt is None:
                head.popleft()
                if head is new and old:
                    old.append(f)  # an emptied new flow passes through old flows (no starvation)
                else:
                    f.in_list = False
                continue
            f.deficit -= pkt.length + self.overhead_bytes
            return pkt

    @property
    def backlog_packets(self) -> int:
        """The packets held now."""
        return self._packets

    @property
    def backlog_bytes(self) -> int:
        """The bytes held now (IP lengths)."""
        return self._bytes
