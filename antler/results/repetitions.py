"""Statistics across repetitions: per combination of the swept keys, the mean, median and a bootstrap interval.

A sweep with ``sweep.repeat: N`` runs each combination of its other swept
keys N times, the repetition being the ID key ``rep`` (1..N). Here the
repetitions of a combination are pooled: for any column of a test's table
(``flows``, per flow; ``summary``, per test) :func:`intervals` gives each
combination's number of values, mean, median and a confidence interval of
the mean.

The interval is the **percentile bootstrap** (B. Efron, R. J. Tibshirani,
*An Introduction to the Bootstrap*, Chapman & Hall 1993, ch. 13.3): draw
``resamples`` samples of n values with replacement from the n observed
values, take each one's mean, and the interval is the ``(1 - confidence) /
2`` and ``(1 + confidence) / 2`` quantiles of those means (numpy's linear
interpolation). The generator is numpy's PCG64 seeded with ``seed``, so the
same values give the same interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from antler.results.tables import Results, id_columns, load

REP_KEY = "rep"
"""REP_KEY is the ID key of a repetition (1..N), left out of the combinations."""
INTERVAL_COLUMNS = ["n", "mean", "median", "ci_low", "ci_high"]
"""INTERVAL_COLUMNS are the statistics :func:`intervals` gives per combination, after its keys."""


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Return the percentile-bootstrap confidence interval (low, high) of the mean of values.

    Efron & Tibshirani 1993, ch. 13.3: ``resamples`` resamples with
    replacement, each of len(values) values, from numpy's generator seeded
    with ``seed``; the interval is the (1 - confidence) / 2 and (1 +
    confidence) / 2 quantiles of the resamples' means. NaN values are left
    out; (NaN, NaN) without any value. Raises ValueError for a confidence
    outside (0, 1) or fewer than one resample.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1; got {resamples!r}")
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if not len(x):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    alpha = 1 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def intervals(
    results: Results | str | Path,
    metric: str,
    table: str = "flows",
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Return, per combination of the ID keys other than ``rep`` (and per flow), the statistics of a metric.

    ``results`` is a loaded result folder or its path; ``metric`` a column
    of ``table`` (``flows``: one value per flow and test, grouped by flow
    too; ``summary``: one per test). The result has a row per combination:
    its key columns (as :meth:`Results.concat` names them, ``id_<key>``
    beside a table column of that name; ``flow`` for flows), then
    INTERVAL_COLUMNS: the number of (non-NaN) values, their mean and
    median, and the bootstrap interval of the mean (:func:`bootstrap_ci`;
    every combination with the same seed). Raises KeyError naming the
    metric when the table has no such column.
    """
    res = results if isinstance(results, Results) else load(results)
    df = res.concat(table)
    if metric not in df.columns:
        raise KeyError(f"{table} has no column {metric!r}; it has {sorted(map(str, df.columns))}")
    keys: list[str] = []
    for test in res.values():
        try:
            own = test[table].columns
        except KeyError:
            continue
        for k, name in id_columns(test.id, own).items():
            if k != REP_KEY and name not in keys and name in df.columns:
                keys.append(name)
    if table == "flows" and "flow" in df.columns:
        keys.append("flow")
    rows = []
    for combo, g in df.groupby(keys, sort=True, dropna=False) if keys else [((), df)]:
        v = pd.to_numeric(g[metric], errors="coerce").to_numpy(float)
        v = v[~np.isnan(v)]
        lo, hi = bootstrap_ci(v, confidence, resamples, seed)
        mean = float(v.mean()) if len(v) else float("nan")
        median = float(np.median(v)) if len(v) else float("nan")
        combo_t = combo if isinstance(combo, tuple) else (combo,)
        rows.append([*combo_t, float(len(v)), mean, median, lo, hi])
    return pd.DataFrame(rows, columns=[*keys, *INTERVAL_COLUMNS])
