"""Flow outcomes: every flow the test named gets a row in flows.parquet, with its status and error.

A flow that failed to connect, or never started because the test stopped
first, has no measurements, so the metrics alone would leave it out. Its
status comes from the test's ``flow_status`` records (the executor writes one
per client runner: ok, failed with its error, cancelled with why, including
"never started"); the flows the test named come from its config.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from antler.node.items import FLOW_CANCELLED, FLOW_FAILED, FLOW_OK
from antler.node.run import Run
from antler.node.spec import ConfigError, parse

_RANK = {FLOW_FAILED: 0, FLOW_CANCELLED: 1, FLOW_OK: 2}
"""_RANK orders a flow's records: a failure says most, then a cancellation."""


def named_flows(config: dict[str, Any]) -> dict[str, str]:
    """Map each flow the test's run tree names to its kind, sorted by ID ({} if the config does not parse)."""
    test = config.get("test") if isinstance(config, dict) else None
    if not isinstance(test, dict):
        return {}
    try:
        run = parse(Run, test.get("run"), "test.run")
    except (ConfigError, ValueError):
        return {}  # a config of an older version: the records still give the statuses
    return run.flows()


def with_outcomes(
    flows: pd.DataFrame, records: pd.DataFrame, named: dict[str, str], first_error: str, recorded: bool
) -> pd.DataFrame:
    """Add the status and error columns, and a row for each named flow without measurements.

    ``records`` is the flow_status table, ``named`` the flows the config
    names (flow -> kind), ``first_error`` the test's first error message
    ("" for none) and ``recorded`` whether the results could have records
    (format 2 on). A flow's status is its worst record (failed, then
    cancelled, then ok) with that record's message; a flow without one is
    failed with the test's first error if it has measurements and the test
    had an error, cancelled ("never started") if it has none, and ok
    otherwise; in older results it is "".
    """
    have = set(flows["flow"])
    extra = [f for f in [*named, *records["flow"].tolist()] if f not in have]
    if extra:
        add = pd.DataFrame({"flow": list(dict.fromkeys(extra))})
        add["kind"] = add["flow"].map(named).fillna("")
        add["direction"] = ""
        add["cca"] = ""
        flows = pd.concat([flows, add], ignore_index=True)
    status = pd.Series("", index=flows.index, dtype=object)
    error = pd.Series("", index=flows.index, dtype=object)
    best: dict[str, tuple[str, str]] = {}
    if len(records):
        ranked = records.assign(rank=records["status"].map(_RANK).fillna(3)).sort_values(["rank", "time"])
        for flow, st, msg in zip(ranked["flow"], ranked["status"], ranked["message"], strict=True):
            best.setdefault(str(flow), (str(st), str(msg or "")))
    measured = _measured(flows)
    for i, flow in enumerate(flows["flow"]):
        if flow in best:
            status.iat[i], error.iat[i] = best[flow]
        elif not recorded:
            continue
        elif not measured[i]:
            status.iat[i] = FLOW_CANCELLED
            error.iat[i] = f"never started: {first_error}" if first_error else "never started"
        elif first_error:
            status.iat[i], error.iat[i] = FLOW_FAILED, f"no outcome recorded; the test's first error: {first_error}"
        else:
            status.iat[i] = FLOW_OK
    return flows.assign(status=status, error=error)


def _measured(flows: pd.DataFrame) -> np.ndarray:
    """_measured marks the flows with any measurement (bytes or packets counted)."""
    cols = [c for c in ("bytes", "sent", "received") if c in flows.columns]
    if not cols:
        return np.zeros(len(flows), bool)
    return flows[cols].fillna(0).to_numpy(float).sum(axis=1) > 0
