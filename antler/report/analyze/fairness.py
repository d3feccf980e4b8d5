"""Fairness among a test's stream flows: the common window, each flow's share of it, and Jain's index.

The stream flows of a test compete only while all of them run, so their
goodput is compared over the **common window**: from the latest start of
any stream flow (its ``start_s``, the sender's start) to the earliest
arrival of any stream flow's last byte. Within it each flow's goodput is the
bytes its receiver read between the window's edges, each edge's byte count
interpolated linearly between the receiver's samples of its running count
(before its first sample the count rises from 0 at the receiver's start).

Jain's fairness index (R. Jain, D. Chiu, W. Hawe, "A Quantitative Measure
of Fairness and Discrimination for Resource Allocation in Shared Computer
Systems", DEC-TR-301, 1984, eq. 1) of n allocations x_1..x_n is::

    J(x) = (sum x_i)^2 / (n * sum x_i^2)

1 when all are equal, 1/n when one flow takes everything. Each flow's
**share** is x_i / sum x_j, so J = 1 / (n * sum share_i^2). Per-second
fairness is J over 1 s bins of the window (as transperf's convergence score
does): the window is cut into whole seconds from its start (a remainder
under 1 s is left out) and J taken of the flows' bytes in each bin; a bin
in which no flow delivered anything has no index.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from antler.report.analyze.columnar import Ends, flow_column, flow_time_order, sorted_flows, split_parts, take

RECEIVED_COLUMNS = ["flow", "t_s", "bytes"]
"""RECEIVED_COLUMNS are the columns of Analysis.received: each stream receiver's running byte count."""
BIN_S = 1.0
"""BIN_S is the length of the per-second fairness bins, in seconds."""


def jain(x: np.ndarray | list[float]) -> float:
    """Return Jain's fairness index (sum x)^2 / (n * sum x^2) of the allocations x (DEC-TR-301, eq. 1).

    NaN for no allocations or when all are 0 (the index is 0/0 there).
    Raises ValueError for a negative allocation (the index is defined for
    x_i >= 0).
    """
    a = np.asarray(x, dtype=float)
    if a.size and (a < 0).any():
        raise ValueError(f"Jain's index takes allocations >= 0; got {a.tolist()}")
    sq = float(np.sum(a * a))
    if not a.size or sq == 0:
        return float("nan")
    return float(np.sum(a)) ** 2 / (a.size * sq)


def received_curves(info: pd.DataFrame, io: pa.Table, t0: pd.Timestamp) -> pd.DataFrame:
    """Return each stream flow's receiver byte count over time (columns RECEIVED_COLUMNS).

    ``info`` is the stream_info rows (tinit as UTC timestamps), ``io`` the
    stream_io columns flow, server, t_ns, total_bytes and sent, ``t0`` the
    test's start. Rows are sorted by flow, then time: t_s in seconds since
    t0, bytes the receiver's running count. Each flow's first row is
    (its receiver's start, 0): its receiving end's tinit, else the first
    receive sample.
    """
    flows = sorted_flows(io, info["flow"]) if io.num_rows else []
    if not flows:
        return pd.DataFrame(
            {"flow": pd.Categorical([]), "t_s": pd.Series(dtype=float), "bytes": pd.Series(dtype=float)}
        )
    ends = Ends(info, flows, t0)
    rx = split_parts(io, flows, ["sent"], {0: ["server", "t_ns", "total_bytes"]})[0]
    t = ends.at(rx.code, rx["server"]) + rx["t_ns"]
    code, t, total = take(flow_time_order(rx.code, t), rx.code, t, rx["total_bytes"])
    has = np.bincount(code, minlength=len(flows)) > 0
    first_t = np.full(len(flows), np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_t, code, t)
    # The receiving end: the server of an upload, the client of a download.
    down = info.drop_duplicates("flow").set_index("flow")["direction"].reindex(flows).eq("down").to_numpy()
    recv_end = np.where(down, 0, 1)
    rows = np.arange(len(flows))
    known = ends.known[rows, recv_end]
    anchor_t = np.where(known, np.minimum(ends.offset[rows, recv_end], first_t), first_t)[has]
    anchor_c = rows[has]
    all_c = np.concatenate([anchor_c, code])
    all_t = np.concatenate([anchor_t, t])
    all_b = np.concatenate([np.zeros(len(anchor_c)), total.astype(float)])
    # Anchors first within a tie (stable sort on code then time, anchors placed first).
    order = np.lexsort((all_t, all_c))
    all_c, all_t, all_b = all_c[order], all_t[order], all_b[order]
    return pd.DataFrame({"flow": flow_column(all_c, flows), "t_s": all_t / 1e9, "bytes": all_b})


