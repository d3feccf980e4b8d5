"""The userspace delay link: holds packets for a fixed delay, for kernels without netem.

Each *link* is a persistent TUN device (made beforehand with ``ip tuntap add
DEV mode tun``) that the rig routes one direction of traffic into. This
process reads every packet the kernel sends into the device, stamps it with
the absolute deadline ``arrival + delay``, drops it with probability ``loss``,
and writes it back into the same device when the deadline comes. A packet
written to a TUN device enters the kernel as if received on it, so the kernel
routes it on, this time by the main table, towards its destination::

    python -m antler.rig.delay run --link d-fwd:10ms:1% --link d-ret:10ms
    python -m antler.rig.delay wait d-fwd d-ret     # until both are attached
    python -m antler.rig.delay stop d-fwd d-ret     # interrupt the link holding them, and wait

Why one thread and not a reader plus a release thread: under CPython's GIL a
thread that spins for a deadline holds the interpreter for up to the switch
interval (5 ms) while the reader waits for it, which would add milliseconds
to packets that arrive meanwhile. One thread that multiplexes the TUN fds with
``select`` and the release deadlines has no such hand-off. It sleeps in
``select`` until ``spin`` before the earliest deadline (with the timer slack
set to 1 µs so the kernel wakes it on time), then spins, polling the fds
without blocking, and releases at the deadline. It runs at SCHED_FIFO
priority by default, so other processes on a busy host do not delay it. The delay is constant per
link, so deadlines are in arrival order and each link's queue is a FIFO
deque of ``(deadline_ns, packet)``; releases are in order by construction.

The process ends on SIGINT or SIGTERM and prints per-link counts and the
distribution of release lateness (how long after its deadline each packet was
written), so a test's log shows whether the emulation kept up.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from types import FrameType

from antler.node.metric import Duration, Probability, UnitError
from antler.node.runners.packet.timer import set_timer_slack

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
IFF_RUNNING = 0x40
READ_SIZE = 65536
DEFAULT_SPIN = "50us"
"""DEFAULT_SPIN is how long before a deadline the link stops sleeping and spins.

At real-time priority the kernel wakes the link within tens of µs, so 50 µs
of spin is as accurate as 300 µs for half the CPU (bench/README.md).
"""
DEFAULT_REALTIME = 10
"""DEFAULT_REALTIME is the SCHED_FIFO priority the link runs at (0: normal).

