"""The bottleneck's view of each flow: queueing delay, drops and CE marks, and the queue over time.

A userspace bottleneck writes ``queue.parquet`` (one row per packet, see
:mod:`antler.rig.queue_records`); a kernel one ``qdisc.parquet`` (its qdisc's
counters every rig.qdisc_interval, see :mod:`antler.rig.qdisc_stats`). A
queue row belongs to a test's flow when its 5-tuple is the flow's: the
client end's socket addresses in ``stream_info`` / ``packet_info``
(``local``, ``remote``), in either direction (an upload's data leaves the
client, a download's reaches it). A packet flow's client binds the wildcard
address, so its rows are matched on the protocol, both ports and the
server's address.

Per flow (:func:`queue_flows`): ``qdelay_ms_median`` and ``qdelay_ms_p99``
(the sojourn of the packets the bottleneck sent, ms), ``drops`` and
``marks`` (its packets the bottleneck dropped, or sent with CE set there);
for TCP flows ``ce_pct`` (the sender's last TCP_INFO ``delivered_ce`` over
``delivered``, %) and ``ecn`` (1 if the connection negotiated ECN, else 0);
for packet flows ``ce_up`` (requests that reached the server with CE) and
``ce_down`` (echoes that reached the client with CE), counted apart.

Over time (:func:`queue_series`): per flow and interval the median sojourn
(``qdelay_ms``), drops and marks; for a kernel bottleneck the queue's
backlog (``backlog_packets``, flow ``backlog``) and its drops and marks per
interval (the counters' differences; marks where the qdisc reports them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from antler.results import TestResult

QUEUE_FLOW_COLUMNS = ["qdelay_ms_median", "qdelay_ms_p99", "drops", "marks", "ce_pct", "ecn", "ce_up", "ce_down"]
"""QUEUE_FLOW_COLUMNS are the flows.parquet columns this module gives (see flows.FLOW_COLUMNS for their units)."""
SERIES_COLUMNS = ["flow", "t_s", "qdelay_ms", "backlog_packets", "drops", "marks"]
"""SERIES_COLUMNS are the queue series' columns: per flow (or ``backlog``) and interval ending at t_s."""
CE = 3
_QUEUE_READ = ["t_ns", "sojourn_ns", "verdict", "protocol", "src", "dst", "sport", "dport"]


def _parquet(test: TestResult, name: str, columns: list[str] | None = None) -> pd.DataFrame | None:
    path = test.path / f"{name}.parquet"
    if not path.exists():
        return None
    have = pq.read_schema(path).names
    cols = None if columns is None else [c for c in columns if c in have]
    return pq.read_table(path, columns=cols).to_pandas()


def _split(addr: str) -> tuple[str, int] | None:
    if not isinstance(addr, str) or ":" not in addr:
        return None
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def flow_keys(stream_info: pd.DataFrame, packet_info: pd.DataFrame) -> dict[tuple[int, int, str, int], str]:
    """Return each client end's (protocol, client port, server address, server port) mapped to its flow ID."""
    keys: dict[tuple[int, int, str, int], str] = {}
    for info, proto in ((stream_info, 6), (packet_info, 17)):
        if info is None or "local" not in info.columns:
            continue
        for row in info[~info["server"].astype(bool)].itertuples():
            local, remote = _split(str(row.local)), _split(str(row.remote))
            if local and remote:
                keys[(proto, local[1], remote[0], remote[1])] = str(row.flow)
    return keys


def matched(queue: pd.DataFrame, keys: dict[tuple[int, int, str, int], str]) -> pd.Series:
    """Return each queue row's flow ID (None when its 5-tuple is no test flow's), either direction."""
    out = pd.Series([None] * len(queue), index=queue.index, dtype=object)
    if not keys or queue.empty:
        return out
    proto = queue["protocol"].fillna(0).astype(int)
    for (p, cport, saddr, sport), flow in keys.items():
        fwd = (proto == p) & (queue["sport"] == cport) & (queue["dst"] == saddr) & (queue["dport"] == sport)
        rev = (proto == p) & (queue["dport"] == cport) & (queue["src"] == saddr) & (queue["sport"] == sport)
        out[fwd | rev] = flow
    return out


