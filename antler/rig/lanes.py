"""The path's two directions as built: each its own rate, queue, one-way delay and bottleneck.

The path is symmetric by default: ``rig.rate``, ``rig.qdisc`` and half of
``rig.rtt`` apply to each direction, and each direction has a bottleneck of
its own (forward at mid_right's egress, towards right; reverse at
mid_left's egress, towards left), so a download through the "50 Mbit/s"
dumbbell runs at 50 Mbit/s, as an upload does. A direction differs only
when asked, under ``rig.forward`` or ``rig.reverse``::

    rig.reverse.rate=5mbit          # an uplink/downlink of 50/5 Mbit/s
    rig.reverse.rate=0              # the reverse direction unshaped (one-way shaping)
    rig.forward.delay=5ms rig.reverse.delay=35ms   # unequal one-way delays (RTT 40 ms)
    rig.reverse.qdisc=bfifo         # its own queue discipline

Forward is left to right (an upload from left), reverse right to left (a
download to left). A :class:`Lane` is one direction with every value
resolved; :func:`antler.rig.path.lanes` makes the two of a path.
"""

from __future__ import annotations

from dataclasses import dataclass

from antler.node.metric import Bitrate, Duration

DIRECTIONS = ("forward", "reverse")
"""DIRECTIONS are the path's two directions: forward (left to right) and reverse (right to left)."""


@dataclass(frozen=True)
class Direction:
    """One direction's own values (``rig.forward``, ``rig.reverse``); each one left null takes the path's.

    rate: the direction's bottleneck rate (0: unshaped); qdisc: its queue
    discipline as tc spells it; delay: its one-way delay (default half of
    rig.rtt); trace: a Mahimahi trace file that replaces the rate
    (:mod:`antler.rig.trace`, userspace bottleneck).
    """

    rate: Bitrate | None = None
    qdisc: str | None = None
    delay: Duration | None = None
    trace: str | None = None


@dataclass(frozen=True)
class Lane:
    """One direction of the path with every value resolved.

    name is ``forward`` or ``reverse``; rate_bps 0 is unshaped (unless a
    trace paces it); qdisc is the queue discipline's tc words, rig.limit
    added where it counts packets; loss applies to forward only; trace is
    the trace file's absolute path or ""; where is the bottleneck that
    runs it: ``kernel`` (htb + qdisc), ``userspace`` (the delay link's) or
    ``none`` (unshaped).
    """

    name: str
    rate_bps: int
    qdisc: str
    delay_ns: int
    loss: float
    trace: str
    where: str

    @property
    def shaped(self) -> bool:
        """Whether the direction has a bottleneck that paces it (a rate or a trace)."""
        return bool(self.rate_bps or self.trace)

    def describe(self) -> str:
        """Return the direction as words for a log line and a title: ``50 Mbit/s pfifo limit 1000 (kernel)``."""
        if not self.shaped:
            return f"unshaped {self.qdisc} ({self.where})" if self.where == "kernel" else "unshaped"
        pace = f"trace {self.trace.rsplit('/', 1)[-1]}" if self.trace else f"{self.rate_bps / 1e6:g} Mbit/s"
        return f"{pace} {self.qdisc} ({self.where})"

    def facts(self) -> dict[str, object]:
        """Return the direction as built, for meta.json's ``rig.forward`` and ``rig.reverse``."""
        return {
            "rate_bps": self.rate_bps,
            "qdisc": self.qdisc if self.shaped else "",
            "bottleneck": self.where,
            "delay_ms": self.delay_ns / 1e6,
            "loss": self.loss,
            "trace": self.trace,
        }


def one_way_default(rtt: Duration) -> Duration:
    """Return a direction's one-way delay when it sets none: half the RTT."""
    return Duration(rtt.ns // 2)
