"""The queue-discipline protocol of the userspace bottleneck, and the packet it holds.

The userspace bottleneck (the delay link at mid, :mod:`antler.rig.delay_link`)
serialises packets at the rig's rate. Between arrival and transmission each
packet waits in a queue discipline: an object with the three methods of
:class:`QueueDiscipline`. The link calls them with times on its own
monotonic clock (``time.monotonic_ns()``), and tests call them with a fake
clock, so a discipline never reads a clock itself.

- ``enqueue(pkt, now_ns)`` at the packet's arrival. The discipline keeps the
  packet, or refuses it (tail drop, a full limit), returning False; it may
  also drop packets it already holds to make room (fq_codel's fat-flow drop),
  reporting each through ``drop``.
- ``dequeue(now_ns)`` when the link is free to send: the packet to send now,
  or None when the queue is empty. A discipline that drops at dequeue (CoDel,
  the AQMs after it) reports each packet it drops through ``drop`` before it
  returns the next one; a mark sets ``pkt.ecn = CE`` and ``pkt.marked = True``.
- ``backlog_packets`` and ``backlog_bytes``: what it holds now.

Everything here is the standard library, so the link runs on any python3.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

NOT_ECT = 0
ECT1 = 1
ECT0 = 2
CE = 3
"""The ECN codepoints of the IP header's two low TOS bits (RFC 3168, RFC 8311)."""


class Packet:
    """One IP packet at the bottleneck: its bytes and what the queue needs to know of them.

    ``length`` is the IP length in bytes (the rate counts it plus the 14-byte
    Ethernet header, as htb does on a veth); ``ecn`` the codepoint it carries
    now (a discipline may set it to CE); ``ecn_in`` the one it arrived with;
    ``flow_key`` a hashable 5-tuple (protocol, source, destination, ports) or
    None for a packet without one; ``t_enqueue_ns`` its arrival time.
    """

    __slots__ = ("data", "ecn", "ecn_in", "flow_key", "length", "marked", "t_enqueue_ns")

    def __init__(self, data: bytes, length: int, ecn: int, flow_key: object, t_enqueue_ns: int) -> None:
        self.data = data
        self.length = length
        self.ecn = ecn
        self.ecn_in = ecn
        self.flow_key = flow_key
        self.t_enqueue_ns = t_enqueue_ns
        self.marked = False

    def sojourn_ns(self, now_ns: int) -> int:
        """Return how long the packet has waited at now_ns, in ns."""
        return now_ns - self.t_enqueue_ns


DropSink = Callable[[Packet, int], None]
"""DropSink receives each packet a discipline drops after taking it, with the time of the drop (ns)."""


@runtime_checkable
class QueueDiscipline(Protocol):
    """What the userspace bottleneck needs of a queue discipline (see the module docstring)."""

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt at now_ns, or refuse it (False: the caller counts it dropped)."""
        ...

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the packet to send at now_ns, or None when empty; drops go to ``drop``."""
        ...

    @property
    def backlog_packets(self) -> int:
        """The packets held now."""
        ...

    @property
    def backlog_bytes(self) -> int:
        """The bytes held now (IP lengths)."""
        ...


def ignore_drop(pkt: Packet, now_ns: int) -> None:
    """Drop sink that forgets the packet (the default)."""


def mark_ce(pkt: Packet) -> bool:
    """Mark pkt Congestion Experienced if it is ECN-capable; return whether it now carries CE.

    As the kernel's ``INET_ECN_set_ce``: ECT(0) and ECT(1) become CE, a packet
    that arrived CE stays CE (and counts as marked here), a not-ECT packet is
    left alone and False tells the caller to drop it instead (RFC 3168 section 5).
    """
    if pkt.ecn == NOT_ECT:
        return False
    pkt.ecn = CE
    pkt.marked = True
    return True
