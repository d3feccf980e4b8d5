"""Plain sample columns (a :class:`antler.node.items.Rows`' parts) to Arrow record batches and back.

A node records into standard-library buffers; whoever holds pyarrow (the
driver, a Ray node) turns them into record batches of the kind's schema
(:data:`antler.node.schemas.SCHEMAS`) here, on the driver's side. A typed column becomes an Arrow
array without a per-value loop (numpy views the ``array``'s buffer); in an
int64 column :data:`antler.node.kinds.NULL` becomes a null.
"""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
import pyarrow as pa

from antler.node.kinds import COLUMNS, NULL, TYPECODES
from antler.node.schemas import SCHEMAS, TYPES


def record_batch(
    kind: str, n: int, columns: dict[str, array[Any] | list[Any]], constants: dict[str, Any]
) -> pa.RecordBatch:
    """Return n rows as a record batch of kind's schema: columns by name, and those of one value each.

    Raises KeyError for a kind or a column the schema lacks, ValueError for a
    column whose length is not n.
    """
    schema = SCHEMAS[kind]
    arrays = []
    for name, type_ in COLUMNS[kind]:
        arrow_type = TYPES[type_]
        if name in constants:
            arrays.append(pa.repeat(pa.scalar(constants[name], type=arrow_type), n))
            continue
        values = columns[name]
        if len(values) != n:
            raise ValueError(f"{kind} column {name!r} has {len(values)} values, not {n}")
        arrays.append(_array(values, type_, arrow_type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _array(values: array[Any] | list[Any], type_: str, arrow_type: pa.DataType) -> pa.Array:
    if isinstance(values, list):
        return pa.array(values, type=arrow_type)
    data = np.frombuffer(values, dtype=values.typecode) if len(values) else np.array([], dtype=values.typecode)
    if type_ == "bool":
        data = data.astype(bool)
    mask = data == NULL if type_ in ("int64", "timestamp") else None
    if type_ == "timestamp":
        data = data.view("datetime64[ns]")
    return pa.array(data, type=arrow_type, mask=mask if mask is not None and mask.any() else None)


def plain_columns(kind: str, batch: pa.RecordBatch) -> dict[str, array[Any] | list[Any]]:
    """Return the columns of a record batch of kind's schema, by name (a null in an int64 column becomes NULL)."""
    columns: dict[str, array[Any] | list[Any]] = {}
    for name, type_ in COLUMNS[kind]:
        col = batch.column(name)
        code = TYPECODES.get(type_)
        if code is None:
            columns[name] = col.to_pylist()
            continue
        if type_ in ("int64", "timestamp"):
            col = col.cast(pa.int64()).fill_null(NULL)
        elif type_ == "bool":
            col = col.cast(pa.int8()).fill_null(0)
        else:
            col = col.fill_null(0)
        out = array(code)
        out.frombytes(col.to_numpy(zero_copy_only=False).astype(np.dtype(code), copy=False).tobytes())
        columns[name] = out
    return columns
