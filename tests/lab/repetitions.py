"""Small synthetic result folders with repetitions (ID keys cca and rep), for the statistics and compare tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from antler.results.store import write_meta

GOODPUT = {("cubic", "1"): 40.0, ("cubic", "2"): 44.0, ("cubic", "3"): 42.0, ("bbr", "1"): 70.0, ("bbr", "2"): 74.0}
"""GOODPUT is the tcp flow's goodput (Mbit/s) of each test (cca, rep)."""
RTT_MS = {"1": 20.0, "2": 22.0, "3": 21.0}
"""RTT_MS is the udp flow's RTT median (ms) of each repetition, before rtt_scale."""


def write_reps(root: Path, rtt_scale: float = 1.0) -> Path:
    """Write a result folder of tests cca x rep, each with a flows and a summary table.

    The tcp flow's goodput is GOODPUT's, the udp flow's rtt_ms_median
    RTT_MS's times rtt_scale (a deeper buffer: a scale above 1), the
    summary's jain 1 - goodput / 1000.
    """
    for (cca, rep), mbps in GOODPUT.items():
        test = root / f"cca-{cca}_rep-{rep}"
        test.mkdir(parents=True)
        write_meta(test, {"test_id": {"cca": cca, "rep": rep}, "swept": {"cca": cca}, "status": "ok"})
        flows = pd.DataFrame(
            {
                "flow": ["tcp", "udp"],
                "cca": [cca, ""],
                "goodput_mbps": [mbps, np.nan],
                "rtt_ms_median": [np.nan, RTT_MS[rep] * rtt_scale],
            }
        )
        flows.to_parquet(test / "flows.parquet")
        pd.DataFrame({"jain": [1.0 - mbps / 1000]}).to_parquet(test / "summary.parquet")
    return root
