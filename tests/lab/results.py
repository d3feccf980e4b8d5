"""Stored result folders for the report tests: the fixtures under tests/data and a sweep with failed tests."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.report.index import write_index
from antler.report.pipeline import run_after
from antler.report.spec import DEFAULT_AFTER, After, IndexSpec
from antler.results import load
from antler.results.store import write_meta

DATA = Path(__file__).parents[1] / "data"
FIXTURE = DATA / "result"
SWEEP = DATA / "sweep"
REPORTS = After(default=tuple(r for r in DEFAULT_AFTER if r.analyze is None))
"""REPORTS is the default after pipeline but analyze: the sweep fixture holds its flows.parquet already."""


def add_test(result: Path, cca: str, rtt: str, status: str, like: str | None = None) -> Path:
    """Add a test of the sweep with status to result: a copy of test ``like``'s data, or none."""
    test_id = {"experiment": "cubic", "cca": cca, "rig_rtt": rtt}
    d = result / f"experiment-cubic_cca-{cca}_rig_rtt-{rtt}"
    if like is not None:
        shutil.copytree(result / like, d)
    else:
        d.mkdir()
    meta = json.loads((d / "meta.json").read_text()) if like is not None else {}
    write_meta(d, {**meta, "test_id": test_id, "path": d.name, "status": status})
    return d


def sweep_with_failures(result: Path) -> Path:
    """Make result: the stored sweep, a failed and an interrupted test, their reports, the index.

    ``cca=reno rig_rtt=100ms`` failed (two errors; its data is a copy of
    reno at 40ms); ``cca=cubic rig_rtt=100ms`` was interrupted before it
    measured anything, so it has no reports.
    """
    shutil.copytree(SWEEP, result)
    (result / "README.txt").unlink()
    failed = add_test(result, "reno", "100ms", "failed", like="experiment-cubic_cca-reno_rig_rtt-40ms")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    errors = [
        {"time": t0.replace(second=2), "node_id": "left", "tag": "stream", "message": "a later error"},
        {"time": t0.replace(second=1), "node_id": "right", "tag": "stream", "message": "connection reset by peer"},
    ]
    pq.write_table(pa.Table.from_pylist(errors, schema=SCHEMAS["errors"]), failed / "errors.parquet")
    add_test(result, "cubic", "100ms", "interrupted")
    for test in load(result).values():
        if test.meta["status"] != "interrupted":
            assert run_after(test.path, REPORTS) == []
    write_index(result, IndexSpec())
    return result
