"""Expectations: ``test.expect``, conditions on a test's results that pass or fail, checked after its analysis.

Each expectation is one line of a small grammar (no Python is evaluated)::

    expectation := table "." [flow "."] column op number [unit]
    table       := "flows" | "summary"
    flow        := a flow ID of the test, or "*" (every flow the column applies to); flows only
    column      := a numeric column of flows.parquet (FLOW_COLUMNS) or summary.parquet
                   (SUMMARY_COLUMNS, or share_<cca>)
    op          := ">=" | "<=" | ">" | "<" | "==" | "!="
    unit        := in the column's dimension: ns us µs ms s (times), bps kbps Mbps Gbps
                   bit/s kbit/s Mbit/s Gbit/s (rates), B kB MB GB (bytes), % (percentages)

e.g. ``flows.tcp.goodput_mbps >= 40``, ``summary.jain >= 0.9``,
``flows.udp.rtt_ms_p99 < 50ms``, ``flows.*.loss_pct <= 1 %``. A number with
a unit is converted to the column's (the first word of its name that is a
unit: ``ms``, ``s``, ``us``, ``mbps``, ``pct``, ``bytes``; ``rtt_ms_p99`` is
in ms); a unit of another dimension is
refused. A value that is NaN (the flow has no such figure) fails.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TABLES = ("flows", "summary")
"""TABLES are the tables an expectation can name."""
_TEXT_COLUMNS = {"flow", "kind", "direction", "cca", "status", "error"}
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_SYNTAX = re.compile(
    r"^\s*(?P<table>\w+)\.(?:(?P<flow>.+)\.)?(?P<column>\w+)\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<number>[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(?P<unit>[A-Za-zµ%/]*)\s*$"
)
# The dimension and scale (to its base unit) of each unit, and of each column suffix.
_UNITS: dict[str, tuple[str, float]] = {
    "ns": ("time", 1e-9), "us": ("time", 1e-6), "µs": ("time", 1e-6), "ms": ("time", 1e-3), "s": ("time", 1.0),
    "bps": ("rate", 1.0), "bit/s": ("rate", 1.0), "kbps": ("rate", 1e3), "kbit/s": ("rate", 1e3),
    "Mbps": ("rate", 1e6), "Mbit/s": ("rate", 1e6), "Gbps": ("rate", 1e9), "Gbit/s": ("rate", 1e9),
    "B": ("bytes", 1.0), "kB": ("bytes", 1e3), "MB": ("bytes", 1e6), "GB": ("bytes", 1e9),
    "%": ("pct", 1.0),
}  # fmt: skip
# A column's unit is the first of its name's "_"-separated words that names one (rtt_ms_p99: ms).
_COLUMN_UNITS = {"ns": "ns", "us": "us", "ms": "ms", "s": "s", "mbps": "Mbps", "pct": "%", "bytes": "B"}


class ExpectationError(ValueError):
    """An expectation that does not parse or names an unknown table, flow or column (message says which)."""


@dataclass(frozen=True)
class Expectation:
    """One parsed expectation: table, flow ("" for summary, "*" for every flow), column, op, the bound in the column's unit."""

    text: str
    table: str
    flow: str
    column: str
    op: str
    bound: float


def parse_expectation(text: str, flows: list[str] | None = None) -> Expectation:
    """Parse one expectation; with ``flows``, refuse a flow that is not among them.

    Raises ExpectationError naming what is wrong: the syntax, an unknown
    table, column or flow, a flow on the summary table, or a unit of
    another dimension than the column's.
    """
    from antler.report.analyze import FLOW_COLUMNS, SUMMARY_COLUMNS

    m = _SYNTAX.match(text)
    if m is None:
        raise ExpectationError(f"{text!r} is not TABLE.[FLOW.]COLUMN OP NUMBER [UNIT], e.g. 'summary.jain >= 0.9'")
    table, flow, column, op = m["table"], m["flow"] or "", m["column"], m["op"]
    if table not in TABLES:
        raise ExpectationError(f"{text!r}: unknown table {table!r} (tables: {', '.join(TABLES)})")
    if table == "flows":
        known = [c for c in FLOW_COLUMNS if c not in _TEXT_COLUMNS]
        if not flow:
            raise ExpectationError(f"{text!r}: flows needs a flow ID or '*': flows.FLOW.{column}")
        if flow != "*" and flows is not None and flow not in flows:
            shown = ", ".join(flows) or "none"
            raise ExpectationError(f"{text!r}: unknown flow {flow!r} (flows: {shown})")
    else:
        known = list(SUMMARY_COLUMNS)
        if flow:
            raise ExpectationError(f"{text!r}: the summary has one row per test, no flow: summary.{column}")
    if column not in known and not (table == "summary" and re.fullmatch(r"share_\w+", column)):
        raise ExpectationError(f"{text!r}: unknown column {column!r} of {table} (columns: {', '.join(known)})")
    return Expectation(text, table, flow, column, op, float(m["number"]) * _scale(text, column, m["unit"]))