def common_window(flows: pd.DataFrame, received: pd.DataFrame) -> tuple[float, float, list[str]]:
    """Return the common window (start_s, end_s) of the stream flows that received data, and those flows.

    ``flows`` is the flows table (columns flow, kind, start_s), ``received``
    the receiver curves (:func:`received_curves`). The window runs from the
    latest start_s to the earliest time a flow's count first reached its
    final value (its last byte). A flow that never received a byte is not
    in it. (NaN, NaN, flows) when the flows never all ran at once.
    """
    curves = by_flow(received)
    starts = flows.set_index("flow")["start_s"]
    stream = [f for f in flows.loc[flows["kind"] == "stream", "flow"] if f in curves]
    ends_s = [last_byte_s(*curves[f]) for f in stream]
    stream = [f for f, e in zip(stream, ends_s, strict=True) if not np.isnan(e)]
    if not stream:
        return float("nan"), float("nan"), []
    a = float(max(starts[f] for f in stream))
    b = float(min(e for e in ends_s if not np.isnan(e)))
    if not b > a:
        return float("nan"), float("nan"), stream
    return a, b, stream


def by_flow(received: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return the receiver curves as a dict: flow -> (t_s, bytes) arrays, in time order."""
    if not len(received):
        return {}
    flow = received["flow"].astype(str).to_numpy()
    t, b = received["t_s"].to_numpy(float), received["bytes"].to_numpy(float)
    starts = np.flatnonzero(np.r_[True, flow[1:] != flow[:-1]])
    stops = np.r_[starts[1:], len(flow)]
    return {str(flow[i]): (t[i:j], b[i:j]) for i, j in zip(starts, stops, strict=True)}


def last_byte_s(t_s: np.ndarray, nbytes: np.ndarray) -> float:
    """Return when a receiver curve first reached its final count (its last byte), NaN if it stayed 0."""
    if not len(nbytes) or nbytes[-1] <= 0:
        return float("nan")
    return float(t_s[np.argmax(nbytes >= nbytes[-1])])


def bytes_at(curve: tuple[np.ndarray, np.ndarray], t_s: np.ndarray) -> np.ndarray:
    """Return a curve's received byte count at the times t_s (s), interpolated linearly between samples."""
    return np.interp(np.asarray(t_s, float), curve[0], curve[1])


def window_fairness(flows: pd.DataFrame, received: pd.DataFrame) -> tuple[dict[str, float], pd.Series]:
    """Return the test's fairness figures and each stream flow's share of the common window.

    The figures (a dict) are ``window_start_s``, ``window_end_s``,
    ``window_s``, ``streams`` (flows in the window), ``goodput_mbps`` (their
    bytes in the window * 8 / window_s / 1e6, summed), ``jain`` (Jain's
    index of their bytes in the window), ``jain_1s_median``,
    ``jain_1s_min`` (over the 1 s bins), ``jain_1s_bins`` (how many bins
    had an index), and ``share_<cca>`` for each CCA (the sum of its flows'
    shares) when the window's flows use more than one. The series maps each
    flow in the window to its share x_i / sum x_j (NaN figures and an empty
    series without a window).
    """
    a, b, names = common_window(flows, received)
    curves = by_flow(received)
    out: dict[str, float] = {
        "window_start_s": a,
        "window_end_s": b,
        "window_s": b - a,
        "streams": float(len(names)) if not np.isnan(a) else 0.0,
        "goodput_mbps": np.nan,
        "jain": np.nan,
        "jain_1s_median": np.nan,
        "jain_1s_min": np.nan,
        "jain_1s_bins": 0.0,
    }
    if np.isnan(a):
        return out, pd.Series(dtype=float)
    whole = int(np.floor((b - a) / BIN_S + 1e-9))
    edges = a + BIN_S * np.arange(whole + 1) if whole else np.array([a])
    x = np.array([np.diff(bytes_at(curves[f], np.array([a, b])))[0] for f in names])
    out["goodput_mbps"] = float(x.sum() * 8 / (b - a) / 1e6)
    out["jain"] = jain(x)
    share = pd.Series(x / x.sum() if x.sum() > 0 else np.full(len(x), np.nan), index=pd.Index(names, name="flow"))
    if whole:
        per_bin = np.array([np.diff(bytes_at(curves[f], edges)) for f in names])  # flows x bins
        j = np.array([jain(per_bin[:, k]) for k in range(whole)])
        j = j[~np.isnan(j)]
        if len(j):
            out["jain_1s_median"], out["jain_1s_min"] = float(np.median(j)), float(j.min())
        out["jain_1s_bins"] = float(len(j))
    cca = flows.set_index("flow")["cca"].reindex(names).fillna("")
    if cca.nunique() > 1:
        for name, s in share.groupby(cca.to_numpy()).sum().items():
            out[f"share_{name or 'unknown'}"] = float(s)
    return out, share
