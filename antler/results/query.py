"""Querying a table across every test of a result folder in place: ``antler.results.dataset(path, table)``.

A sweep of hundreds of tests is too big to load into pandas at once. The
dataset reads each test's Parquet file where it lies, only the columns and
row groups a query asks for, and adds the test's ID keys as columns without
writing them anywhere: they are each file's partition expression (as a
``key=value`` folder would be in a Hive-partitioned dataset), so a filter on
them skips whole tests unread. DuckDB and polars scan it without copying::

    import duckdb
    flows = antler.results.dataset("results/latest", "flows")
    duckdb.sql("SELECT cca, rig_rtt, goodput_mbps FROM flows WHERE flow = 'tcp' ORDER BY ALL")

    import polars as pl
    pl.scan_pyarrow_dataset(flows).filter(pl.col("flow") == "udp").collect()
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.results.tables import TestResult, id_columns, load


def dataset(path: str | Path, table: str) -> ds.Dataset:
    """Return one table (``flows``, ``packet_io``, ...) of every test under path as a pyarrow dataset.

    Columns: ``test`` (the test's folder in the result folder), the table's
    columns (the union over tests: a column a test's file lacks is null
    there, and tables of known kinds have every column of the current
    format), then each ID key, named as :meth:`Results.concat` names it (the
    key, or ``id_<key>`` beside a table column of that name). A test without
    the table adds no rows. Tables stored compressed (``.parquet.zst``) or
    left as Arrow streams by a killed run are read into memory, the rest are
    scanned from disk. Raises FileNotFoundError when nothing is at path,
    FormatError for results newer than this code, and KeyError when no test
    has the table and no schema knows it.
    """
    results = load(path)
    files: list[tuple[TestResult, Path, pa.Schema]] = []
    in_memory: list[tuple[TestResult, pa.Table]] = []
    for test in results.values():
        file = test.path / f"{table}.parquet"
        if file.exists():
            files.append((test, file, pq.read_schema(file)))
        elif table in test.kinds():
            in_memory.append((test, test.arrow(table)))
    schemas = [s for _, _, s in files] + [t.schema for _, t in in_memory]
    if table in SCHEMAS:
        schemas.insert(0, SCHEMAS[table])
    if not schemas:
        raise KeyError(f"no test in {results.path} has a {table} table")
    # Metadata (pandas' own, per file) would describe one file's columns, not the union's.
    columns = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
    tests = [t for t, _, _ in files] + [t for t, _ in in_memory]
    names: dict[str, str] = {}
    for test in tests:
        for k, name in id_columns(test.id, ["test", *columns.names]).items():
            names.setdefault(k, name)
    schema = pa.schema([pa.field("test", pa.string()), *columns, *(pa.field(n, pa.string()) for n in names.values())])

    def partition(test: TestResult) -> ds.Expression:
        expr = ds.field("test") == _key(test, results.path)
        for k, v in test.id.items():
            expr = expr & (ds.field(names[k]) == v)
        return expr

    parts: list[ds.Dataset] = [
        ds.FileSystemDataset.from_paths(
            [str(f.resolve()) for _, f, _ in files],
            schema=schema,
            format=ds.ParquetFileFormat(),
            filesystem=pafs.LocalFileSystem(),
            partitions=[partition(t) for t, _, _ in files],
        )
    ]
    for test, t in in_memory:
        extra = {"test": _key(test, results.path), **{names[k]: v for k, v in test.id.items()}}
        for name in schema.names:
            if name in extra:
                t = t.append_column(name, pa.array([extra[name]] * t.num_rows, pa.string()))
            elif name not in t.column_names:
                t = t.append_column(schema.field(name), pa.nulls(t.num_rows, schema.field(name).type))
        parts.append(ds.InMemoryDataset(t.select(schema.names).cast(schema), schema=schema))
    return parts[0] if len(parts) == 1 else ds.dataset(parts)


def _key(test: TestResult, root: Path) -> str:
    """_key is the test's folder relative to the result folder, as Results keys it."""
    rel = test.path.relative_to(root).as_posix()
    return rel or "."
