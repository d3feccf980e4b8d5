"""Test-level metrics: the common window, shares, Jain's index, per-second fairness and latency under load.

The stored test here is three uploads at known rates and an echo flow with
known RTTs, so every figure is worked out by hand from the rates (and again
from the stored stream_io table) and compared to 1e-9.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from antler.node.items import StreamInfo
from antler.report.analyze import FLOW_COLUMNS, SUMMARY_COLUMNS, analyze, jain
from antler.report.pipeline import report_outputs, run_after
from antler.report.spec import After
from antler.results import load
from antler.results.store import TestWriter, write_meta
from tests.data.make_fixture import T0, ms, stream_io
from tests.lab.competition import write_competition

pytestmark = pytest.mark.no_netns


def test_jain_follows_its_definition() -> None:
    assert jain([1, 1, 1, 1]) == 1.0
    assert jain([5, 0, 0, 0]) == pytest.approx(0.25, abs=1e-12)  # one takes all: 1/n
    assert jain([1, 2, 3]) == pytest.approx(36 / 42, abs=1e-12)
    assert np.isnan(jain([])) and np.isnan(jain([0, 0]))
    with pytest.raises(ValueError, match="allocations >= 0"):
        jain([1, -1])


def test_window_shares_and_fairness_match_the_hand_values(tmp_path: Path) -> None:
    a = analyze(load(write_competition(tmp_path))["."])
    s = a.summary.iloc[0]
    assert list(a.summary.columns) == [*SUMMARY_COLUMNS, "share_bbr", "share_cubic"]
    assert (s["window_start_s"], s["window_end_s"], s["streams"]) == (2.0, 5.0, 3.0)
    # In [2, 5] s: a 90 Mbit, b 10 + 20 + 30 = 60 Mbit, c 60 Mbit.
    x = {"a": 90.0, "b": 60.0, "c": 60.0}
    assert s["goodput_mbps"] == pytest.approx(210 / 3, abs=1e-9)
    assert s["jain"] == pytest.approx(210**2 / (3 * (90**2 + 60**2 + 60**2)), abs=1e-9)
    # Per second: (30, 10, 20), (30, 20, 20), (30, 30, 20).
    bins = [60**2 / (3 * 1400), 70**2 / (3 * 1700), 80**2 / (3 * 2200)]
    assert s["jain_1s_median"] == pytest.approx(bins[1], abs=1e-9)
    assert s["jain_1s_min"] == pytest.approx(bins[0], abs=1e-9)
    assert s["jain_1s_bins"] == 3
    assert s["share_cubic"] == pytest.approx(150 / 210, abs=1e-9)
    assert s["share_bbr"] == pytest.approx(60 / 210, abs=1e-9)
    f = a.flows.set_index("flow")
    for flow, v in x.items():
        assert f.loc[flow, "share"] == pytest.approx(v / 210, abs=1e-9)
    assert f["share"].isna()["ping"]
    assert s["link_mbps"] == 100 and s["goodput_mbps"] <= s["link_mbps"]


def test_jain_from_the_stored_tables(tmp_path: Path) -> None:
    """The pipeline's flows.parquet and summary.parquet agree with Jain computed from stored stream_io."""
    test = write_competition(tmp_path)
    assert run_after(test, After()) == []
    assert {"flows.parquet", "summary.parquet"} <= report_outputs(After())
    summary = pq.read_table(test / "summary.parquet").to_pandas()
    flows = pq.read_table(test / "flows.parquet").to_pandas()
    assert list(flows.columns) == FLOW_COLUMNS
    io = pq.read_table(test / "stream_io.parquet").to_pandas()
    info = pq.read_table(test / "stream_info.parquet").to_pandas().drop_duplicates("flow").set_index("flow")
    t0 = min(info["tinit"].min(), pq.read_table(test / "packet_info.parquet").to_pandas()["tinit"].min())
    x = []
    for flow, rows in io[~io["sent"]].groupby("flow"):
        t_s = (info.loc[flow, "tinit"] - t0).total_seconds() + rows["t_ns"].to_numpy() / 1e9
        at = {round(float(t), 6): float(b) for t, b in zip(t_s, rows["total_bytes"], strict=True)}
        x.append(at[5.0] - at.get(2.0, 0.0))
    by_hand = sum(x) ** 2 / (len(x) * sum(v * v for v in x))
    assert summary["jain"].iloc[0] == pytest.approx(by_hand, abs=1e-9)
    shares = flows["share"].dropna().to_numpy()
    assert 1 / (len(shares) * np.sum(shares**2)) == pytest.approx(by_hand, abs=1e-9)
    assert load(tmp_path).concat("summary")["jain"].iloc[0] == pytest.approx(by_hand, abs=1e-9)


