"""The columnar toolkit of analysis: a test's rows grouped by flow, as numpy arrays.

A flow is a *code* here: its index into the test's sorted flows
(:func:`sorted_flows`). Per-flow results are arrays of length n (the number
of flows) indexed by code, and a series' flow column maps the codes back to
names (:func:`flow_column`). No Python loop runs per row: sorts are stable
argsorts of small or packed integer keys, per-flow reductions are ``reduceat``
over runs of equal codes, and pairings are scatters (``np.minimum.at``) into
tables indexed by (flow, seq).

The stream and packet metrics (:mod:`.streams`, :mod:`.packets`) are built
from these; :mod:`antler.report.decimate` uses :func:`is_sorted` and
:func:`run_starts`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

SEQ_BITS = 40
"""SEQ_BITS is how many bits of a join key a packet's seq takes (flow index above them)."""
TIME_BITS = 50
"""TIME_BITS is how many bits of a sort key a time in ns takes (13 days; longer tests sort more slowly)."""


def sorted_flows(table: pa.Table, known: pd.Series) -> list[str]:
    """Return the sorted list of flows: the info's and every flow the table has rows of."""
    col = table.column("flow")
    if pa.types.is_dictionary(col.type):
        # Read dictionary-encoded: each chunk's small dictionary, never the rows' strings.
        names = {str(f) for chunk in col.chunks for f in chunk.dictionary.to_pylist()}
    else:
        names = {str(f) for f in pc.unique(col).to_pylist()}
    return sorted(set(known) | names)


class Ends:
    """Ends maps (flow code, server) to the end's offset from the test start, in ns.

    ``offset`` and ``known`` are (n, 2) arrays, column 0 the client end and 1
    the server end; ``known`` is False (offset 0) for an end without an info row.
    """

    def __init__(self, info: pd.DataFrame, flows: list[str], t0: pd.Timestamp) -> None:
        self.offset = np.zeros((len(flows), 2), dtype=np.int64)
        self.known = np.zeros((len(flows), 2), dtype=bool)
        index = {f: i for i, f in enumerate(flows)}
        for flow, server, tinit in zip(info["flow"], info["server"], info["tinit"], strict=True):
            i = index.get(flow)
            if i is not None:
                self.offset[i, int(server)] = (tinit - t0).value
                self.known[i, int(server)] = True

    def at(self, code: np.ndarray, server: np.ndarray) -> np.ndarray:
        """Return the offset of each row's end."""
        return self.offset[code, server.astype(np.int64)]


def flow_column(code: np.ndarray, flows: list[str]) -> pd.Categorical[str]:
    """Return a series' flow column: categorical, as millions of repeated strings cost seconds."""
    return pd.Categorical.from_codes(code.astype(np.int64, copy=False), categories=pd.Index(flows))


def empty_series(value: str) -> pd.DataFrame:
    """Return a series frame without rows: columns flow (categorical), t_s and the named value."""
    return pd.DataFrame({"flow": pd.Categorical([]), "t_s": pd.Series(dtype=float), value: pd.Series(dtype=float)})


