"""Loading results for notebooks and reports: ``antler.results.load(path)``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from antler.node.schemas import SCHEMAS
from antler.results.codec import ENCODED, open_decoded
from antler.results.store import RESULT_FORMAT_VERSION, FormatError, read_arrows
from antler.testid import id_text

if TYPE_CHECKING:
    # pandas costs a third of a second to import, on every start of the command.
    import pandas as pd


class TestResult:
    """One test's stored data: its meta and its tables.

    Opening one raises FileNotFoundError without a meta.json, and FormatError
    for a result format newer than this code reads.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, path: Path) -> None:
        self.path = path
        self.meta: dict[str, Any] = json.loads((path / "meta.json").read_text())
        version = int(self.meta.get("format_version", 0))
        if version > RESULT_FORMAT_VERSION:
            raise FormatError(
                f"{path}: result format {version} is newer than this antler-ray understands "
                f"({RESULT_FORMAT_VERSION}); upgrade antler-ray to read it"
            )
        self.format_version = version
        self.meta = upgrade(self.meta)
        self._cache: dict[str, pd.DataFrame] = {}

    @property
    def id(self) -> dict[str, str]:
        """The test's ID map."""
        return dict(self.meta.get("test_id", {}))

    @property
    def id_text(self) -> str:
        """The test's ID as ``k=v k=v``."""
        return id_text(self.id)

    def kinds(self) -> list[str]:
        """List the tables the test has."""
        found = {p.name.split(".")[0] for p in self.path.glob("*.parquet")}
        found |= {p.name.split(".")[0] for p in self.path.glob("*.arrows")}
        found |= {p.name.split(".")[0] for p in self.path.glob("*.parquet.*") if p.suffix in ENCODED}
        return sorted(found)

    def arrow(self, kind: str) -> pa.Table:
        """Return the table of one kind (empty with its schema when absent), upgraded to the current format.

        Raises KeyError for an unknown kind.
        """
        return upgrade_table(kind, self._stored(kind), self.format_version)

    def _stored(self, kind: str) -> pa.Table:
        pq_path = self.path / f"{kind}.parquet"
        if pq_path.exists():
            return pq.read_table(pq_path)
        for ext in ENCODED:
            encoded = self.path / f"{kind}.parquet{ext}"
            if encoded.exists():
                # A table compressed by the Encode report reads as if it were plain.
                with open_decoded(encoded) as f:
                    return pq.read_table(pa.BufferReader(f.read()))
        arrows = self.path / f"{kind}.arrows"
        if arrows.exists():
            return read_arrows(arrows)
        schema = SCHEMAS.get(kind)
        if schema is None:
            raise KeyError(kind)
        return schema.empty_table()

    def __getitem__(self, kind: str) -> pd.DataFrame:
        if kind not in self._cache:
            self._cache[kind] = self.arrow(kind).to_pandas()
        return self._cache[kind]

    def __repr__(self) -> str:
        return f"TestResult({str(self.path)!r}, id={self.id}, tables={self.kinds()})"


class Results(Mapping[str, TestResult]):
    """Maps each test's folder (relative to the result folder) to its TestResult."""

    def __init__(self, path: Path, tests: dict[str, TestResult]) -> None:
        self.path = path
        self._tests = tests

    def __getitem__(self, key: str) -> TestResult:
        return self._tests[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tests)

    def __len__(self) -> int:
        return len(self._tests)

    def concat(self, kind: str) -> pd.DataFrame:
        """Return one table of a kind across tests, with each test's ID keys as columns.

        The first column, ``test``, is the test's folder (this mapping's
        key); then the table's own columns; then one column per ID key,
        named as the key, or ``id_<key>`` where the table has a column of
        that name already (flows' ``cca`` is each flow's, ``id_cca`` the
        test's), see id_columns. ID columns keep their values' type: numbers
        as numbers, quantities (``40ms``) as a categorical ordered by
        magnitude (antler.results.ids.typed_id_column). A test without the table adds no rows; a
        kind that no test has and no schema knows raises KeyError.
        """
        import pandas as pd

        from antler.results.ids import typed_id_column

        frames = []
        id_names: dict[str, None] = {}
        for key, test in self._tests.items():
            try:
                df = test[kind].copy()
            except KeyError:
                continue  # e.g. flows of a test interrupted before its analysis
            df.insert(0, "test", key)
            for k, name in id_columns(test.id, df.columns).items():
                df[name] = test.id[k]
                id_names[name] = None
            frames.append(df)
        if not frames:
            if kind not in SCHEMAS:
                raise KeyError(f"no test in {self.path} has a {kind} table")
            return pd.DataFrame()
        out = pd.concat(frames, ignore_index=True)
        for name in id_names:
            # Numbers and quantities sort as such: '100' before '1000' (issue 30).
            out[name] = typed_id_column(out[name].astype(object).where(out[name].notna(), None))
        return out


def id_columns(test_id: Mapping[str, str], columns: Iterable[str]) -> dict[str, str]:
    """Name the column of each ID key beside a table's columns: the key, or ``id_<key>`` if taken."""
    taken = set(columns)
    return {k: f"id_{k}" if k in taken else k for k in test_id}


def load(path: str | Path) -> Results:
    """Open a result folder (or one test's folder) for analysis.

    Raises FileNotFoundError when nothing is at path, and FormatError for a
    test written in a result format newer than this code reads.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"no results at {root}")
    if (root / "meta.json").exists():
        return Results(root, {".": TestResult(root)})
    tests = {str(m.parent.relative_to(root)): TestResult(m.parent) for m in sorted(root.rglob("meta.json"))}
    return Results(root, tests)


ADDED_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {
        "packet_io": ("tos",),
        "flows": ("lost_up", "loss_up_pct", "lost_down", "loss_down_pct", "status", "error"),
    }
}
"""ADDED_COLUMNS maps a result format to the columns it added, by table: older results get them as nulls."""
_FLOWS_TYPES = {"status": pa.string(), "error": pa.string()}
"""_FLOWS_TYPES are the types of flows.parquet's added columns that are not float64 (it has no stored schema)."""


def upgrade_table(kind: str, table: pa.Table, version: int) -> pa.Table:
    """Return a stored table of an older result format with the current format's columns.

    Format 2 added packet_io's ``tos``: older results did not record it, so
    it is null there (never 0, which would read as "sent unmarked"); and
    flows.parquet's per-direction loss and ``status``/``error`` (null: unknown
    until ``antler-ray report`` analyses the test again).
    """
    schema = SCHEMAS.get(kind)
    for added_in, columns in ADDED_COLUMNS.items():
        if version >= added_in:
            continue
        for name in columns.get(kind, ()):
            if name not in table.column_names:
                stored = pa.field(name, _FLOWS_TYPES.get(name, pa.float64()))
                f = schema.field(name) if schema is not None else stored
                table = table.append_column(f, pa.nulls(table.num_rows, type=f.type))
    return table


def upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """Return meta from an older result format in the current shape."""
    version = int(meta.get("format_version", 0))
    if version < 1:
        # Format 0 (pre-release) named the ID "id"; format 1 calls it "test_id".
        meta = dict(meta)
        if "test_id" not in meta and "id" in meta:
            meta["test_id"] = meta.pop("id")
    if version < RESULT_FORMAT_VERSION:
        # Format 2 changed only tables (see upgrade_table).
        meta = {**meta, "format_version": RESULT_FORMAT_VERSION}
    return meta
