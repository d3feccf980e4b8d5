"""The kernel bottleneck's queue over time: its qdiscs' statistics sampled every rig.qdisc_interval.

A kernel bottleneck (htb + rig.qdisc at mid's egress) shows only counters,
so the rig samples them: from set-up to tear-down a process at mid runs
``tc -s -j qdisc show dev DEV`` every interval and appends each sample as a
JSON line to a file at mid; the tear-down stops it (one last sample, taken
once the traffic has ended, so the last row's counters are ``tc -s``'s) and
turns the file into the test's ``qdisc.parquet``::

    python -m antler.rig.qdisc_stats record m-right /tmp/antler-queue@ar-mid@.qdisc.jsonl --interval 100ms
    python -m antler.rig.qdisc_stats stop /tmp/antler-queue@ar-mid@.qdisc.jsonl
    python -m antler.rig.qdisc_stats parquet /tmp/antler-queue@ar-mid@.qdisc.jsonl > qdisc.parquet

One row per qdisc per sample (:data:`COLUMNS`): ``t_ns`` (Unix time, ns),
the qdisc's ``kind``, ``handle`` and ``parent`` (the htb shaper is ``1:``,
the bottleneck's queue ``10:``), the kernel's counters ``bytes``,
``packets``, ``drops``, ``overlimits``, ``requeues`` (totals since set-up),
the backlog (``backlog_bytes``, ``backlog_packets``), ``ecn_marks`` where
the qdisc reports them (fq_codel's ``ecn_mark``, codel's, pie's, dualpi2's;
null otherwise), and ``xstats``: the qdisc's other numeric statistics as a
JSON object (fq_codel's ``new_flow_count``, cake's tins, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from types import FrameType
from typing import Any

from antler.node.metric import Duration

BASE = ("bytes", "packets", "drops", "overlimits", "requeues")
"""BASE are the counters every qdisc reports (tc -s -j's names)."""
ECN_KEYS = ("ecn_mark", "ecn_marked", "marks", "ecn_marks")
"""ECN_KEYS are the names qdiscs give their ECN mark count in tc's JSON (the first present is taken)."""
COLUMNS = (
    "t_ns",
    "kind",
    "handle",
    "parent",
    *BASE,
    "backlog_bytes",
    "backlog_packets",
    "ecn_marks",
    "xstats",
)
"""COLUMNS are qdisc.parquet's columns, in order."""
_SKIP = {"kind", "handle", "parent", "root", "refcnt", "options", "backlog", "qlen", *BASE}


def rows(sample: list[dict[str, Any]], t_ns: int) -> list[dict[str, Any]]:
    """Return qdisc.parquet rows from one ``tc -s -j qdisc show`` answer (a list of qdiscs) taken at t_ns."""
    out = []
    for q in sample:
        extra = {k: v for k, v in q.items() if k not in _SKIP and isinstance(v, (int, float, dict, list))}
        marks = next((q[k] for k in ECN_KEYS if isinstance(q.get(k), int)), None)
        out.append(
            {
                "t_ns": t_ns,
                "kind": str(q.get("kind", "")),
                "handle": str(q.get("handle", "")),
                "parent": "root" if q.get("root") else str(q.get("parent", "")),
                **{k: int(q.get(k, 0)) for k in BASE},
                "backlog_bytes": int(q.get("backlog", 0)),
                "backlog_packets": int(q.get("qlen", 0)),
                "ecn_marks": marks,
                "xstats": json.dumps(extra, sort_keys=True) if extra else None,
            }
        )
    return out


def sample(dev: str) -> list[dict[str, Any]]:
    """Return ``tc -s -j qdisc show dev DEV`` parsed (a list of qdiscs), raising OSError if tc fails."""
    r = subprocess.run(["tc", "-s", "-j", "qdisc", "show", "dev", dev], capture_output=True, text=True, timeout=5)
    if r.returncode != 0:
        raise OSError(f"tc -s -j qdisc show dev {dev}: {r.stderr.strip() or r.returncode}")
    data: list[dict[str, Any]] = json.loads(r.stdout or "[]")
    return data


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def record(dev: str, path: str, interval_ns: int) -> None:
    """Sample dev's qdiscs every interval_ns into path (JSON lines) until SIGTERM or SIGINT, then once more."""
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGINT, _raise_stop)
    with open(path + ".pid", "w") as f:
        f.write(str(os.getpid()))
    with open(path, "a") as out:

        def take() -> None:
            for row in rows(sample(dev), time.time_ns()):
                out.write(json.dumps(row) + "\n")
            out.flush()

        try:
            # The schedule is absolute: a slow tc delays one sample, not every later one.
            next_ns = time.monotonic_ns()
            while True:
                take()
                next_ns += interval_ns
                time.sleep(max(0.0, (next_ns - time.monotonic_ns()) / 1e9))
        except _Stop:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            take()


def stop(path: str, timeout_s: float) -> bool:
    """Stop the recorder of path (its pid file) and wait for its last sample; return False if it did not end."""
    try:
        with open(path + ".pid") as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except (OSError, IndexError):
            break
        time.sleep(0.02)
    else:
        return False
    with contextlib.suppress(OSError):
        os.unlink(path + ".pid")
    return True


def table(path: str) -> Any:
    """Return the recorded rows of path as an Arrow table with :data:`COLUMNS`."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("t_ns", pa.int64()),
            ("kind", pa.string()),
            ("handle", pa.string()),
            ("parent", pa.string()),
            *((k, pa.int64()) for k in BASE),
            ("backlog_bytes", pa.int64()),
            ("backlog_packets", pa.int64()),
            ("ecn_marks", pa.int64()),
            ("xstats", pa.string()),
        ]
    )
    with open(path) as f:
        data = [json.loads(line) for line in f if line.strip()]
    return pa.Table.from_pylist(data, schema=schema)


def main(argv: list[str] | None = None) -> int:
    """Run ``record``, ``stop`` or ``parquet`` (the latter writes Parquet to stdout and deletes the file)."""
    ap = argparse.ArgumentParser(prog="python -m antler.rig.qdisc_stats")
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("dev")
    r.add_argument("file")
    r.add_argument("--interval", default="100ms")
    s = sub.add_parser("stop")
    s.add_argument("file")
    s.add_argument("--timeout", default="10s")
    p = sub.add_parser("parquet")
    p.add_argument("file")
    args = ap.parse_args(argv)
    if args.cmd == "record":
        record(args.dev, args.file, Duration.parse(args.interval).ns)
        return 0
    if args.cmd == "stop":
        if not stop(args.file, Duration.parse(args.timeout).ns / 1e9):
            print(f"qdisc_stats: the recorder of {args.file} did not stop", file=sys.stderr)
            return 1
        return 0
    import pyarrow.parquet as pq

    t = table(args.file)
    pq.write_table(t, sys.stdout.buffer, compression="zstd")
    os.unlink(args.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
