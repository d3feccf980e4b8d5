"""Writing a test's ``summary.parquet``, its one row of test-level figures, beside ``flows.parquet``."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from antler.report.analyze import Analysis

SUMMARY_FILE = "summary.parquet"
"""SUMMARY_FILE is the summary table's file name in a test folder (columns: antler.report.analyze.SUMMARY_COLUMNS)."""


def write_summary(analysis: Analysis, directory: Path) -> Path:
    """Write the analysis' summary row to ``directory/summary.parquet`` and return its path.

    Raises FileExistsError when the file exists: reports never overwrite.
    """
    path = directory / SUMMARY_FILE
    if path.exists():
        raise FileExistsError(f"{path} exists; reports never overwrite")
    pq.write_table(pa.Table.from_pandas(analysis.summary, preserve_index=False), path, compression="zstd")
    return path
