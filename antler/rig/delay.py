"""The userspace delay link: holds packets for a fixed delay, for kernels without netem.

This is the link's process and its command line. Each *link* is a persistent
TUN device (made beforehand with ``ip tuntap add DEV mode tun``) that the rig
routes one direction of traffic into; the process holds each packet the
kernel sends into it for the link's delay (the engine:
:mod:`antler.rig.delay_link`) and writes it back. A packet written to a TUN
device enters the kernel as if received on it, so the kernel routes it on,
this time by the main table, towards its destination::

    python -m antler.rig.delay run --link d-fwd:10ms:1% --link d-ret:10ms --control antler-delay-control
    python -m antler.rig.delay wait d-fwd d-ret     # until both are attached
    python -m antler.rig.delay stop d-fwd d-ret     # interrupt the link holding them, and wait

With ``--bottleneck DEV --rate RATE --qdisc QDISC`` the link on DEV is also
the path's bottleneck: it sends at RATE (IP length plus 14 bytes of Ethernet
header per packet, as htb counts on a veth) from the queue discipline QDISC,
spelled as tc spells it (:mod:`antler.rig.bottleneck`), then delays::

    python -m antler.rig.delay run --link d-fwd:10ms --link d-ret:10ms \
        --bottleneck d-fwd --rate 50mbit --qdisc "pfifo limit 1000"

Each direction can be a bottleneck: ``--bottleneck``, ``--rate`` and
``--qdisc`` repeat, the n-th of each together; a rate ``trace:FILE`` paces
that link by a Mahimahi trace instead (:mod:`antler.rig.trace`). With
``--control NAME`` a schedule changes delays, loss and rates while it runs
(:mod:`antler.rig.link_control`).

The process runs at SCHED_FIFO priority by default, so other processes on a
busy host do not delay it. It ends on SIGINT or SIGTERM and prints per-link
counts and the distribution of release lateness (how long after its deadline
each packet was written), so a test's log shows whether the emulation kept
up.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gc
import os
import random
import resource
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from antler.node.metric import Bitrate, Duration
from antler.node.runners.packet.timer import set_timer_slack
from antler.rig.bottleneck import Bottleneck, queue_maker
from antler.rig.delay_link import DEFAULT_QUEUE_LIMIT, DEFAULT_SPIN, DelayError, Link, LinkSpec, serve
from antler.rig.link_control import Control
from antler.rig.queue_records import DEFAULT_LIMIT as DEFAULT_RECORDS, QueueRecords
from antler.rig.trace import TraceBottleneck, read_trace

SIOCGIFFLAGS = 0x8913
IFF_RUNNING = 0x40
DEFAULT_REALTIME = 10
"""DEFAULT_REALTIME is the SCHED_FIFO priority the link runs at (0: normal).

On a busy host a normal-priority link waits behind other processes: the
bench measured a 99th-percentile RTT error of 4 to 45 ms at normal priority
and under 1 ms at SCHED_FIFO 10, at 50 Mbit/s."""


class Stop(Exception):
    """Raised by the signal handler to end the link's loop."""


def is_running(dev: str) -> bool:
    """Report whether the device exists and has carrier (a TUN device: a process attached)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sH", dev.encode(), 0))
        except OSError:
            return False
    flags: int = struct.unpack("16sH", res[:18])[1]
    return bool(flags & IFF_RUNNING)


def wait_running(devs: list[str], timeout_s: float) -> list[str]:
    """Wait until every device is running; it returns those that are not when time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = [d for d in devs if not is_running(d)]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.01)


