"""The process at mid that applies a rig's schedule, and the record of what it did (``rig_events.parquet``).

The rig starts it in the background at the beginning of its set-up, given
the steps' actions (:func:`antler.rig.schedule.plan`); it then waits for the
set-up's last step to create ``EVENTS.go`` and counts every step's ``at``
from when it sees that file (within a millisecond of the moment the test's
own runs begin)::

    python -m antler.rig.schedule_run run --events FILE --plan JSON --control NAME
    touch FILE.go                               # the set-up's last step: t0
    python -m antler.rig.schedule_run stop FILE       # tear-down: end it (by the pid it wrote)
    python -m antler.rig.schedule_run parquet FILE    # tear-down: its events as rig_events.parquet on stdout

It sleeps until a millisecond before each step and spins to its time (at
SCHED_FIFO priority where it may), then applies the changes: tc lines go to
one ``tc -batch`` it keeps open, each followed by a ``show`` whose answer
confirms it (0.1 ms, where a new tc process costs 4 ms); the delay link's
changes go as a datagram to its control socket, which answers when it has
applied them. Each change is one line of ``FILE``, written at once: when it
was asked for (t0 + at) and when it took effect (the wall clock, UTC ns),
so a test cut short keeps the changes it made.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

EVENT_COLUMNS = ("at_s", "label", "what", "direction", "value", "via", "asked", "took_effect", "lag_ms", "error")
"""EVENT_COLUMNS are rig_events.parquet's columns: asked and took_effect are UTC timestamps, lag_ms their gap."""
SPIN_NS = 1_000_000
"""SPIN_NS is how long before a step the process stops sleeping and spins (sleep wakes up to 1 ms late)."""
REALTIME = 10
"""REALTIME is the SCHED_FIFO priority it runs at where it may, as the delay link does."""


def run(events: str, actions: list[dict[str, Any]], control: str, go_timeout_s: float = 600) -> int:
    """Apply actions at their times from EVENTS.go's creation, one line of EVENTS per change; return 0 or 1."""
    with open(f"{events}.pid", "w") as f:
        f.write(str(os.getpid()))
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME))
    t0_ns = _wait_go(f"{events}.go", go_timeout_s)
    if t0_ns is None:
        print(f"schedule: {events}.go never came; no step applied", file=sys.stderr)
        return 1
    tc = None
    if any("tc" in c for a in actions for c in a["changes"]):
        tc = subprocess.Popen(
            ["tc", "-force", "-batch", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("")  # an abstract name of the kernel's choosing, for the link's answers
    sock.settimeout(1.0)
    code = 0
    with open(events, "a") as out:
        for action in actions:
            asked = t0_ns + action["at_ns"]
            _sleep_until(asked)
            for change in action["changes"]:
                error = ""
                try:
                    took = _apply(change, tc, sock, control)
                except (OSError, ValueError) as e:
                    took, error, code = time.time_ns(), str(e), 1
                row = {
                    "at_s": action["at_ns"] / 1e9,
                    "label": action["label"],
                    **{k: change[k] for k in ("what", "direction", "value", "via")},
                    "asked": asked,
                    "took_effect": took,
                    "lag_ms": (took - asked) / 1e6,
                    "error": error,
                }
                out.write(json.dumps(row) + "\n")
                out.flush()
                state = f"failed: {error}" if error else f"took effect {(took - asked) / 1e6:.2f} ms after"
                print(
                    f"schedule: at {action['at_ns'] / 1e9:g}s {change['direction']} {action['label']} via {change['via']} {state}",
                    flush=True,
                )
    if tc is not None:
        tc.stdin.close()  # type: ignore[union-attr]
        tc.wait(5)
    return code


def _wait_go(path: str, timeout_s: float) -> int | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        # The moment it is seen, not its mtime: file times tick with the kernel's coarse clock (up to 4 ms).
        if os.path.exists(path):
            return time.time_ns()
        time.sleep(0.0005)
    return None


def _sleep_until(t_ns: int) -> None:
    while True:
        left = t_ns - time.time_ns()
        if left <= 0:
            return
        if left > SPIN_NS:
            time.sleep((left - SPIN_NS) / 1e9)


def _apply(change: dict[str, Any], tc: subprocess.Popen[str] | None, sock: socket.socket, control: str) -> int:
    """_apply makes one change and returns when it took effect (UTC ns), raising OSError or ValueError."""
    if "tc" in change:
        assert tc is not None and tc.stdin is not None and tc.stdout is not None
        line, confirm = change["tc"]
        tc.stdin.write(f"{line}\n{confirm}\n")
        tc.stdin.flush()
        answer = tc.stdout.readline()
        took = time.time_ns()
        if not answer:
            raise ValueError(f"tc ended at {line!r}")
        return took
    sock.sendto(json.dumps(change["link"]).encode(), f"\0{control}")
    reply = json.loads(sock.recv(4096))
    if reply.get("error"):
        raise ValueError(f"delay link: {reply['error']}")
    return int(reply["t_ns"])


def stop(events: str) -> int:
    """End the schedule's process (by the pid it wrote), and remove its pid and go files; return 0."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError), open(f"{events}.pid") as f:
        os.kill(int(f.read()), signal.SIGTERM)
    for suffix in (".pid", ".go"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(events + suffix)
    return 0


def to_parquet(events: str) -> bytes:
    """Return the events file as rig_events.parquet's bytes (and remove the file); no file is no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    with contextlib.suppress(FileNotFoundError):
        with open(events) as f:
            rows = [json.loads(line) for line in f if line.strip()]
        os.remove(events)
    schema = pa.schema(
        [
            ("at_s", pa.float64()),
            ("label", pa.string()),
            ("what", pa.string()),
            ("direction", pa.string()),
            ("value", pa.float64()),
            ("via", pa.string()),
            ("asked", pa.timestamp("ns", tz="UTC")),
            ("took_effect", pa.timestamp("ns", tz="UTC")),
            ("lag_ms", pa.float64()),
            ("error", pa.string()),
        ]
    )
    table = pa.table({c: [r[c] for r in rows] for c in EVENT_COLUMNS}, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Return the command line's exit status: ``run``, ``stop`` or ``parquet``."""
    p = argparse.ArgumentParser(prog="python -m antler.rig.schedule_run", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="apply the plan's steps from EVENTS.go's time")
    r.add_argument("--events", required=True)
    r.add_argument("--plan", required=True, help="the steps' actions as JSON")
    r.add_argument("--control", default="", help="the delay link's control socket (abstract name)")
    for name in ("stop", "parquet"):
        sub.add_parser(name).add_argument("events")
    args = p.parse_args(argv)
    if args.cmd == "stop":
        return stop(args.events)
    if args.cmd == "parquet":
        sys.stdout.buffer.write(to_parquet(args.events))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    return run(args.events, json.loads(args.plan), args.control)


if __name__ == "__main__":
    sys.exit(main())