On a busy host a normal-priority link waits behind other processes: the
bench measured a 99th-percentile RTT error of 4 to 45 ms at normal priority
and under 1 ms at SCHED_FIFO 10, at 50 Mbit/s."""
DEFAULT_QUEUE_LIMIT = 100_000
"""DEFAULT_QUEUE_LIMIT caps the packets held per link (about 0.5 s at 3 Gbit/s of 1500-byte packets)."""
LATENESS_EDGES_US = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
"""LATENESS_EDGES_US are the upper edges of the release-lateness histogram buckets."""


class DelayError(Exception):
    """DelayError is a link that could not be parsed or opened."""


@dataclass(frozen=True)
class LinkSpec:
    """LinkSpec is one delay link: its TUN device, one-way delay and random loss probability."""

    dev: str
    delay_ns: int
    loss: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LinkSpec:
        """Parse reads ``DEV:DELAY[:LOSS]``, e.g. ``d-fwd:10ms:1%`` or ``d-ret:10ms:0.01``, raising DelayError."""
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
    """Parse_loss reads a loss probability as ``1%`` or ``0.01`` (antler.node.metric.Probability's rule).

    Raises DelayError for a bare number of 1 or more (``1`` reads two ways),
    a negative value or one above 100%.
    """
    try:
        return Probability.parse(text).p
    except UnitError as e:
        raise DelayError(f"loss: {e}") from None


@dataclass
class LinkStats:
    """LinkStats counts what one link did: packets held, lost, overflowed and how late releases were."""

    received: int = 0
    lost: int = 0
    overflowed: int = 0
    released: int = 0
    late_sum_ns: int = 0
    late_max_ns: int = 0
    late_hist: list[int] = field(default_factory=lambda: [0] * (len(LATENESS_EDGES_US) + 1))

    def text(self, spec: LinkSpec) -> str:
        """Text is the stats as one log line."""
        mean_us = self.late_sum_ns / self.released / 1000 if self.released else 0.0
        hist = " ".join(f"<{e}us:{n}" for e, n in zip((*LATENESS_EDGES_US, "inf"), self.late_hist, strict=True) if n)
        return (
            f"link {spec}: received {self.received} lost {self.lost} overflowed {self.overflowed} "
            f"released {self.released}; release lateness mean {mean_us:.1f}us max {self.late_max_ns / 1000:.0f}us "
            f"[{hist}]"
        )


class Link:
    """Link is an open delay link: the TUN fd, its FIFO of held packets and its stats."""

    def __init__(self, spec: LinkSpec, rng: random.Random, queue_limit: int = DEFAULT_QUEUE_LIMIT) -> None:
        self.spec = spec
        self.fd = open_tun(spec.dev)
        self.queue: deque[tuple[int, bytes]] = deque()
        self.stats = LinkStats()
        self.rng = rng
        self.queue_limit = queue_limit

    def close(self) -> None:
        """Close closes the TUN fd; packets still held are dropped with it."""
        os.close(self.fd)


def open_tun(dev: str) -> int:
    """Open_tun attaches to the TUN device dev (creating a transient one if it does not exist), non-blocking.

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


class Stop(Exception):
    """Stop is raised by the signal handler to end the link's loop."""


def serve(links: list[Link], spin_ns: int, run_for_ns: int | None = None) -> None:
    """Serve moves packets through the links until Stop is raised (or run_for_ns has passed)."""
    # Locals: this is the hot loop of the process.
    now_ns = time.monotonic_ns
    sel = select.select
    read, write = os.read, os.write
    fds = [link.fd for link in links]
    by_fd = {link.fd: link for link in links}
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
        if next_deadline < 0:
            timeout: float = 0.5
        else:
            wait = next_deadline - now - spin_ns
            timeout = wait / 1e9 if wait > 0 else 0.0
        if end is not None:
            timeout = max(0.0, min(timeout, (end - now) / 1e9))
        ready, _, _ = sel(fds, (), (), timeout)
        for fd in ready:
            link = by_fd[fd]
            queue = link.queue
            st = link.stats
            delay, loss, rng = link.spec.delay_ns, link.spec.loss, link.rng
            while True:
                try:
                    packet = read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError as e:
                    raise DelayError(f"reading {link.spec.dev}: {e.strerror} (was the device deleted?)") from None
                t = now_ns()
                st.received += 1
                if loss and rng.random() < loss:
                    st.lost += 1
                elif len(queue) >= link.queue_limit:
                    st.overflowed += 1
                else:
                    queue.append((t + delay, packet))


def is_running(dev: str) -> bool:
    """Is_running reports whether the device exists and has carrier (a TUN device: a process attached)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH", dev.encode(), 0))
        except OSError:
            return False
    flags: int = struct.unpack("16sH", res[:18])[1]
    return bool(flags & IFF_RUNNING)


def wait_running(devs: list[str], timeout_s: float) -> list[str]:
    """Wait_running waits until every device is running; it returns those that are not when time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [d for d in devs if not is_running(d)]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.01)


def holders(devs: list[str]) -> list[int]:
    """Holders lists the processes in this network namespace with a TUN fd attached to one of devs.

    The kernel shows a TUN fd's device in its fdinfo (``iff:\tNAME``). Only
    this namespace counts: other namespaces (other rigs on the same host) have
    devices of the same names.
    """
    want = {f"iff:\t{d}" for d in devs}
    mine = os.stat("/proc/self/ns/net").st_ino
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != mine:
                continue
            fds = os.listdir(f"/proc/{entry}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{entry}/fd/{fd}") != "/dev/net/tun":
                    continue
                with open(f"/proc/{entry}/fdinfo/{fd}") as f:
                    if want & set(f.read().splitlines()):
                        found.append(int(entry))
                        break
            except OSError:
                continue
    return found


