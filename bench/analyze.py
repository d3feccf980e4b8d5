"""Benchmark: analysis and both charts on 10 million PacketIO and 1 million StreamIO rows.

Writes a synthetic stored result (10 echo packet flows of 251,900 packets each (1% lost),
recorded at both ends, and 4 stream flows of 125,000 samples at each end),
with ``packet_io`` laid out as the store leaves it (the recorder's 65,536-row
batches in arrival order, one table written with Parquet's default row groups
of 1M rows), then times, each in a fresh process, side by side:

- read: reading every Parquet table of the test as Arrow (the floor any analysis pays);
- pandas: reading them as pandas DataFrames, as ``antler.results.load`` hands them to a notebook;
- report: Analyze plus the time series and FCT charts (HTML pages and PNGs),
  from the same files.

It prints report time as a ratio to read time, and each process's peak
memory (targets: ratio <= 3, peak <= 3 GB). Not a test: run it by hand,
``.venv/bin/python -m bench.analyze``; the machine's load shows in the figures.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.results.store import write_meta
from bench.common import ROOT

PACKET_FLOWS = 10
PACKETS_PER_FLOW = 251_900  # ~x4 rows (client send, server receive, server echo, client receive)
STREAM_FLOWS = 4
SAMPLES_PER_END = 125_000  # x2 ends
BATCH_ROWS = 65_536  # the recorder's batch size (antler/node/recorder.py)


def write_result(d: Path) -> None:
    """Write the synthetic test into d."""
    rng = np.random.default_rng(1)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    d.mkdir(parents=True)
    flows = [f"p{i}" for i in range(PACKET_FLOWS)]
    info = {
        "tinit": [t0] * (2 * PACKET_FLOWS),
        "flow": [f for f in flows for _ in (0, 1)],
        "server": [s for _ in flows for s in (False, True)],
        "node_id": ["-"] * (2 * PACKET_FLOWS),
    }
    pq.write_table(pa.table(info, schema=SCHEMAS["packet_info"]), d / "packet_info.parquet")
    # Rows land in the file as the recorder ships them: 65,536-row batches of
    # each (flow, end, direction) buffer, interleaved in time across flows.
    chunks: list[tuple[int, pa.Table]] = []
    seq = np.arange(PACKETS_PER_FLOW, dtype=np.int64)
    send = seq * 1_000_000  # 1 ms interval
    for f in flows:
        owd = rng.integers(1_000_000, 30_000_000, PACKETS_PER_FLOW)
        kept = rng.random(PACKETS_PER_FLOW) > 0.01  # 1% loss
        # The client's sends carry their scheduled time (a few µs early, as
        # the hybrid timer sends); every other row has none (null).
        sched = send - rng.integers(0, 20_000, PACKETS_PER_FLOW)
        parts = [
            (False, send, seq, True, sched),
            (True, (send + owd)[kept], seq[kept], False, None),
            (True, (send + owd)[kept] + 10_000, seq[kept], True, None),
            (False, (send + 2 * owd)[kept], seq[kept], False, None),
        ]
        for server, t, s, sent, sc in parts:
            # Each end appends packets as they come: receive rows are in
            # arrival order (reordered seqs), not in seq order.
            arrival = np.argsort(t, kind="stable")
            t, s = t[arrival], s[arrival]
            sc = None if sc is None else sc[arrival]
            for a in range(0, len(t), BATCH_ROWS):
                tt, ss = t[a : a + BATCH_ROWS], s[a : a + BATCH_ROWS]
                n = len(tt)
                sched_col = pa.nulls(n, pa.int64()) if sc is None else pa.array(sc[a : a + BATCH_ROWS], pa.int64())
                chunks.append(
                    (
                        int(tt[-1]),
                        pa.table(
                            {
                                "flow": pa.array([f] * n, pa.string()),
                                "server": pa.array(np.full(n, server)),
                                "t_ns": pa.array(tt, pa.int64()),
                                "seq": pa.array(ss, pa.int64()),
                                "length": pa.array(np.full(n, 100, np.int32)),
                                "flags": pa.array(np.full(n, 1, np.uint8)),
                                "sent": pa.array(np.full(n, sent)),
                                "sched_t_ns": sched_col,
                                "tos": pa.array(np.zeros(n, np.uint8)),
                            },
                            schema=SCHEMAS["packet_io"],
                        ),
                    )
                )
    chunks.sort(key=lambda c: c[0])
    # As the store closes a test (antler/results/store.py): the batches in
    # arrival order, written as one table (row groups of up to 1M rows).
    pq.write_table(pa.concat_tables([t for _, t in chunks]), d / "packet_io.parquet", compression="zstd")
    sflows = [f"s{i}" for i in range(STREAM_FLOWS)]
    totals = [np.cumsum(rng.integers(5_000, 20_000, SAMPLES_PER_END)) for _ in sflows]
    sinfo = {
        "tinit": [t0] * (2 * STREAM_FLOWS),
        "flow": [f for f in sflows for _ in (0, 1)],
        "direction": ["up"] * (2 * STREAM_FLOWS),
        "cca": ["cubic"] * (2 * STREAM_FLOWS),
        "server": [s for _ in sflows for s in (False, True)],
        "node_id": ["-"] * (2 * STREAM_FLOWS),
        # Length-limited flows that complete, so the FCT chart has its points.
        "length_bytes": [int(total[-1]) for total in totals for _ in (0, 1)],
    }
    pq.write_table(pa.table(sinfo, schema=SCHEMAS["stream_info"]), d / "stream_info.parquet")
    with pq.ParquetWriter(d / "stream_io.parquet", SCHEMAS["stream_io"], compression="zstd") as w:
        t = np.arange(1, SAMPLES_PER_END + 1, dtype=np.int64) * 2_000_000  # 2 ms samples
        for f, total in zip(sflows, totals, strict=True):
            for server in (False, True):
                w.write_table(
                    pa.table(
                        {
                            "flow": pa.array([f] * SAMPLES_PER_END, pa.string()),
                            "server": pa.array(np.full(SAMPLES_PER_END, server)),
                            "t_ns": pa.array(t, pa.int64()),
                            "total_bytes": pa.array(total, pa.int64()),
                            "sent": pa.array(np.full(SAMPLES_PER_END, not server)),
                        },
                        schema=SCHEMAS["stream_io"],
                    )
                )
    write_meta(d, {"test_id": {"bench": "analyze"}, "status": "ok"})


def stage_read(d: Path) -> None:
    """Read every table of the test."""
    for p in sorted(d.glob("*.parquet")):
        pq.read_table(p)


def stage_pandas(d: Path) -> None:
    """Read every table into pandas, as antler.results.load gives it to a notebook."""
    for p in sorted(d.glob("*.parquet")):
        pq.read_table(p).to_pandas()


def import_report() -> float:
    """Import what the report stage uses; returns the seconds it took (printed apart)."""
    start = time.perf_counter()
    # The submodules both libraries import lazily on first use count too
    # (matplotlib.figure alone is ~0.2 s): start-up, not work on the data.
    import matplotlib.backends.backend_agg
    import matplotlib.figure  # noqa: F401
    import plotly.graph_objects
    import plotly.graph_objs.layout
    import plotly.graph_objs.scatter
    import plotly.io  # noqa: F401

    import antler.report.analyze
    import antler.report.charts  # noqa: F401

    return time.perf_counter() - start


def stage_report(d: Path) -> None:
    """Run Analyze and both charts into a scratch folder."""
    from antler.report.analyze import analyze
    from antler.report.charts import charts_fct, charts_time_series
    from antler.report.spec import ChartsFCT, ChartsTimeSeries
    from antler.results.tables import TestResult

    out = d.parent / f"out-{time.monotonic_ns()}"
    out.mkdir()
    a = analyze(TestResult(d))
    pq.write_table(pa.Table.from_pandas(a.flows, preserve_index=False), out / "flows.parquet")
    charts_time_series(a, ChartsTimeSeries(), out)
    charts_fct(a, ChartsFCT(), out)


def child(stage: str, d: Path) -> None:
    """Run one stage and print its time and peak memory as JSON.

    Library imports happen before the clock starts for every stage (pyarrow
    for the reads; plotly, matplotlib and pandas for the report): they are a
    fixed start-up cost, printed apart, not part of the work being compared.
    """
    # pq.read_table imports pyarrow.dataset on first use (0.3-0.4 s here): every
    # stage reads through it, so it is imported before the clock, like the rest.
    import pyarrow.dataset  # noqa: F401

    imports = import_report() if stage == "report" else 0.0
    if stage == "pandas":
        import pandas  # noqa: F401  - before the clock, as for the report
    start = time.perf_counter()
    {"read": stage_read, "pandas": stage_pandas, "report": stage_report}[stage](d)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"stage": stage, "seconds": elapsed, "peak_mb": peak_mb, "imports": imports}))


def run(stage: str, d: Path) -> dict[str, float]:
    """Time a stage in a fresh process (so each peak memory is its own)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.analyze", "--child", stage, str(d)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    ).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    """Write the data, run the stages alternately three times, and print the figures.

    Each stage's best of three counts: on a shared machine a single run of
    either stage varies by a factor of 1.5.
    """
    tmp = Path(tempfile.mkdtemp(prefix="antler-bench-analyze-"))
    try:
        d = tmp / "test"
        t = time.perf_counter()
        write_result(d)
        rows = pq.read_metadata(d / "packet_io.parquet").num_rows, pq.read_metadata(d / "stream_io.parquet").num_rows
        print(f"wrote {rows[0]:,} packet_io + {rows[1]:,} stream_io rows in {time.perf_counter() - t:.1f}s")
        results = [run(stage, d) for _ in range(3) for stage in ("read", "pandas", "report")]
        for r in results:
            extra = f"  (+ {r['imports']:.2f}s importing plotly, matplotlib, pandas)" if r["imports"] else ""
            print(f"  {r['stage']:<6} {r['seconds']:6.2f}s  peak {r['peak_mb']:7.0f} MB{extra}")
        best = {s: min(r["seconds"] for r in results if r["stage"] == s) for s in ("read", "pandas", "report")}
        peak = max(r["peak_mb"] for r in results if r["stage"] == "report")
        print(
            f"report/read (Arrow) time ratio {best['report'] / best['read']:.2f}; "
            f"report/read (pandas) {best['report'] / best['pandas']:.2f} (target <= 3); "
            f"report peak memory {peak / 1024:.2f} GB (target <= 3)"
        )
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]))
    else:
        main()
