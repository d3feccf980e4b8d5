"""The delay link's engine: TUN devices that hold each packet for a fixed delay, then write it back.

Each *link* is a persistent TUN device that the rig routes one direction of
traffic into. The engine reads every packet the kernel sends into the device,
stamps it with the absolute deadline ``arrival + delay``, drops it with
probability ``loss``, and writes it back into the same device when the
deadline comes (:func:`serve`). The process that runs it, and its command
line, is :mod:`antler.rig.delay`.

Why one thread and not a reader plus a release thread: under CPython's GIL a
thread that spins for a deadline holds the interpreter for up to the switch
interval (5 ms) while the reader waits for it, which would add milliseconds
to packets that arrive meanwhile. One thread that multiplexes the TUN fds with
``select`` and the release deadlines has no such hand-off. It sleeps in
``select`` until ``spin`` before the earliest deadline (with the timer slack
set to 1 µs so the kernel wakes it on time), then spins, polling the fds
without blocking, and releases at the deadline. The delay is constant per
link, so deadlines are in arrival order and each link's queue is a FIFO
deque of ``(deadline_ns, packet)``; releases are in order by construction.

A link may also be the path's bottleneck (``--rate`` and ``--qdisc`` on its
command line): then each packet it reads waits in a queue discipline that a
:class:`antler.rig.bottleneck.Bottleneck` empties at the rate, and enters
the delay stage (and the random loss) when its transmission ends. The line's
next free moment is one more deadline for the same loop, so the design stays
one thread; transmissions end in order, so the delay FIFO stays ordered.
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from antler.node.metric import Duration, Probability, UnitError
from antler.rig.bottleneck import Bottleneck

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
READ_SIZE = 65536
DEFAULT_SPIN = "50us"
"""DEFAULT_SPIN is how long before a deadline the link stops sleeping and spins.

At real-time priority the kernel wakes the link within tens of µs, so 50 µs
of spin is as accurate as 300 µs for half the CPU (bench/README.md).
"""
DEFAULT_QUEUE_LIMIT = 100_000
"""DEFAULT_QUEUE_LIMIT caps the packets held per link (about 0.5 s at 3 Gbit/s of 1500-byte packets)."""
LATENESS_EDGES_US = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
"""LATENESS_EDGES_US are the upper edges of the release-lateness histogram buckets."""


class DelayError(Exception):
    """A link that could not be parsed or opened."""


class Controlled(Protocol):
    """What changes the links while they run (:class:`antler.rig.link_control.Control`): an fd to select, a handler."""

    @property
    def fd(self) -> int:
        """The fd that is readable when a change waits."""
        ...

    def handle(self) -> None:
        """Apply the changes waiting."""
        ...


@dataclass(frozen=True)
class LinkSpec:
    """One delay link: its TUN device, one-way delay and random loss probability."""

    dev: str
    delay_ns: int
    loss: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """Read ``DEV:DELAY[:LOSS]``, e.g. ``d-fwd:10ms:1%`` or ``d-ret:10ms:0.01``, raising DelayError."""
        parts = text.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise DelayError(f"link {text!r} is not DEV:DELAY[:LOSS] (e.g. d-fwd:10ms:1%)")
        try:
            delay = Duration.parse(parts[1]).ns
        except ValueError as e:
            raise DelayError(f"link {text!r}: {e}") from None
        loss = parse_loss(parts[2]) if len(parts) == 3 else 0.0
        return cls(parts[0], delay, loss)

    def __str__(self) -> str:
        return f"{self.dev}:{Duration(self.delay_ns)}:{self.loss * 100:g}%"


def parse_loss(text: str) -> float:
    """Read a loss probability as ``1%`` or ``0.01`` (antler.node.metric.Probability's rule).

    Raises DelayError for a bare number of 1 or more (``1`` reads two ways),
    a negative value or one above 100%.
    """
    try:
        return Probability.parse(text).p
    except UnitError as e:
        raise DelayError(f"loss: {e}") from None


@dataclass
class LinkStats:
    """Counts what one link did: packets held, lost, overflowed and how late releases were."""

    received: int = 0
    lost: int = 0
    overflowed: int = 0
    released: int = 0
    late_sum_ns: int = 0
    late_max_ns: int = 0
    late_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_EDGES_US) + 1))

    def text(self, spec: LinkSpec) -> str:
        """Return the stats as one log line."""
        mean_us = self.late_sum_ns / self.released / 1000 if self.released else 0.0
        hist = " ".join(f"<{e}us:{n}" for e, n in zip((*LATENESS_EDGES_US, "inf"), self.late_hist, strict=True) if n)
        return (
            f"link {spec}: received {self.received} lost {self.lost} overflowed {self.overflowed} "
            f"released {self.released}; release lateness mean {mean_us:.1f}us max {self.late_max_ns / 1000:.0f}us "
            f"[{hist}]"
        )


class Link:
    """An open delay link: the TUN fd, its FIFO of held packets and its stats."""

    def __init__(
        self,
        spec: LinkSpec,
        rng: random.Random,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        bottleneck: Bottleneck | None = None,
        fd: int | None = None,
    ) -> None:
        """Attach to spec's TUN device (or use fd, e.g. one end of a socket pair in tests)."""
        self.spec = spec
        self.fd = open_tun(spec.dev) if fd is None else fd
        self.queue: deque[tuple[int, bytes]] = deque()
        self.stats = LinkStats()
        self.rng = rng
        self.queue_limit = queue_limit
        self.bottleneck = bottleneck

    def close(self) -> None:
        """Close the TUN fd; packets still held are dropped with it."""
        os.close(self.fd)


def open_tun(dev: str) -> int:
    """Attach to the TUN device dev (creating a transient one if it does not exist), non-blocking.

    Raises DelayError for an invalid device name or when the kernel refuses the device.
    """
    if not dev or len(dev) > 15:
        raise DelayError(f"invalid device name {dev!r}")
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), IFF_TUN | IFF_NO_PI))
    except OSError as e:
        os.close(fd)
        raise DelayError(f"attaching to TUN device {dev!r}: {e.strerror}") from None
    return fd


