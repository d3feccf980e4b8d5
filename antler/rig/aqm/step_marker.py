"""A step marker, the example of your own queue discipline: mark CE what waited above a threshold."""

from collections import deque

from antler.rig.aqm import DropSink, Packet, mark_ce, parse_time_ns


class StepMarker:
    """A FIFO that marks each packet waiting longer than ``threshold`` CE (drops it if not ECN-capable)."""

    def __init__(self, drop: DropSink, threshold: str = "1ms", limit: str = "1000") -> None:
        self.drop = drop  # where the packets dropped after enqueue go
        self.threshold_ns = parse_time_ns(threshold)
        self.limit = int(limit)
        self.queue: deque[Packet] = deque()
        self.backlog_bytes = 0

    @property
    def backlog_packets(self) -> int:
        return len(self.queue)

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        if len(self.queue) >= self.limit:
            return False  # refused: the link counts a tail drop
        self.queue.append(pkt)
        self.backlog_bytes += pkt.length
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        while self.queue:
            pkt = self.queue.popleft()
            self.backlog_bytes -= pkt.length
            if now_ns - pkt.t_enqueue_ns <= self.threshold_ns or mark_ce(pkt):
                return pkt  # in time, or marked CE
            self.drop(pkt, now_ns)  # late and not ECN-capable
        return None