class Part:
    """The rows of one kind (e.g. the client's sends), grouped by flow, each flow's in stored order.

    ``count`` is each flow's number of rows (length n), ``code`` each row's
    flow code, ``start`` where each flow's rows begin (length n + 1); the
    columns are numpy arrays of the rows, taken by name (``part["t_ns"]``).
    """

    def __init__(self, n: int, count: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        self.count = count
        self.columns = columns
        self.code = np.repeat(np.arange(n, dtype=np.int64), count)
        self.start = np.concatenate([[0], np.cumsum(count)])
        self._flows = np.flatnonzero(count)  # the flows with rows

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def shift(self, name: str, per_flow: np.ndarray) -> np.ndarray:
        """Add each flow's value to its rows of a column, in place (the part's arrays are its own)."""
        out = self.columns[name]
        for f in self._flows:
            out[self.start[f] : self.start[f + 1]] += per_flow[f]
        return out

    def extremes(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return each flow's smallest and largest value, as floats (NaN for a flow without rows)."""
        lo = np.full(len(self.count), np.nan)
        hi = np.full(len(self.count), np.nan)
        if len(self._flows):
            starts = self.start[self._flows]  # a flow's rows run to the next non-empty flow's start
            lo[self._flows] = np.minimum.reduceat(values, starts)
            hi[self._flows] = np.maximum.reduceat(values, starts)
        return lo, hi


def split_parts(table: pa.Table, flows: list[str], by: list[str], want: dict[int, list[str]]) -> dict[int, Part]:
    """Sort a table's rows into kinds, and each kind's by flow, keeping stored order within a flow.

    A row's kind is the number its boolean ``by`` columns spell, the first
    the highest bit (by server and sent: 0 client receives, 1 client sends,
    2 server receives, 3 server sends). Only the kinds and columns in
    ``want`` are kept: the result maps each wanted kind to a Part of those
    columns (empty when the table has no such rows).

    The recorder ships rows in batches of one flow, end and direction, and
    the store keeps them in order, so a batch read back is one such run or a
    few: each run is sliced out whole, never gathered row by row (and no
    array is built over the whole table: fresh memory is slow, the kernel
    must first fault it in). Rows interleaved one by one (e.g. a table built
    in memory) are split by a stable sort of their small keys instead.
    """
    n = len(flows)
    index = {f: i for i, f in enumerate(flows)}
    pieces: dict[int, list[tuple[int, int, dict[str, np.ndarray]]]] = {k: [] for k in want}
    for batch in table.to_batches():
        rows = batch.num_rows
        if not rows:
            continue
        code = _batch_codes(batch.column("flow"), index, flows)
        flags = [batch.column(name) for name in by]
        groups: list[tuple[int, slice | np.ndarray]]
        if code[0] == code.min() == code.max() and all(f.null_count == 0 and f.true_count in (0, rows) for f in flags):
            kind = 0
            for f in flags:
                kind = 2 * kind + int(f.true_count > 0)
            groups = [(kind * n + int(code[0]), slice(0, rows))]
        else:
            key = np.zeros(rows, np.int64)
            for f in flags:
                key = 2 * key + f.to_numpy(zero_copy_only=False)
            key = key * n + code
            cut = (np.flatnonzero(key[1:] != key[:-1]) + 1).tolist()
            if len(cut) <= rows // 256:
                groups = [(int(key[a]), slice(a, b)) for a, b in zip([0, *cut], [*cut, rows], strict=True)]
            else:
                order = np.argsort(key.astype(np.int16) if key.max() < (1 << 15) else key, kind="stable")
                k = key[order]
                starts = run_starts(k)
                groups = [(int(k[a]), order[a:b]) for a, b in zip(starts, np.append(starts[1:], rows), strict=True)]
        arrays: dict[str, np.ndarray] = {}  # the batch's columns as numpy, each converted once
        for key_, sel in groups:
            kind, c = divmod(key_, n)
            names = want.get(kind)
            if names is None:
                continue
            for name in names:
                if name not in arrays:
                    arrays[name] = batch.column(name).to_numpy(zero_copy_only=False)
            columns = {name: arrays[name][sel] for name in names}
            size = sel.stop - sel.start if isinstance(sel, slice) else len(sel)
            pieces[kind].append((c, size, columns))
    parts = {}
    for kind, names in want.items():
        got = sorted(pieces[kind], key=lambda p: p[0])  # stable: stored order within a flow
        count = np.bincount([p[0] for p in got], weights=[p[1] for p in got], minlength=n).astype(np.int64)
        columns = {name: np.concatenate([p[2][name] for p in got]) if got else np.zeros(0, np.int64) for name in names}
        parts[kind] = Part(n, count, columns)
    return parts


def _batch_codes(col: pa.Array, index: dict[str, int], flows: list[str]) -> np.ndarray:
    """_batch_codes is each row's flow as an index into flows (which has every flow of the batch)."""
    if pa.types.is_dictionary(col.type):
        lookup = np.array([index[str(f)] for f in col.dictionary.to_pylist()] or [0], np.int64)
        return lookup[col.indices.to_numpy(zero_copy_only=False)]
    return pc.index_in(col, value_set=pa.array(flows, pa.string())).to_numpy(zero_copy_only=False).astype(np.int64)


def flow_time_order(code: np.ndarray, t: np.ndarray) -> np.ndarray | None:
    """Return the permutation sorting rows by flow, then time (stable); None if they are in order.

    ``code`` and ``t`` are int64 arrays of equal length (flow codes and times
    in ns). One stable argsort of a packed key: records arrive nearly sorted,
    which numpy's stable sort (timsort) exploits; lexsort does not.
    """
    if len(t) < 2 or (is_sorted(code) and _sorted_runs(code, t)):
        return None
    if t.min() >= 0 and t.max() < (1 << TIME_BITS):
        return _argsort_by_flow_first((code << TIME_BITS) | t, code)
    return np.lexsort((t, code))


def _sorted_runs(code: np.ndarray, t: np.ndarray) -> bool:
    """_sorted_runs reports whether t ascends within each run of equal codes (booleans only, no packed keys)."""
    ok = t[1:] >= t[:-1]
    if ok.all():
        return True
    ok |= code[1:] != code[:-1]
    return bool(ok.all())


def _argsort_by_flow_first(packed: np.ndarray, code: np.ndarray) -> np.ndarray:
    """_Argsort_by_flow_first is the stable argsort of packed keys whose high bits are the flow code.

    Flows interleave in batches but each flow's keys come in order, so a
    radix sort by flow (stable, linear) usually leaves the keys sorted, or in
    runs that timsort merges cheaply.
    """
    if not len(code) or code.min() < 0 or code.max() >= (1 << 15):
        return np.argsort(packed, kind="stable")
    by_flow = np.argsort(code.astype(np.int16), kind="stable")
    p = packed[by_flow]
    return by_flow if is_sorted(p) else by_flow[np.argsort(p, kind="stable")]


def take(order: np.ndarray | None, *arrays: np.ndarray) -> list[np.ndarray]:
    """Return the arrays in the order (unchanged, not copied, when order is None)."""
    return list(arrays) if order is None else [a[order] for a in arrays]


def gather(mask: np.ndarray, *columns: np.ndarray) -> list[np.ndarray]:
    """Return the rows of each column where mask is set."""
    idx = np.flatnonzero(mask)
    return [c[idx] for c in columns]


def run_starts(a: np.ndarray) -> np.ndarray:
    """Return the index of the first element of each run of equal values (empty for an empty array)."""
    return np.flatnonzero(np.concatenate([[True], a[1:] != a[:-1]])) if len(a) else np.zeros(0, np.int64)


def is_sorted(a: np.ndarray, strict: bool = False) -> bool:
    """Report whether a is in ascending order (one pass: no sort is cheaper than a fast sort)."""
    if len(a) < 2:
        return True
    return bool(np.all(a[1:] > a[:-1]) if strict else np.all(a[1:] >= a[:-1]))


def group_quantiles(code: np.ndarray, values: np.ndarray, n: int, q: list[float]) -> np.ndarray:
    """Return an (n, len(q)) array of each flow's quantiles (linear, as pandas'); NaN without rows.

    ``code`` is each value's flow code (0 to n - 1); the values keep their unit.
    """
    out = np.full((n, len(q)), np.nan)
    if not len(code):
        return out
    if is_sorted(code):
        c, v = code, values  # grouped by flow already (see split_parts)
    else:
        # A stable sort of small integers is a radix sort: linear, unlike a group-by.
        small = code.astype(np.int16) if n < (1 << 15) else code
        order = np.argsort(small, kind="stable")
        c, v = code[order], values[order]
    starts = run_starts(c)
    for a, b in zip(starts, np.append(starts[1:], len(c)), strict=True):
        out[c[a]] = np.quantile(v[a:b], q)  # one call per flow, never per sample
    return out


def first_by_key(key: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sorted distinct keys and the earliest time of each.

    Keys are int64 ``flow << SEQ_BITS | seq``, one per time (ns).
    """
    if is_sorted(key, strict=True):
        return key, t  # distinct and in order already: a single flow's sends, typically
    order = _argsort_by_flow_first(key, key >> SEQ_BITS)
    k, tt = key[order], t[order]
    starts = run_starts(k)
    return k[starts], np.minimum.reduceat(tt, starts)


def seq_layout(code: np.ndarray, seq: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Lay out a table indexed by (flow, seq): each flow's highest seq and where its slots start.

    ``max_seq`` has length n, ``base`` length n + 1: flow f's seq s is slot
    ``base[f] + s``, and ``base[-1]`` is the table's size. None when a table
    does not pay: no rows, negative seqs, or seqs so sparse that the table
    would hold over four slots a row (then callers sort).
    """
    if not len(code) or seq.min() < 0:
        return None
    max_seq = np.full(n, -1, np.int64)
    np.maximum.at(max_seq, code, seq)
    base = np.concatenate([[0], np.cumsum(max_seq + 1)])
    return (max_seq, base) if base[-1] <= 4 * len(code) + 1024 else None


NEVER = np.iinfo(np.int64).max
"""NEVER marks an empty slot of a (flow, seq) table."""


def scatter_min(size: int, slot: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Return an int64 table of size slots holding each slot's smallest value (NEVER where no row falls).

    ``slot`` is each value's slot (0 to size - 1), as laid out by seq_layout.
    """
    out = np.full(size, NEVER, np.int64)
    np.minimum.at(out, slot, values)
    return out