def serve(links: list[Link], spin_ns: int, run_for_ns: int | None = None, control: Controlled | None = None) -> None:
    """Move packets through the links until Stop is raised (or run_for_ns has passed); control may change them."""
    # Locals: this is the hot loop of the process.
    now_ns = time.monotonic_ns
    sel = select.select
    read, write = os.read, os.write
    fds = [link.fd for link in links] + ([control.fd] if control is not None else [])
    by_fd = {link.fd: link for link in links}
    shaped = [link for link in links if link.bottleneck is not None]
    edges_ns = [e * 1000 for e in LATENESS_EDGES_US]
    end = None if run_for_ns is None else now_ns() + run_for_ns
    while True:
        now = now_ns()
        if end is not None and now >= end:
            return
        next_deadline = -1
        for link in links:
            queue = link.queue
            if queue and queue[0][0] <= now:
                st = link.stats
                fd = link.fd
                while queue and queue[0][0] <= now:
                    deadline, packet = queue.popleft()
                    try:
                        write(fd, packet)
                    except OSError:
                        # The kernel refused the packet (e.g. the device went down): it is lost, as on a wire.
                        st.lost += 1
                        continue
                    late = now_ns() - deadline
                    st.released += 1
                    st.late_sum_ns += late
                    if late > st.late_max_ns:
                        st.late_max_ns = late
                    i = 0
                    while i < len(edges_ns) and late >= edges_ns[i]:
                        i += 1
                    st.late_hist[i] += 1
                now = now_ns()
            if queue and (next_deadline < 0 or queue[0][0] < next_deadline):
                next_deadline = queue[0][0]
        for link in shaped:
            bn = link.bottleneck
            assert bn is not None
            sent = bn.send(now)
            while sent is not None:
                _hold(link, sent[0] + link.spec.delay_ns, sent[1])
                sent = bn.send(now)
            start = bn.next_start_ns()
            if start >= 0 and (next_deadline < 0 or start < next_deadline):
                next_deadline = start
            if link.queue and (next_deadline < 0 or link.queue[0][0] < next_deadline):
                next_deadline = link.queue[0][0]
        if next_deadline < 0:
            timeout: float = 0.5
        else:
            wait = next_deadline - now - spin_ns
            timeout = wait / 1e9 if wait > 0 else 0.0
        if end is not None:
            timeout = max(0.0, min(timeout, (end - now) / 1e9))
        ready, _, _ = sel(fds, (), (), timeout)
        for fd in ready:
            if fd not in by_fd:
                assert control is not None
                control.handle()
                continue
            link = by_fd[fd]
            queue = link.queue
            st = link.stats
            delay, loss, rng = link.spec.delay_ns, link.spec.loss, link.rng
            bn = link.bottleneck
            while True:
                try:
                    packet = read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError as e:
                    raise DelayError(f"reading {link.spec.dev}: {e.strerror} (was the device deleted?)") from None
                t = now_ns()
                st.received += 1
                if bn is not None:
                    # Loss and delay come after the bottleneck: at the transmission's end (_hold).
                    bn.arrive(packet, t)
                elif loss and rng.random() < loss:
                    st.lost += 1
                elif len(queue) >= link.queue_limit:
                    st.overflowed += 1
                else:
                    queue.append((t + delay, packet))


def _hold(link: Link, deadline_ns: int, packet: bytes) -> None:
    """Put a packet the bottleneck has sent into the link's delay stage, unless the random loss takes it."""
    st = link.stats
    if link.spec.loss and link.rng.random() < link.spec.loss:
        st.lost += 1
    elif len(link.queue) >= link.queue_limit:
        st.overflowed += 1
    else:
        link.queue.append((deadline_ns, packet))