def check_expectations(texts: list[str], flows: list[str]) -> list[Expectation]:
    """Parse every expectation against the test's flows; raises ExpectationError for the first bad one."""
    return [parse_expectation(t, flows) for t in texts]


def evaluate(e: Expectation, flows: Any, summary: Any) -> dict[str, Any]:
    """Return the outcome of one expectation on a test's flows and summary tables (pandas frames).

    The outcome is ``{"expect": text, "value": ..., "pass": bool}``: the
    value is the column's (None when NaN or absent, which fails); for flow
    ``*`` a map of each flow with a value to its value, passing when all
    do (and some flow has one).
    """
    check = _OPS[e.op]
    if e.table == "summary":
        value = _num(summary[e.column].iloc[0]) if e.column in summary.columns and len(summary) else None
        return {"expect": e.text, "value": value, "pass": value is not None and check(value, e.bound)}
    rows = flows.set_index("flow")[e.column] if e.column in flows.columns else None
    if e.flow != "*":
        value = _num(rows.get(e.flow)) if rows is not None else None
        return {"expect": e.text, "value": value, "pass": value is not None and check(value, e.bound)}
    values = {} if rows is None else {str(f): v for f, x in rows.items() if (v := _num(x)) is not None}
    ok = bool(values) and all(check(v, e.bound) for v in values.values())
    return {"expect": e.text, "value": values, "pass": ok}


def apply_expectations(directory: Path, meta: dict[str, Any]) -> list[str]:
    """Evaluate a stored test's ``test.expect`` on its flows and summary tables; return the ones that failed.

    Each outcome goes into ``meta["expectations"]`` (see :func:`evaluate`);
    when any failed, the test's ``status`` becomes ``failed`` and
    ``failed_expectations`` names them. meta.json is written when there
    are expectations. A table that is missing (its analysis failed) makes
    each expectation on it fail.
    """
    import pandas as pd

    from antler.results.store import write_meta

    texts = ((meta.get("config") or {}).get("test") or {}).get("expect") or []
    if not texts:
        return []
    tables = {}
    for name in TABLES:
        path = directory / f"{name}.parquet"
        tables[name] = pd.read_parquet(path) if path.exists() else pd.DataFrame({"flow": []})
    outcomes = []
    for text in texts:
        try:
            outcomes.append(evaluate(parse_expectation(text), tables["flows"], tables["summary"]))
        except ExpectationError as err:
            outcomes.append({"expect": text, "value": None, "pass": False, "error": str(err)})
    failed = [o["expect"] for o in outcomes if not o["pass"]]
    meta["expectations"] = outcomes
    if failed:
        meta["status"] = "failed"
        meta["failed_expectations"] = failed
    write_meta(directory, meta)
    return failed


def _scale(text: str, column: str, unit: str) -> float:
    """_scale is the factor from the number's unit to the column's (1 without a unit)."""
    if not unit:
        return 1.0
    if unit not in _UNITS:
        raise ExpectationError(f"{text!r}: unknown unit {unit!r} (units: {', '.join(_UNITS)})")
    own = next((_COLUMN_UNITS[w] for w in column.split("_") if w in _COLUMN_UNITS), None)
    if own is None or _UNITS[own][0] != _UNITS[unit][0]:
        has = f"is in {own}" if own else "has no unit"
        raise ExpectationError(f"{text!r}: {column} {has}; {unit!r} does not convert to it")
    return _UNITS[unit][1] / _UNITS[own][1]


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v
