"""Trace replay on the userspace bottleneck: Mahimahi's link traces, as ``mm-link`` reads them.

A trace file has one integer per line, a time in milliseconds from the
link's start; each line is one *delivery opportunity* for up to 1500 bytes
(of IP packet: Mahimahi counts what the TUN device carries). Lines are in
non-decreasing order, a time may repeat (two opportunities in that
millisecond), and the trace repeats when it ends, with the last time as its
period. One line ``1`` is 12 Mbit/s of 1500-byte packets, forever; this is
Mahimahi's format (``mm-link UPLINK DOWNLINK``, Netravali et al., "Mahimahi:
Accurate Record-and-Replay for HTTP", USENIX ATC 2015), so its cellular
traces work unchanged::

    antler-ray run +experiment=trace rig.trace=/path/to/Verizon-LTE-short.up

:class:`TraceBottleneck` empties its queue discipline at the opportunities
instead of a rate. As in Mahimahi's link queue, an opportunity's bytes go to
the packet at the head, a packet longer than what is left takes the next
opportunity's too, and the unused bytes of an opportunity with nothing
queued are lost. A name without a ``/`` that is not a file here is one of the
traces shipped in ``antler/traces`` (:func:`resolve_trace`); they are made
by ``python -m antler.rig.trace make`` (:func:`main`), so they can be made
again, or longer.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import os
import random
import sys
from collections.abc import Callable
from importlib import resources

from antler.rig.aqm.base import DropSink, Packet, QueueDiscipline
from antler.rig.bottleneck import CATCH_UP_NS, Bottleneck, Record

OPPORTUNITY_BYTES = 1500
"""OPPORTUNITY_BYTES is what one line of a trace may deliver (Mahimahi's MTU-sized opportunity)."""
SHIPPED = "traces"
"""SHIPPED is the package folder of the traces made here (``antler/traces``)."""


def resolve_trace(text: str) -> str:
    """Return the absolute path of a trace, a file or a shipped trace's name, once its every line is checked.

    Raises ValueError naming the file (and line) when it is missing or
    malformed, or the shipped traces when a bare name matches none.
    """
    if os.path.isfile(text):
        path = os.path.abspath(text)
    else:
        folder = resources.files("antler") / SHIPPED
        names = [text, f"{text}.trace"] if "/" not in text else []
        found = [str(folder / n) for n in names if (folder / n).is_file()]
        if not found:
            shipped = sorted(n.name.removesuffix(".trace") for n in folder.iterdir() if n.name.endswith(".trace"))
            raise ValueError(f"{text!r}: no such trace file (shipped traces: {', '.join(shipped)})")
        path = found[0]
    read_trace(path)
    return path


def read_trace(path: str) -> tuple[int, ...]:
    """Return a trace's opportunity times in ms, raising ValueError naming the file and line of a bad one."""
    st = os.stat(path)
    return _read(path, st.st_mtime_ns, st.st_size)


@functools.cache
def _read(path: str, mtime_ns: int, size: int) -> tuple[int, ...]:
    times: list[int] = []
    try:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                text = line.strip()
                if not text:
                    continue
                if not text.isdigit():
                    raise ValueError(f"{path} line {n}: {text[:40]!r} is not a whole number of milliseconds")
                ms = int(text)
                if times and ms < times[-1]:
                    raise ValueError(
                        f"{path} line {n}: {ms} is before the line above ({times[-1]}): times must not decrease"
                    )
                times.append(ms)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as a trace ({e})") from None
    if not times or times[-1] == 0:
        raise ValueError(f"{path}: a trace needs a line after 0 ms (its last time is its period)")
    return tuple(times)


class TraceBottleneck(Bottleneck):
    """A queue discipline emptied at a trace's delivery opportunities, repeated with its last time as period."""

    def __init__(
        self,
        make_queue: Callable[[DropSink], QueueDiscipline],
        times_ms: tuple[int, ...],
        start_ns: int,
        record: Record | None = None,
    ) -> None:
        """Replay times_ms (a trace, :func:`read_trace`) from start_ns on the link's clock."""
        super().__init__(make_queue, 1, record)
        self.times_ns = [t * 1_000_000 for t in times_ms]
        self.period_ns = self.times_ns[-1]
        self.start_ns = start_ns
        self.k = 0  # the next opportunity's index, counted over the repeats
        self.budget = 0  # bytes left of opportunity k once it has begun
        self.transit: Packet | None = None
        self.transit_left = 0

    def opportunity_ns(self) -> int:
        """Return the time of the next delivery opportunity (ns, link clock)."""
        cycle, i = divmod(self.k, len(self.times_ns))
        return self.start_ns + cycle * self.period_ns + self.times_ns[i]

    def _skip_to(self, t_ns: int) -> None:
        """Move to the first opportunity at or after t_ns: those before it went unused."""
        since = max(0, t_ns - self.start_ns)
        cycle, into = divmod(since, self.period_ns)
        k = cycle * len(self.times_ns) + bisect.bisect_left(self.times_ns, into)
        if k > self.k:
            self.k, self.budget = k, 0

    def arrive(self, data: bytes, now_ns: int) -> bool:
        """Enqueue a packet; an idle line waits for the first opportunity from now."""
        if self.transit is None and not self.queue.backlog_packets:
            self._skip_to(now_ns)
        return super().arrive(data, now_ns)

    def next_start_ns(self) -> int:
        """Return the next opportunity while a packet waits, else -1."""
        return self.opportunity_ns() if self.transit is not None or self.queue.backlog_packets else -1

    def send(self, now_ns: int) -> tuple[int, bytes] | None:
        """Deliver the packet whose last byte an opportunity up to now_ns carries: (that opportunity's time, bytes)."""
        self._skip_to(now_ns - CATCH_UP_NS)
        while True:
            t = self.opportunity_ns()
            if t > now_ns:
                return None
            if self.transit is None:
                pkt = self.queue.dequeue(now_ns)
                if pkt is None:
                    return None
                self.transit, self.transit_left = pkt, pkt.length
            if self.budget == 0:
                self.budget = OPPORTUNITY_BYTES
            used = min(self.budget, self.transit_left)
            self.budget -= used
            self.transit_left -= used
            if self.budget == 0:
                self.k += 1
            if self.transit_left == 0:
                pkt, self.transit = self.transit, None
                return t, self.sent_bytes(pkt, now_ns)

    def set_rate(self, rate_bps: int, now_ns: int) -> None:
        """Refuse a rate: a trace paces this line (the schedule's check refuses it first)."""
        raise ValueError("a trace paces this bottleneck: it takes no rate")


# --- the shipped traces


def constant(rate_mbps: float, seconds: float) -> list[int]:
    """Return a trace at a constant rate (Mbit/s of 1500-byte opportunities) lasting seconds."""
    return rates([(seconds, rate_mbps)])


def square(high_mbps: float, low_mbps: float, phase_s: float) -> list[int]:
    """Return one period of a square wave: phase_s at high_mbps, then phase_s at low_mbps."""
    return rates([(phase_s, high_mbps), (phase_s, low_mbps)])


def varying(seed: int, seconds: float, step_s: float = 0.1, low_mbps: float = 2, high_mbps: float = 24) -> list[int]:
    """Return a seeded random walk of the rate: every step_s it moves by up to ±20 %, kept in [low, high] Mbit/s."""
    rng = random.Random(seed)
    rate = (low_mbps + high_mbps) / 2
    phases = []
    for _ in range(round(seconds / step_s)):
        rate = min(high_mbps, max(low_mbps, rate * rng.uniform(0.8, 1.2)))
        phases.append((step_s, rate))
    return rates(phases)


def rates(phases: list[tuple[float, float]]) -> list[int]:
    """Return the opportunities (ms) of phases of (seconds, Mbit/s), each rate's fraction carried over.

    A rate of r Mbit/s is r * 1e6 / (8 * 1500) opportunities a second; the
    ms of each is the whole millisecond it falls in (from 1: a trace's
    times count from the link's start, and 0 cannot end a period). The last
    line is the period's end, so a phase's opportunities keep their place
    when the trace repeats.
    """
    times: list[int] = []
    t_ms, owed = 0.0, 0.0
    for seconds, mbps in phases:
        per_ms = mbps * 1e6 / (8 * OPPORTUNITY_BYTES) / 1000
        for _ in range(round(seconds * 1000)):
            t_ms += 1
            owed += per_ms
            while owed >= 1 - 1e-9:
                times.append(int(t_ms))
                owed -= 1
    end = int(t_ms)
    if not times or times[-1] != end:
        times.append(end)  # the period's end: one more opportunity there, at most 1500 bytes per period
    return times


def main(argv: list[str] | None = None) -> int:
    """Write a trace to stdout: ``make constant MBPS SECONDS``, ``make square HIGH LOW PHASE``, ``make varying SEED SECONDS``."""
    p = argparse.ArgumentParser(prog="python -m antler.rig.trace", description="Make Mahimahi link traces.")
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="write a trace to stdout")
    m.add_argument("kind", choices=("constant", "square", "varying"))
    m.add_argument("numbers", nargs="+", type=float)
    c = sub.add_parser("check", help="read a trace, say how many opportunities and its mean rate")
    c.add_argument("file")
    args = p.parse_args(argv)
    if args.cmd == "check":
        try:
            times = read_trace(resolve_trace(args.file))
        except ValueError as e:
            print(f"trace: {e}", file=sys.stderr)
            return 2
        mbps = len(times) * OPPORTUNITY_BYTES * 8 / (times[-1] / 1000) / 1e6
        print(f"{args.file}: {len(times)} opportunities over {times[-1]} ms, {mbps:.3f} Mbit/s on average")
        return 0
    makers: dict[str, Callable[..., list[int]]] = {"constant": constant, "square": square, "varying": varying}
    n = args.numbers
    try:
        made = makers[args.kind](*(int(n[0]), *n[1:]) if args.kind == "varying" else n)
    except TypeError:
        print(f"trace: make {args.kind} takes {main.__doc__}", file=sys.stderr)
        return 2
    sys.stdout.write("".join(f"{t}\n" for t in made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
