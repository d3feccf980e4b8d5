"""The Arrow schemas of the stored tables, built from the node's plain column lists (:mod:`antler.node.kinds`).

Only the driver's side (results, reports, the parent of a node) imports this
module and pyarrow; a node process never does. Times: ``time`` and
``tinit`` columns are absolute UTC timestamps by the node's clock; ``t_ns``
columns are nanoseconds relative to the flow's ``tinit``.
"""

from __future__ import annotations

import pyarrow as pa

from antler.node.kinds import COLUMNS

TIMESTAMP = pa.timestamp("ns", tz="UTC")
"""TIMESTAMP is the type of absolute times: ns since the epoch, UTC."""

TYPES: dict[str, pa.DataType] = {
    "timestamp": TIMESTAMP,
    "string": pa.string(),
    "bool": pa.bool_(),
    "int64": pa.int64(),
    "int32": pa.int32(),
    "uint64": pa.uint64(),
    "uint32": pa.uint32(),
    "uint8": pa.uint8(),
    "float64": pa.float64(),
}
"""TYPES maps the type names of :data:`antler.node.kinds.COLUMNS` to Arrow types."""

SCHEMAS: dict[str, pa.Schema] = {
    kind: pa.schema([(name, TYPES[type_]) for name, type_ in columns]) for kind, columns in COLUMNS.items()
}
"""SCHEMAS maps each stored table's kind to its Arrow schema (file ``<kind>.parquet``)."""
