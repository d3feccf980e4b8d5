"""Packet senders: PacketSenders (the union) and Unresponsive (a fixed schedule)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

from antler.node.metric import Duration
from antler.node.runners.packet.wire import MAX_UDP_PAYLOAD
from antler.node.spec import set_fields

SendPlan = Iterator[tuple[int, int, bool]]
"""SendPlan yields (offset from the flow start in ns, packet length, echo) for each packet, in time order."""


@dataclass(frozen=True)
class Unresponsive:
    """Sends packets on a schedule without regard to any congestion signals.

    ``wait`` lists the waits between packets, cycled sequentially or drawn at
    random (``random_wait``); with ``wait_first`` the first packet waits too.
    ``length`` lists the packet lengths (header included), cycled or drawn at
    random (``random_length``). Packets are sent while their scheduled time is
    before ``duration``. With ``echo``, each packet asks the server for a reply.
    ``seed`` fixes the random draws, for repeatable tests.
    """

    wait: tuple[Duration, ...] = field(default_factory=lambda: (Duration(20_000_000),))
    wait_first: bool = False
    random_wait: bool = False
    length: tuple[int, ...] = (160,)
    random_length: bool = False
    duration: Duration = field(default_factory=lambda: Duration(60_000_000_000))
    echo: bool = False
    seed: int | None = None

    def validate(self) -> None:
        """Raise ValueError for no waits or lengths, a length off 1..MAX_UDP_PAYLOAD, all-zero waits, or a duration not above 0."""
        if not self.wait:
            raise ValueError("unresponsive needs at least one wait")
        if not self.length:
            raise ValueError("unresponsive needs at least one length")
        for n in self.length:
            if not 1 <= n <= MAX_UDP_PAYLOAD:
                raise ValueError(f"packet length {n} is not between 1 and {MAX_UDP_PAYLOAD}")
        if self.duration.ns <= 0:
            raise ValueError("unresponsive needs a positive duration")
        if all(w.ns == 0 for w in self.wait):
            raise ValueError("unresponsive needs a wait above 0 (all-zero waits would send without end)")

    def expected_seconds(self) -> float:
        """Return how long the sender sends."""
        return self.duration.seconds

    def plan(self) -> SendPlan:
        """Yield each packet's scheduled offset, length and echo flag, until the duration."""
        rng = random.Random(self.seed)
        waits = [w.ns for w in self.wait]
        lengths = list(self.length)
        t, i = 0, 0
        while True:
            if i > 0 or self.wait_first:
                k = i - (0 if self.wait_first else 1)
                t += rng.choice(waits) if self.random_wait else waits[k % len(waits)]
            if t >= self.duration.ns:
                return
            n = rng.choice(lengths) if self.random_length else lengths[i % len(lengths)]
            yield t, n, self.echo
            i += 1


@dataclass(frozen=True)
class PacketSenders:
    """The union of available packet senders; exactly one must be set."""

    unresponsive: Unresponsive | None = None

    def validate(self) -> None:
        """Raise ValueError unless exactly one sender is set."""
        set_ = set_fields(self)
        if len(set_) != 1:
            names = ", ".join(f.name for f in fields(self))
            raise ValueError(f"a sender has exactly one of {names}; found {', '.join(set_) or 'none'}")

    def sender(self) -> Unresponsive:
        """Return the chosen sender."""
        assert self.unresponsive is not None
        return self.unresponsive