def test_latency_under_load_splits_idle_and_loaded(tmp_path: Path) -> None:
    a = analyze(load(write_competition(tmp_path))["."])
    ping = a.flows.set_index("flow").loc["ping"]
    # Loaded is [1, 6] s (a starts at 1, b's last byte at 6): 100 sends, half 30 ms and half 40 ms.
    assert ping["rtt_ms_idle_median"] == pytest.approx(10.0, abs=1e-6)
    assert ping["rtt_ms_loaded_median"] == pytest.approx(35.0, abs=1e-6)
    assert ping["rtt_ms_loaded_p99"] == pytest.approx(40.0, abs=1e-6)
    assert ping["induced_latency_ms"] == pytest.approx(25.0, abs=1e-6)
    s = a.summary.iloc[0]
    assert s["induced_latency_ms"] == pytest.approx(25.0, abs=1e-6)
    assert s["rtt_ms_median"] == pytest.approx(30.0, abs=1e-6)  # 40 of 10 ms, 50 of 30, 50 of 40
    for c in ("rtt_ms_idle_median", "induced_latency_ms"):
        assert a.flows.loc[a.flows["kind"] == "stream", c].isna().all()


def test_four_equal_flows_never_exceed_the_link(tmp_path: Path) -> None:
    """Four flows sharing 100 Mbit/s at 25 each (ragged sample times): Jain 1, total at most the link."""
    w = TestWriter(tmp_path)
    rng = np.random.default_rng(7)
    for i in range(4):
        flow = f"s{i}"
        w.write(StreamInfo(T0 + ms(100 * i), flow, "up", "cubic", False))
        w.write(StreamInfo(T0 + ms(100 * i), flow, "up", "cubic", True))
        t = np.sort(rng.uniform(0, 5, 700))
        w.write(stream_io(flow, True, False, t, np.round(t * 25e6 / 8)))
    w.close()
    write_meta(tmp_path, {"test_id": {"t": "x"}, "rig": {"rate_bps": 100e6}})
    s = analyze(load(tmp_path)["."]).summary.iloc[0]
    assert s["jain"] == pytest.approx(1.0, abs=1e-6)
    assert 99.0 < s["goodput_mbps"] <= s["link_mbps"] + 1e-6
    assert s["jain_1s_min"] == pytest.approx(1.0, abs=1e-4)


def test_flows_that_never_overlap_have_no_window(tmp_path: Path) -> None:
    w = TestWriter(tmp_path)
    for flow, start in (("early", 0.0), ("late", 3.0)):
        w.write(StreamInfo(T0 + ms(start * 1000), flow, "up", "cubic", True))
        t = np.arange(1, 101) * 0.01
        w.write(stream_io(flow, True, False, t, np.round(t * 1e6)))
    w.close()
    write_meta(tmp_path, {"test_id": {"t": "x"}})
    a = analyze(load(tmp_path)["."])
    assert np.isnan(a.summary["jain"].iloc[0]) and np.isnan(a.summary["window_s"].iloc[0])
    assert a.flows["share"].isna().all()


def test_stored_sweep_fixture_has_a_summary() -> None:
    """One stream flow: Jain is 1 and its share is all; the echo flow's idle lead is split off."""
    a = analyze(load(Path(__file__).parent / "data" / "sweep" / "experiment-cubic_cca-cubic_rig_rtt-10ms")["."])
    s = a.summary.iloc[0]
    assert s["jain"] == 1.0 and a.flows.set_index("flow").loc["tcp", "share"] == 1.0
    assert not np.isnan(s["rtt_ms_idle_median"]) and isinstance(a.summary, pd.DataFrame)
