"""Per-flow metrics of stream flows, and their goodput over time.

Everything is computed from the receiver's StreamIO samples (bytes the
application actually read), so goodput excludes retransmissions and headers,
as iperf3's receiver figure does. Times within a flow end are relative to
that end's ``tinit``; the flow completion time of a ``length`` flow spans two
ends, so it uses absolute times: receiver ``tinit`` plus its last sample,
minus the sender's ``tinit``. The nodes of one host (namespaces) share a clock;
across hosts it is only as good as their clock sync.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FLOW_COLUMNS = ["flow", "kind", "direction", "cca", "bytes", "duration_s", "goodput_mbps", "fct_s"]
"""FLOW_COLUMNS are the columns of stream_flows' result, in order."""


def _ends(stream_info: pd.DataFrame) -> pd.DataFrame:
    """_ends returns one row per flow: direction, cca, length, and the sender's and receiver's tinit."""
    info = stream_info.copy()
    if "length_bytes" not in info:
        info["length_bytes"] = 0
    # The receiver is the server of an upload and the client of a download.
    info["receiver"] = info["server"] == (info["direction"] == "up")
    first = info.groupby("flow", sort=True).agg(
        direction=("direction", "first"), cca=("cca", "first"), length_bytes=("length_bytes", "max")
    )
    tinit = info.groupby(["flow", "receiver"])["tinit"].min()
    for receiver, name in ((False, "tinit_send"), (True, "tinit_recv")):
        ends = tinit.xs(receiver, level="receiver") if receiver in tinit.index.get_level_values("receiver") else None
        first[name] = ends.reindex(first.index) if ends is not None else pd.Series(pd.NaT, index=first.index)
    return first


def stream_flows(stream_info: pd.DataFrame, stream_io: pd.DataFrame) -> pd.DataFrame:
    """Stream_flows returns one row of metrics per stream flow.

    Columns: ``flow``, ``kind`` (``stream``), ``direction``, ``cca``,
    ``bytes`` (received), ``duration_s`` (receiver time to its last byte),
    ``goodput_mbps`` (bytes over that time) and ``fct_s`` (for ``length``
    flows, first byte sent to last byte received; NaN otherwise).
    """
    if stream_info.empty:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _FLOW_DTYPES.items()})
    ends = _ends(stream_info)
    recv = stream_io[~stream_io["sent"].astype(bool)]
    last = recv.groupby("flow").agg(bytes=("total_bytes", "max"), t_ns=("t_ns", "max"))
    out = ends.join(last, how="left")
    out["bytes"] = out["bytes"].fillna(0).astype("int64")
    out["duration_s"] = out["t_ns"] / 1e9
    with np.errstate(divide="ignore", invalid="ignore"):
        out["goodput_mbps"] = np.where(out["duration_s"] > 0, out["bytes"] * 8 / out["duration_s"] / 1e6, np.nan)
    last_byte = out["tinit_recv"] + pd.to_timedelta(out["t_ns"], unit="ns")
    fct = (last_byte - out["tinit_send"]).dt.total_seconds()
    completed = (out["length_bytes"] > 0) & (out["bytes"] >= out["length_bytes"])
    out["fct_s"] = fct.where(completed)
    out["kind"] = "stream"
    out = out.reset_index()
    return out[FLOW_COLUMNS].astype(_FLOW_DTYPES)


_FLOW_DTYPES = {
    "flow": "object",
    "kind": "object",
    "direction": "object",
    "cca": "object",
    "bytes": "int64",
    "duration_s": "float64",
    "goodput_mbps": "float64",
    "fct_s": "float64",
}


def stream_goodput_series(stream_io: pd.DataFrame, interval_s: float = 0.1) -> pd.DataFrame:
    """Stream_goodput_series returns each flow's goodput per interval, from its receiver's samples.

    Columns: ``flow``, ``t_s`` (the end of the interval, relative to the
    receiver's tinit) and ``goodput_mbps`` (bytes read in the interval).
    Intervals without a read count as zero.
    """
    cols = {
        "flow": pd.Series(dtype="object"),
        "t_s": pd.Series(dtype="float64"),
        "goodput_mbps": pd.Series(dtype="float64"),
    }
    recv = stream_io[~stream_io["sent"].astype(bool)]
    if recv.empty:
        return pd.DataFrame(cols)
    interval_ns = round(interval_s * 1e9)
    binned = recv.assign(bin=recv["t_ns"] // interval_ns).groupby(["flow", "bin"])["total_bytes"].max()
    # Every bin from 0 to each flow's last, the total carried forward over silent bins.
    last_bin = binned.reset_index().groupby("flow")["bin"].max()
    counts = last_bin.to_numpy().astype("int64") + 1
    full = pd.MultiIndex.from_arrays(
        [np.repeat(last_bin.index.to_numpy(), counts), np.concatenate([np.arange(n) for n in counts])],
        names=["flow", "bin"],
    )
    totals = binned.reindex(full).groupby(level="flow").ffill().fillna(0)
    per_bin = totals.groupby(level="flow").diff().fillna(totals)
    out = per_bin.rename("bytes").reset_index()
    out["t_s"] = (out["bin"] + 1) * interval_s
    out["goodput_mbps"] = out["bytes"] * 8 / interval_s / 1e6
    return out[["flow", "t_s", "goodput_mbps"]].astype({"flow": "object", "t_s": "float64", "goodput_mbps": "float64"})


def write_stream_flows(directory: Path) -> Path | None:
    """Write_stream_flows writes flows.parquet for a test folder with stream flows; it never overwrites."""
    info_path, io_path, out = (
        directory / "stream_info.parquet",
        directory / "stream_io.parquet",
        directory / "flows.parquet",
    )
    if not info_path.exists() or out.exists():
        return None
    stream_io = (
        pq.read_table(io_path).to_pandas()
        if io_path.exists()
        else pd.DataFrame({"flow": [], "t_ns": [], "total_bytes": [], "sent": []})
    )
    flows = stream_flows(pq.read_table(info_path).to_pandas(), stream_io)
    pq.write_table(pa.Table.from_pandas(flows, preserve_index=False), out)
    return out
