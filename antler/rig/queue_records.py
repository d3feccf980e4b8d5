"""Per-packet records of the userspace bottleneck: kept by the link in arrays, written as queue.parquet at the end.

The link process (:mod:`antler.rig.delay`) records one row per packet that
reaches its bottleneck (:class:`QueueRecords`, the standard library's
``array`` columns, bounded by ``limit`` rows) and, when it ends, writes them
to a file at mid (:meth:`QueueRecords.write`: a JSON header line, then each
column's raw bytes). The rig's tear-down then runs this module on mid::

    python -m antler.rig.queue_records /tmp/antler-queue@ar-mid@.bin

which prints the records as Parquet on stdout, into the test's result folder
as ``queue.parquet`` (the system runner's ``stdout: FILE``), and deletes the
file. The columns (:func:`empty` has them, typed):

- ``t_ns``: the packet's arrival at the bottleneck, Unix time in ns (UTC);
- ``direction``: ``up`` (left to right: the bottleneck's direction);
- ``length``: the IP length in bytes;
- ``sojourn_ns``: how long it waited in the queue, null if dropped;
- ``verdict``: ``sent``, ``dropped`` or ``marked`` (sent with CE set here);
- ``ecn_in``, ``ecn_out``: the ECN codepoints it came and left with (0-3);
- ``backlog_packets``, ``backlog_bytes``: the queue at its arrival;
- ``protocol``, ``src``, ``dst``, ``sport``, ``dport``: its 5-tuple (null for
  a packet that has none), so analysis can match the test's flows.

Rows are in the order packets left the queue (sent or dropped), not by t_ns.
"""

from __future__ import annotations

import json
import os
import sys
import time
from array import array
from typing import Any

from antler.rig.aqm.base import Packet
from antler.rig.bottleneck import DROPPED, MARKED, SENT
from antler.rig.ipheader import address_text

DEFAULT_LIMIT = 3_000_000
"""DEFAULT_LIMIT is the rows kept at most (about 100 MB; 30 s of CUBIC at 50 Mbit/s is about 130,000)."""
VERSION = 1
COLUMNS = (
    ("t_ns", "q"),
    ("length", "I"),
    ("sojourn_ns", "q"),
    ("verdict", "b"),
    ("ecn_in", "b"),
    ("ecn_out", "b"),
    ("backlog_packets", "I"),
    ("backlog_bytes", "I"),
    ("flow", "i"),
)
"""COLUMNS are the link's array columns (name, array typecode); ``flow`` indexes the flow table (-1: none)."""
VERDICTS = {SENT: "sent", DROPPED: "dropped", MARKED: "marked"}


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("t_ns", pa.int64()),
            ("direction", pa.dictionary(pa.int32(), pa.string())),
            ("length", pa.int32()),
            ("sojourn_ns", pa.int64()),
            ("verdict", pa.dictionary(pa.int32(), pa.string())),
            ("ecn_in", pa.int8()),
            ("ecn_out", pa.int8()),
            ("backlog_packets", pa.int32()),
            ("backlog_bytes", pa.int64()),
            ("protocol", pa.uint8()),
            ("src", pa.string()),
            ("dst", pa.string()),
            ("sport", pa.uint16()),
            ("dport", pa.uint16()),
        ]
    )


class QueueRecords:
    """The bottleneck's per-packet rows, in array columns of at most limit rows; its record method is a Record."""

    def __init__(self, direction: str = "up", limit: int = DEFAULT_LIMIT) -> None:
        self.direction = direction
        self.limit = limit
        self.cols = {name: array(code) for name, code in COLUMNS}
        self.flows: dict[object, int] = {}
        self.rows = 0
        self.left_out = 0

    def record(
        self, pkt: Packet, verdict: int, sojourn_ns: int, ecn_out: int, backlog_packets: int, backlog_bytes: int
    ) -> None:
        """Append one packet's row (sojourn_ns -1: dropped); past the limit, count it as left out."""
        if self.rows >= self.limit:
            self.left_out += 1
            return
        c = self.cols
        key = pkt.flow_key
        flow = -1 if key is None else self.flows.setdefault(key, len(self.flows))
        c["t_ns"].append(pkt.t_enqueue_ns)
        c["length"].append(pkt.length)
        c["sojourn_ns"].append(sojourn_ns)
        c["verdict"].append(verdict)
        c["ecn_in"].append(pkt.ecn_in)
        c["ecn_out"].append(ecn_out)
        c["backlog_packets"].append(backlog_packets)
        c["backlog_bytes"].append(min(backlog_bytes, 0xFFFFFFFF))
        c["flow"].append(flow)
        self.rows += 1

    def write(self, path: str) -> None:
        """Write the rows to path: a JSON header line, then each column's bytes (t_ns on the monotonic clock)."""
        flows = [[k[0], k[1].hex(), k[2].hex(), k[3], k[4]] for k in self.flows]  # type: ignore[index]
        header = {
            "version": VERSION,
            "direction": self.direction,
            "rows": self.rows,
            "left_out": self.left_out,
            "wall_minus_monotonic_ns": time.time_ns() - time.monotonic_ns(),
            "columns": [[name, code, self.cols[name].itemsize] for name, code in COLUMNS],
            "flows": flows,
        }
        tmp = f"{path}.tmp"
        with open(tmp, "wb") as f:
            f.write(json.dumps(header).encode() + b"\n")
            for name, _ in COLUMNS:
                self.cols[name].tofile(f)
        os.replace(tmp, path)


