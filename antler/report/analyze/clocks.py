"""Clocks of cross-host flows: each flow end's start moved onto the driver's clock, and how far to trust it.

A flow end's ``tinit`` is by its node's clock. Where meta.json gives a node's
measured clock offset to the driver (``nodes[].clock_offset_ns``, 0 on the
driver's own kernel), :func:`on_driver_clock` moves its ``tinit`` onto the
driver's clock, so a one-way delay between two hosts is as good as the two
offsets: each is within half its measurement's round trip
(``clock_rtt_ns``), which :func:`owd_clocks` sums per packet flow
(:attr:`antler.report.analyze.Analysis.clocks`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

CLOCK_COLUMNS = ["flow", "from_host", "to_host", "same_clock", "uncertainty_ms"]
"""CLOCK_COLUMNS are the columns of :attr:`antler.report.analyze.Analysis.clocks` (see :func:`owd_clocks`)."""


def on_driver_clock(info: pd.DataFrame, nodes: list[dict[str, Any]]) -> pd.DataFrame:
    """Move each flow end's ``tinit`` from its node's clock onto the driver's.

    ``nodes`` is meta.json's list of node facts; a node's ``clock_offset_ns``
    is its clock minus the driver's (ns). Ends on nodes without one (the
    driver's own, or a launcher that measures none) are left as they are.
    """
    offsets = {str(n.get("id")): int(n.get("clock_offset_ns") or 0) for n in nodes}
    if not len(info) or not any(offsets.values()):
        return info
    shift = info["node_id"].astype(str).map(offsets).fillna(0).astype("int64")
    return info.assign(tinit=info["tinit"] - pd.to_timedelta(shift, unit="ns"))


def owd_clocks(packet_info: pd.DataFrame, nodes: list[dict[str, Any]], driver_host: str = "") -> pd.DataFrame:
    """List the packet flows whose client and server ran on different hosts (CLOCK_COLUMNS).

    For each: the hosts (client to server, the direction of the one-way
    delay; a node without facts is on ``driver_host``), whether they share a
    clock (one kernel: no offset to measure), and the one-way delay's
    uncertainty in ms, the sum of the two offsets' (half the fastest round
    trip each, plus its launcher's for a node launched by another node; 0 for
    a node on the driver's clock).
    """
    by_id = {str(n.get("id")): n for n in nodes}

    def host(node_id: str) -> str:
        return str(by_id.get(node_id, {}).get("host") or driver_host)

    def same(node_id: str) -> bool:
        return bool(by_id.get(node_id, {}).get("same_clock", True))

    def uncertainty_ns(node_id: str, depth: int = 0) -> float:
        # A node launched by another node was measured against that one's clock,
        # whose own offset's error adds to its (clock.relative_to adds the offsets).
        n = by_id.get(node_id, {})
        if same(node_id) or depth > len(by_id):
            return 0.0
        parent = str(n.get("parent") or "")
        own = float(n.get("clock_rtt_ns") or 0) / 2
        return own + (uncertainty_ns(parent, depth + 1) if parent in by_id else 0.0)

    rows = []
    for flow, ends in packet_info.groupby("flow", sort=True, observed=True):
        at_server = ends["server"].astype(bool)
        client, server = ends.loc[~at_server, "node_id"], ends.loc[at_server, "node_id"]
        if not len(client) or not len(server):
            continue
        c, sv = str(client.iloc[0]), str(server.iloc[0])
        if host(c) == host(sv):
            continue
        rows.append(
            (str(flow), host(c), host(sv), same(c) and same(sv), (uncertainty_ns(c) + uncertainty_ns(sv)) / 1e6)
        )
    return pd.DataFrame(rows, columns=CLOCK_COLUMNS)