def holders(devs: list[str]) -> list[int]:
    """List the processes in this network namespace with a TUN fd attached to one of devs.

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
    """Interrupt the delay links holding devs and wait for them; it returns those still running."""
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
    """Return the command line: ``run`` the links, or ``wait`` until devices are attached."""
    p = argparse.ArgumentParser(prog="python -m antler.rig.delay", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="hold packets on TUN links until SIGINT/SIGTERM")
    r.add_argument("--link", action="append", required=True, help="DEV:DELAY[:LOSS], e.g. d-fwd:10ms:1%%")
    r.add_argument("--spin", default=DEFAULT_SPIN, help=f"spin this long before each deadline (default {DEFAULT_SPIN})")
    r.add_argument("--seed", type=int, default=None, help="seed of the random loss, for repeatable runs")
    r.add_argument("--queue-limit", type=int, default=DEFAULT_QUEUE_LIMIT, help="packets held per link at most")
    r.add_argument("--duration", default=None, help="stop after this long (default: until a signal)")
    r.add_argument("--bottleneck", action="append", default=[], metavar="DEV", help="a link that is also a bottleneck")
    r.add_argument("--rate", action="append", default=[], help="its rate, e.g. 50mbit, or trace:FILE")
    r.add_argument("--qdisc", action="append", default=[], help="its queue discipline as tc spells it (pfifo)")
    r.add_argument("--control", default=None, metavar="NAME", help="take changes on this abstract socket")
    r.add_argument("--config-dir", default=None, help="the folder of a py:MODULE:CLASS qdisc's MODULE.py")
    r.add_argument("--records", default=None, metavar="FILE", help="write the bottleneck's per-packet records here")
    r.add_argument("--records-limit", type=int, default=DEFAULT_RECORDS, help="records kept at most")
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
        shaped = _bottleneck_args(args, specs)
    except (DelayError, ValueError) as e:
        print(f"delay: {e}", file=sys.stderr)
        return 2
    rng = random.Random(args.seed)
    first = shaped[0][0] if shaped else None
    records = QueueRecords(limit=args.records_limit) if args.records and first is not None else None
    links: list[Link] = []
    control = None
    try:
        for spec in specs:
            bn: Bottleneck | None = None
            for dev, pace, maker in shaped:
                if spec.dev == dev:
                    record = None if records is None or dev != first else records.record
                    if isinstance(pace, tuple):
                        bn = TraceBottleneck(maker, pace, time.monotonic_ns(), record)
                    else:
                        bn = Bottleneck(maker, pace, record)
            links.append(Link(spec, rng, args.queue_limit, bn))
        if args.control:
            control = Control(args.control, links)
    except (DelayError, OSError) as e:
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
    shaping = "".join(
        f"; bottleneck {d} {r} {q} (userspace)" for d, r, q in zip(args.bottleneck, args.rate, args.qdisc, strict=False)
    )
    print(
        f"delay: holding {', '.join(str(s) for s in specs)} (spin {Duration(spin_ns)}, {priority}){shaping}", flush=True
    )
    code = 0
    started = time.monotonic()
    try:
        serve(links, spin_ns, run_for, control)
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
        used = resource.getrusage(resource.RUSAGE_SELF)
        print(
            f"delay: cpu {used.ru_utime:.2f}s user {used.ru_stime:.2f}s system over {time.monotonic() - started:.1f}s"
        )
        for link in links:
            print(link.stats.text(link.spec), flush=True)
            if link.bottleneck is not None:
                print(f"link {link.spec.dev} {link.bottleneck.text()}", flush=True)
        if records is not None:
            try:
                records.write(args.records)
            except OSError as e:
                print(f"delay: writing queue records to {args.records}: {e.strerror}", file=sys.stderr)
                return 1
            left_out = f", {records.left_out} left out past the limit" if records.left_out else ""
            print(f"delay: {records.rows} queue records in {args.records}{left_out}", flush=True)
    return code


def _bottleneck_args(args: argparse.Namespace, specs: list[LinkSpec]) -> list[tuple[str, Any, Any]]:
    """Return each bottleneck's device, pace (bit/s, or a trace's times) and queue maker; raises ValueError.

    The n-th ``--bottleneck``, ``--rate`` and ``--qdisc`` go together; one
    bottleneck may leave ``--qdisc`` out (pfifo).
    """
    devs, rates, qdiscs = args.bottleneck, args.rate, args.qdisc or ["pfifo"] * len(args.bottleneck)
    if rates and not devs:
        raise ValueError("--rate needs --bottleneck DEV (the link to shape)")
    if len(rates) != len(devs) or len(qdiscs) != len(devs):
        raise ValueError(
            f"{len(devs)} --bottleneck need as many --rate (got {len(rates)}) and --qdisc (got {len(qdiscs)})"
        )
    out: list[tuple[str, Any, Any]] = []
    for dev, rate, qdisc in zip(devs, rates, qdiscs, strict=True):
        if dev not in [s.dev for s in specs]:
            raise ValueError(f"--bottleneck {dev!r} is not one of the --link devices")
        if dev in [o[0] for o in out]:
            raise ValueError(f"--bottleneck {dev!r} is given twice")
        pace: Any
        if rate.startswith("trace:"):
            pace = read_trace(rate.removeprefix("trace:"))
        else:
            pace = Bitrate.parse(rate).bps
            if pace <= 0:
                raise ValueError(f"--rate {rate!r} must be above 0")
        out.append((dev, pace, queue_maker(qdisc, Path(args.config_dir) if args.config_dir else None)))
    return out


if __name__ == "__main__":
    sys.exit(main())