def read(path: str) -> Any:
    """Return the records a link wrote to path as an Arrow table (the columns of :func:`empty`); raises OSError, ValueError."""
    import numpy as np
    import pyarrow as pa

    with open(path, "rb") as f:
        header = json.loads(f.readline())
        if header.get("version") != VERSION:
            raise ValueError(f"{path}: queue records version {header.get('version')!r}, not {VERSION}")
        rows = header["rows"]
        cols: dict[str, Any] = {}
        for name, code, size in header["columns"]:
            cols[name] = np.frombuffer(f.read(rows * size), dtype=np.dtype(code), count=rows)
    n = len(header["flows"])
    proto = np.array([fl[0] for fl in header["flows"]] + [0], dtype=np.uint8)
    src = [address_text(bytes.fromhex(fl[1])) for fl in header["flows"]] + [None]
    dst = [address_text(bytes.fromhex(fl[2])) for fl in header["flows"]] + [None]
    sport = np.array([fl[3] for fl in header["flows"]] + [0], dtype=np.uint16)
    dport = np.array([fl[4] for fl in header["flows"]] + [0], dtype=np.uint16)
    flow = cols["flow"].astype(np.int64)
    at = np.where(flow < 0, n, flow)
    none = flow < 0
    verdict_names = np.array([VERDICTS[i] for i in range(len(VERDICTS))], dtype=object)
    sojourn = cols["sojourn_ns"]
    table = pa.table(
        {
            "t_ns": pa.array(cols["t_ns"] + np.int64(header["wall_minus_monotonic_ns"]), pa.int64()),
            "direction": pa.array([header["direction"]] * rows, pa.string()).dictionary_encode(),
            "length": pa.array(cols["length"], pa.int32()),
            "sojourn_ns": pa.array(sojourn, pa.int64(), mask=sojourn < 0),
            "verdict": pa.array(verdict_names[cols["verdict"]], pa.string()).dictionary_encode(),
            "ecn_in": pa.array(cols["ecn_in"], pa.int8()),
            "ecn_out": pa.array(cols["ecn_out"], pa.int8()),
            "backlog_packets": pa.array(cols["backlog_packets"], pa.int32()),
            "backlog_bytes": pa.array(cols["backlog_bytes"], pa.int64()),
            "protocol": pa.array(proto[at], pa.uint8(), mask=none),
            "src": pa.array(np.array(src, dtype=object)[at], pa.string(), mask=none),
            "dst": pa.array(np.array(dst, dtype=object)[at], pa.string(), mask=none),
            "sport": pa.array(sport[at], pa.uint16(), mask=none),
            "dport": pa.array(dport[at], pa.uint16(), mask=none),
        }
    )
    return table.cast(_schema())


def empty() -> Any:
    """Return a queue table without rows."""
    return _schema().empty_table()


def main(argv: list[str] | None = None) -> int:
    """Print the records a link wrote (argv[0]) as Parquet on stdout and delete the file; 1 if it cannot be read."""
    import pyarrow.parquet as pq

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m antler.rig.queue_records FILE", file=sys.stderr)
        return 2
    code = 0
    try:
        table = read(args[0])
    except (OSError, ValueError, KeyError) as e:
        # Still a valid (empty) table: the result folder never holds a file no reader can open.
        print(f"queue records: {e}", file=sys.stderr)
        table, code = empty(), 1
    pq.write_table(table, sys.stdout.buffer, compression="zstd")
    sys.stdout.buffer.flush()
    if code:
        return code
    os.unlink(args[0])
    print(f"queue records: {table.num_rows} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