def queue_flows(test: TestResult, stream_info: pd.DataFrame, packet_info: pd.DataFrame) -> pd.DataFrame:
    """Return one row per flow with :data:`QUEUE_FLOW_COLUMNS` (NaN where the test has no record of it)."""
    parts: list[pd.DataFrame] = []
    queue = _parquet(test, "queue", _QUEUE_READ)
    if queue is not None and len(queue):
        queue = queue.assign(flow=matched(queue, flow_keys(stream_info, packet_info))).dropna(subset=["flow"])
        verdict = queue["verdict"].astype(str)
        sent = queue[verdict != "dropped"]
        g = sent.groupby("flow")["sojourn_ns"]
        parts.append(
            pd.DataFrame(
                {
                    "qdelay_ms_median": g.median() / 1e6,
                    "qdelay_ms_p99": g.quantile(0.99) / 1e6,
                    "drops": (verdict == "dropped").groupby(queue["flow"]).sum().astype(float),
                    "marks": (verdict == "marked").groupby(queue["flow"]).sum().astype(float),
                }
            )
        )
    tcp = _parquet(test, "tcp_info", ["flow", "server", "t_ns", "delivered", "delivered_ce", "ecn"])
    if tcp is not None and len(tcp) and "delivered" in tcp.columns:
        last = tcp.sort_values("t_ns").groupby("flow", observed=True).last()
        delivered = last["delivered"].astype(float)
        parts.append(
            pd.DataFrame(
                {
                    "ce_pct": (100 * last["delivered_ce"].astype(float) / delivered).where(delivered > 0),
                    "ecn": last["ecn"].astype(float),
                }
            )
        )
    pio = _parquet(test, "packet_io", ["flow", "server", "sent", "tos"])
    if pio is not None and len(pio) and "tos" in pio.columns:
        received = pio[~pio["sent"].astype(bool)]
        ce = (received["tos"].fillna(0).astype(int) & 3) == CE
        server = received["server"].astype(bool)
        flows = received["flow"].astype(str)
        parts.append(
            pd.DataFrame(
                {
                    "ce_up": ce[server].groupby(flows[server]).sum().astype(float),
                    "ce_down": ce[~server].groupby(flows[~server]).sum().astype(float),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=["flow", *QUEUE_FLOW_COLUMNS])
    both = pd.concat([p.set_axis(p.index.astype(str)) for p in parts], axis=1)
    both.index.name = "flow"
    return both.reindex(columns=QUEUE_FLOW_COLUMNS).reset_index()


def queue_series(
    test: TestResult, stream_info: pd.DataFrame, packet_info: pd.DataFrame, t0: pd.Timestamp, interval_s: float = 0.1
) -> pd.DataFrame:
    """Return the queue over time (:data:`SERIES_COLUMNS`), one row per flow and interval of interval_s seconds."""
    queue = _parquet(test, "queue", _QUEUE_READ)
    if queue is not None and len(queue):
        flow = matched(queue, flow_keys(stream_info, packet_info)).fillna("other")
        t_s = (queue["t_ns"] - t0.value) / 1e9
        bucket = (np.floor(t_s / interval_s) + 1) * interval_s
        verdict = queue["verdict"].astype(str)
        frame = pd.DataFrame(
            {
                "flow": flow,
                "t_s": bucket.round(6),
                "sojourn": queue["sojourn_ns"].where(verdict != "dropped") / 1e6,
                "drop": (verdict == "dropped").astype(int),
                "mark": (verdict == "marked").astype(int),
            }
        )
        g = frame.groupby(["flow", "t_s"])
        out = pd.DataFrame(
            {"qdelay_ms": g["sojourn"].median(), "drops": g["drop"].sum(), "marks": g["mark"].sum()}
        ).reset_index()
        out["backlog_packets"] = np.nan
        return out[SERIES_COLUMNS].sort_values(["flow", "t_s"]).reset_index(drop=True)
    qdisc = _parquet(test, "qdisc")
    if qdisc is not None and len(qdisc):
        return _kernel_series(qdisc, t0)
    return pd.DataFrame({c: pd.Series(dtype=object if c == "flow" else float) for c in SERIES_COLUMNS})


def _kernel_series(qdisc: pd.DataFrame, t0: pd.Timestamp) -> pd.DataFrame:
    """_kernel_series is the bottleneck queue's samples (the leaf qdisc, 10:, else the root) as a series."""
    leaf = qdisc[qdisc["handle"] == "10:"]
    q = (leaf if len(leaf) else qdisc[qdisc["parent"] == "root"]).sort_values("t_ns")
    marks: Any = q["ecn_marks"].astype(float).diff() if q["ecn_marks"].notna().any() else np.nan
    return pd.DataFrame(
        {
            "flow": "backlog",
            "t_s": ((q["t_ns"] - t0.value) / 1e9).to_numpy(),
            "qdelay_ms": np.nan,
            "backlog_packets": q["backlog_packets"].astype(float).to_numpy(),
            "drops": q["drops"].astype(float).diff().fillna(0).to_numpy(),
            "marks": marks if np.isscalar(marks) else marks.fillna(0).to_numpy(),
        }
    )