def stop_holders(devs: list[str], timeout_s: float) -> list[int]:
    """Stop_holders interrupts the delay links holding devs and waits for them; it returns those still running."""
    pids = holders(devs)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout_s
    while True:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and not _zombie(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.01)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise Stop()


def main(argv: list[str] | None = None) -> int:
    """Main is the command line: ``run`` the links, or ``wait`` until devices are attached."""
    p = argparse.ArgumentParser(prog="python -m antler.rig.delay", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="hold packets on TUN links until SIGINT/SIGTERM")
    r.add_argument("--link", action="append", required=True, help="DEV:DELAY[:LOSS], e.g. d-fwd:10ms:1%%")
    r.add_argument("--spin", default=DEFAULT_SPIN, help=f"spin this long before each deadline (default {DEFAULT_SPIN})")
    r.add_argument("--seed", type=int, default=None, help="seed of the random loss, for repeatable runs")
    r.add_argument("--queue-limit", type=int, default=DEFAULT_QUEUE_LIMIT, help="packets held per link at most")
    r.add_argument("--duration", default=None, help="stop after this long (default: until a signal)")
    r.add_argument(
        "--realtime",
        type=int,
        default=DEFAULT_REALTIME,
        metavar="PRIO",
        help=f"run at SCHED_FIFO priority PRIO, 0 for normal (default {DEFAULT_REALTIME})",
    )
    w = sub.add_parser("wait", help="wait until TUN devices have a process attached")
    w.add_argument("dev", nargs="+")
    w.add_argument("--timeout", default="10s")
    s = sub.add_parser("stop", help="interrupt the links holding TUN devices (this namespace) and wait until they end")
    s.add_argument("dev", nargs="+")
    s.add_argument("--timeout", default="10s")
    args = p.parse_args(argv)
    try:
        if args.cmd == "stop":
            alive = stop_holders(args.dev, Duration.parse(args.timeout).seconds)
            if alive:
                print(f"delay links {alive} still hold {', '.join(args.dev)} after {args.timeout}", file=sys.stderr)
                return 1
            return 0
        if args.cmd == "wait":
            missing = wait_running(args.dev, Duration.parse(args.timeout).seconds)
            if missing:
                print(f"delay link devices not attached after {args.timeout}: {', '.join(missing)}", file=sys.stderr)
                return 1
            return 0
        specs = [LinkSpec.parse(t) for t in args.link]
        spin_ns = Duration.parse(args.spin).ns
        run_for = None if args.duration is None else Duration.parse(args.duration).ns
    except (DelayError, ValueError) as e:
        print(f"delay: {e}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    links: list[Link] = []
    try:
        for spec in specs:
            links.append(Link(spec, rng, args.queue_limit))
    except DelayError as e:
        for link in links:
            link.close()
        print(f"delay: {e}", file=sys.stderr)
        return 1
    set_timer_slack(1)
    # The held (deadline, packet) tuples are GC-tracked and made by the
    # thousand per second; they never form cycles, so the cyclic collector
    # would only add pauses of its own to the release times.
    gc.freeze()
    gc.disable()
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.realtime))
        except OSError as e:
            print(f"delay: realtime priority {args.realtime} refused ({e.strerror}); running at normal priority")
            args.realtime = 0
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    priority = f"SCHED_FIFO {args.realtime}" if args.realtime else "normal priority"
    print(f"delay: holding {', '.join(str(s) for s in specs)} (spin {Duration(spin_ns)}, {priority})", flush=True)
    code = 0
    try:
        serve(links, spin_ns, run_for)
    except Stop:
        pass
    except DelayError as e:
        print(f"delay: {e}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for link in links:
            link.close()
        for link in links:
            print(link.stats.text(link.spec), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
