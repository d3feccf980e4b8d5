"""Comparing two result folders: per test and metric, both values, the change and a verdict.

Tests are matched by ID; a sweep's repetitions (ID key ``rep``) are pooled,
so a test is a combination of the other ID keys. Per combination, flow and
metric, each folder's value is the mean over its repetitions, with the 95 %
percentile-bootstrap interval of the mean when it has two or more
(antler.results.repetitions; Efron & Tibshirani 1993, ch. 13.3).

The verdict:

- with an interval on both sides, the change is beyond noise when the two
  intervals do not overlap;
- otherwise (one run on a side) when it is more than ``tolerance`` (a
  fraction, 5 % by default) of the old value's magnitude;
- a change beyond noise is ``better`` or ``worse`` by the metric's direction
  (:data:`DIRECTION`: goodput and fairness up, delay, loss, FCT and
  retransmits down), ``changed`` for a metric without one; else ``within
  noise``. A value on one side only is ``missing``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from antler.results.repetitions import REP_KEY, bootstrap_ci
from antler.results.tables import Results, load
from antler.testid import id_text

DIRECTION: dict[str, int] = {
    "goodput_mbps": 1,
    "jain": 1,
    "jain_1s_median": 1,
    "jain_1s_min": 1,
    "fct_s": -1,
    "rtt_ms_median": -1,
    "rtt_ms_p99": -1,
    "rtt_ms_loaded_median": -1,
    "rtt_ms_loaded_p99": -1,
    "induced_latency_ms": -1,
    "owd_ms_median": -1,
    "owd_ms_p99": -1,
    "loss_pct": -1,
    "retrans": -1,
}
"""DIRECTION is +1 where a higher value is better, -1 where lower is; other metrics have no better."""
FLOW_METRICS = (
    "goodput_mbps",
    "share",
    "fct_s",
    "rtt_ms_median",
    "rtt_ms_p99",
    "rtt_ms_loaded_median",
    "induced_latency_ms",
    "loss_pct",
    "retrans",
)
"""FLOW_METRICS are the flows.parquet columns compared per flow."""
SUMMARY_METRICS = ("goodput_mbps", "jain", "jain_1s_median", "rtt_ms_loaded_median", "induced_latency_ms", "loss_pct")
"""SUMMARY_METRICS are the summary.parquet columns compared per test (then any ``share_<cca>``)."""
VERDICTS = ("better", "worse", "changed", "within noise", "missing")
"""VERDICTS are the verdicts a comparison row can have."""
COLUMNS = [
    "test",
    "table",
    "flow",
    "metric",
    "old_n",
    "old_mean",
    "old_low",
    "old_high",
    "new_n",
    "new_mean",
    "new_low",
    "new_high",
    "change",
    "verdict",
]
"""COLUMNS are the columns of :func:`compare`'s table; ``change`` is new mean minus old mean."""


@dataclass(frozen=True)
class Side:
    """One folder's value of a metric: the number of runs, their mean and its interval (NaN with one run)."""

    n: int
    mean: float
    low: float
    high: float

    @staticmethod
    def of(values: list[float], seed: int = 0) -> Side:
        """Return the side of the non-NaN values (n = 0 and NaN without any)."""
        v = np.asarray(values, float)
        v = v[~np.isnan(v)]
        if not len(v):
            return Side(0, float("nan"), float("nan"), float("nan"))
        low, high = bootstrap_ci(v, seed=seed) if len(v) > 1 else (float("nan"), float("nan"))
        return Side(len(v), float(v.mean()), low, high)


def verdict(metric: str, old: Side, new: Side, tolerance: float = 0.05) -> str:
    """Return the verdict on one metric's change from old to new (see the module for the rule)."""
    if old.n == 0 or new.n == 0:
        return "missing" if old.n != new.n else "within noise"
    change = new.mean - old.mean
    if old.n > 1 and new.n > 1:
        beyond = new.low > old.high or new.high < old.low
    else:
        beyond = abs(change) > tolerance * abs(old.mean) if old.mean else change != 0
    if not beyond:
        return "within noise"
    direction = DIRECTION.get(metric, 0)
    if not direction:
        return "changed"
    return "better" if change * direction > 0 else "worse"


def _values(results: Results) -> dict[tuple[str, str, str, str], list[float]]:
    """_values maps (combination, table, flow, metric) to each repetition's value."""
    out: dict[tuple[str, str, str, str], list[float]] = {}
    for test in results.values():
        combo = id_text({k: v for k, v in test.id.items() if k != REP_KEY})
        for table, metrics in (("flows", FLOW_METRICS), ("summary", SUMMARY_METRICS)):
            try:
                df = test[table]
            except KeyError:
                continue
            names = [m for m in metrics if m in df.columns]
            if table == "summary":
                names += sorted(str(c) for c in df.columns if str(c).startswith("share_"))
            for rec in df.to_dict("records"):
                flow = str(rec.get("flow", "")) if table == "flows" else ""
                for m in names:
                    out.setdefault((combo, table, flow, m), []).append(_float(rec.get(m)))
    return out


def compare(old: Results | str | Path, new: Results | str | Path, tolerance: float = 0.05) -> pd.DataFrame:
    """Return the comparison of two result folders, a row per combination, table, flow and metric (COLUMNS).

    Rows are in the order of the tests, then flows (the summary's, flow "",
    after them), then metrics. A metric both sides lack is left out.
    """
    a = _values(old if isinstance(old, Results) else load(old))
    b = _values(new if isinstance(new, Results) else load(new))
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        o, n = Side.of(a.get(key, [])), Side.of(b.get(key, []))
        if o.n == 0 and n.n == 0:
            continue
        rows.append(
            [
                *key,
                o.n,
                o.mean,
                o.low,
                o.high,
                n.n,
                n.mean,
                n.low,
                n.high,
                n.mean - o.mean,
                verdict(key[3], o, n, tolerance),
            ]
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def value_text(n: int, mean: float, low: float, high: float) -> str:
    """Return a side's value as text: ``42.1``, or ``42.1 [40.3, 44.0]`` with an interval, ``-`` for none."""
    if n == 0:
        return "-"
    if np.isnan(low):
        return f"{mean:.4g}"
    return f"{mean:.4g} [{low:.4g}, {high:.4g}]"


def _float(v: object) -> float:
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
