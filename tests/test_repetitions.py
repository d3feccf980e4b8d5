"""Statistics across repetitions (antler.results.intervals) on small synthetic result folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import antler.results
from antler.results.repetitions import bootstrap_ci
from antler.results.store import write_meta

pytestmark = pytest.mark.no_netns

GOODPUT = {("cubic", "1"): 40.0, ("cubic", "2"): 44.0, ("cubic", "3"): 42.0, ("bbr", "1"): 70.0, ("bbr", "2"): 74.0}


def write_reps(root: Path) -> Path:
    """Write a result folder of tests cca x rep, each with a flows and a summary table."""
    for (cca, rep), mbps in GOODPUT.items():
        test = root / f"cca-{cca}_rep-{rep}"
        test.mkdir(parents=True)
        write_meta(test, {"test_id": {"cca": cca, "rep": rep}, "swept": ["cca", "rep"]})
        flows = pd.DataFrame({"flow": ["tcp", "udp"], "cca": [cca, ""], "goodput_mbps": [mbps, np.nan]})
        flows.to_parquet(test / "flows.parquet")
        pd.DataFrame({"jain": [1.0 - mbps / 1000]}).to_parquet(test / "summary.parquet")
    return root


def test_bootstrap_of_two_values_is_their_range() -> None:
    """Resampling [0, 1] gives means 0, 1/2, 1 with odds 1/4, 1/2, 1/4: the 2.5 % and 97.5 % points are 0 and 1."""
    assert bootstrap_ci([0.0, 1.0], resamples=20_000, seed=3) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_follows_the_percentile_method() -> None:
    x = np.random.default_rng(11).normal(10, 2, 30)
    lo, hi = bootstrap_ci(x, seed=5)
    assert (lo, hi) == bootstrap_ci(x, seed=5)
    # The percentile method by hand (Efron & Tibshirani 1993, 13.3), with the same generator.
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 30, size=(10_000, 30))
    by_hand = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    assert (lo, hi) == pytest.approx(tuple(by_hand), abs=1e-12)
    # Close to the normal interval of the mean: mean +- 1.96 s / sqrt(n) (population s).
    half = 1.96 * x.std() / np.sqrt(30)
    assert lo == pytest.approx(x.mean() - half, abs=0.15) and hi == pytest.approx(x.mean() + half, abs=0.15)
    assert bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)
    assert all(np.isnan(v) for v in bootstrap_ci([np.nan]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)


def test_intervals_per_combination_leave_rep_out(tmp_path: Path) -> None:
    root = write_reps(tmp_path)
    iv = antler.results.intervals(root, "goodput_mbps")
    assert list(iv.columns) == ["id_cca", "flow", "n", "mean", "median", "ci_low", "ci_high"]
    tcp = iv[iv["flow"] == "tcp"].set_index("id_cca")
    assert tcp.loc["cubic", "n"] == 3 and tcp.loc["cubic", "mean"] == pytest.approx(42.0)
    assert tcp.loc["cubic", "median"] == 42.0 and tcp.loc["bbr", "mean"] == pytest.approx(72.0)
    assert tcp.loc["cubic", "ci_low"] <= 42.0 <= tcp.loc["cubic", "ci_high"]
    assert (tcp.loc["cubic", "ci_low"], tcp.loc["cubic", "ci_high"]) == bootstrap_ci([40.0, 44.0, 42.0])
    assert iv[iv["flow"] == "udp"]["n"].eq(0).all()
    s = antler.results.intervals(root, "jain", table="summary").set_index("cca")
    assert s.loc["bbr", "mean"] == pytest.approx(1 - 0.072) and s.loc["bbr", "n"] == 2
    with pytest.raises(KeyError, match="no column 'jian'"):
        antler.results.intervals(root, "jian", table="summary")
