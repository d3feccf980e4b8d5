"""Analysis and charts against the stored fixture result (tests/data/result, see make_fixture.py)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from antler.node.schemas import SCHEMAS
from antler.report.analyze import FLOW_COLUMNS, analyze
from antler.report.assets import plotly_js_name
from antler.report.charts import fct_figure, timeseries_figure
from antler.report.decimate import decimate
from antler.report.pipeline import run_after
from antler.report.spec import After, ChartsFCT, ChartsTimeSeries, FlowSeries
from antler.results import load
from tests.data.make_fixture import SHORT, short_fct_s

pytestmark = pytest.mark.no_netns

FIXTURE = Path(__file__).parent / "data" / "result"


@pytest.fixture
def result(tmp_path: Path) -> Path:
    """Return a scratch copy of the fixture result folder."""
    dst = tmp_path / "result"
    shutil.copytree(FIXTURE, dst)
    return dst


def flows_by_id(test_dir: Path) -> pd.DataFrame:
    return analyze(load(test_dir)["."]).flows.set_index("flow")


def test_stream_flow_metrics_match_the_fixture() -> None:
    f = flows_by_id(FIXTURE / "cca-cubic")
    assert list(analyze(load(FIXTURE / "cca-cubic")["."]).flows.columns) == FLOW_COLUMNS
    bulk = f.loc["bulk"]
    assert bulk["kind"] == "stream" and bulk["direction"] == "up" and bulk["cca"] == "cubic"
    assert bulk["bytes"] == 20e6 / 8 * 4.0
    assert bulk["goodput_mbps"] == pytest.approx(20.0, rel=0.01)
    # TCP_INFO RTT rises linearly 20 -> 40 ms over 40 samples on the sender.
    assert bulk["rtt_ms_median"] == pytest.approx(30.0, abs=0.3)
    assert bulk["retrans"] == 3
    join = f.loc["join"]
    assert join["direction"] == "down" and join["start_s"] == pytest.approx(1.0)
    assert join["goodput_mbps"] == pytest.approx(10.0, rel=0.01)
    for flow, length in SHORT:
        assert f.loc[flow, "bytes"] == length
        assert f.loc[flow, "fct_s"] == pytest.approx(short_fct_s(length, 20.0), abs=1e-6)
    assert f.loc["sc-1", "cca"] == "cubic" and f.loc["sb-2", "cca"] == "bbr"


def test_packet_flow_loss_duplicates_order_and_delay() -> None:
    udp = flows_by_id(FIXTURE / "cca-cubic").loc["udp"]
    assert udp["kind"] == "packet"
    assert (udp["sent"], udp["received"], udp["lost"], udp["duplicates"]) == (200, 199, 1, 1)
    assert (udp["late"], udp["early"]) == (1, 1)
    assert udp["loss_pct"] == pytest.approx(0.5)
    assert udp["rtt_ms_median"] == pytest.approx(10.0)
    assert udp["rtt_ms_p99"] == pytest.approx(30.0)
    assert udp["owd_ms_median"] == pytest.approx(5.0)
    assert udp["bytes"] == 200 * 160


def test_series_are_on_the_test_clock() -> None:
    a = analyze(load(FIXTURE / "cca-cubic")["."])
    bulk = a.goodput[a.goodput["flow"] == "bulk"]
    assert bulk["goodput_mbps"].median() == pytest.approx(20.0, rel=1e-3)
    assert bulk["t_s"].min() == pytest.approx(0.1, abs=0.011) and bulk["t_s"].max() == pytest.approx(4.001, abs=1e-6)
    join = a.goodput[a.goodput["flow"] == "join"]
    assert join["t_s"].min() > 1.0 and join["goodput_mbps"].median() == pytest.approx(10.0, rel=1e-3)
    rtt = a.rtt.set_index("t_s")["rtt_ms"]
    assert rtt.loc[0.5] == pytest.approx(10.0) and rtt.loc[1.5] == pytest.approx(30.0)
    # The lost packet (seq 50) is a break in the series: its send time with no delay.
    assert a.rtt["rtt_ms"].notna().sum() == 199 and len(a.rtt) == 200
    assert list(a.rtt[a.rtt["rtt_ms"].isna()]["t_s"].round(6)) == [50 * 0.02]
    assert a.owd["owd_ms"].median() == pytest.approx(5.0)


def test_goodput_is_exact_when_samples_miss_intervals(tmp_path: Path) -> None:
    """Samples every 150 ms with 100 ms intervals: every point is still the true rate."""
    from antler.node.items import Batch, StreamInfo
    from antler.results.store import TestWriter, write_meta

    t0 = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    w = TestWriter(tmp_path)
    w.write(StreamInfo(t0, "f", "up", "cubic", True))
    t = np.arange(1, 41) * 0.150
    cols = {
        "flow": "f",
        "server": True,
        "t_ns": np.round(t * 1e9).astype(np.int64),
        "total_bytes": np.round(t * 1e6).astype(np.int64),
        "sent": False,
    }
    arrays = [
        pa.array([cols[n]] * len(t) if np.isscalar(cols[n]) else cols[n], f.type)
        for n, f in zip(SCHEMAS["stream_io"].names, SCHEMAS["stream_io"], strict=True)
    ]
    w.write(Batch("stream_io", "f", pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS["stream_io"])))
    w.close()
    write_meta(tmp_path, {"test_id": {"t": "x"}})
    a = analyze(load(tmp_path)["."], interval_s=0.1)
    assert np.allclose(a.goodput["goodput_mbps"], 8.0)


def test_no_flows_gives_an_empty_table(tmp_path: Path) -> None:
    from antler.results.store import write_meta

    write_meta(tmp_path, {"test_id": {"t": "x"}})
    a = analyze(load(tmp_path)["."])
    assert a.flows.empty and list(a.flows.columns) == FLOW_COLUMNS


def test_timeseries_figure_has_goodput_left_and_rtt_right() -> None:
    a = analyze(load(FIXTURE / "cca-bbr")["."])
    fig = timeseries_figure(a, ChartsTimeSeries(flow_label={"bulk": "BBR upload"}))
    by_name = {tr.name: tr for tr in fig.data}
    assert "BBR upload" in by_name and "bulk" not in by_name
    bulk = by_name["BBR upload"]
    assert bulk.yaxis == "y" and np.median(bulk.y) == pytest.approx(30.0, rel=1e-3)
    udp = by_name["udp RTT"]
    assert udp.yaxis == "y2" and set(np.round(udp.y[~np.isnan(udp.y)], 6)) == {10.0, 30.0}
    assert fig.layout.yaxis2.overlaying == "y" and fig.layout.yaxis2.side == "right"
    assert fig.layout.xaxis.title.text == "Time (s)"
    owd = timeseries_figure(a, ChartsTimeSeries(delay="owd"))
    assert np.nanmedian(next(tr for tr in owd.data if tr.yaxis == "y2").y) == pytest.approx(5.0)


def test_options_pass_through_to_plotly() -> None:
    a = analyze(load(FIXTURE / "cca-bbr")["."])
    fig = timeseries_figure(a, ChartsTimeSeries(options={"height": 400, "yaxis": {"range": [0, 50]}}))
    assert fig.layout.height == 400 and tuple(fig.layout.yaxis.range) == (0, 50)


def test_fct_figure_groups_flows_by_regex_on_a_log_axis() -> None:
    a = analyze(load(FIXTURE / "cca-cubic")["."])
    spec = ChartsFCT(series=(FlowSeries(pattern="^sc-", name="CUBIC"), FlowSeries(pattern="^sb-", name="BBR")))
    fig = fct_figure(a, spec)
    assert [tr.name for tr in fig.data] == ["CUBIC", "BBR"]
    assert fig.layout.xaxis.type == "log"
    cubic = fig.data[0]
    expected = {length / 1000: short_fct_s(length, 20.0) for flow, length in SHORT if flow.startswith("sc")}
    assert dict(zip(np.round(cubic.x, 6), cubic.y, strict=True)) == pytest.approx(expected)


def test_decimate_keeps_spikes_and_bounds_points() -> None:
    t = np.linspace(0, 10, 100_000)
    y = np.ones_like(t)
    y[54_321] = 500.0
    idx = decimate(t, y, 1000)
    assert len(idx) <= 1000 and 54_321 in idx


def test_after_pipeline_writes_every_report(result: Path) -> None:
    test_dir = result / "cca-cubic"
    assert run_after(test_dir, After()) == []
    for name in ("flows.parquet", "timeseries.html", "timeseries.png", "fct.html", "fct.png", "sysinfo_-.html"):
        assert (test_dir / name).stat().st_size > 0, name
    # The pcap was compressed and its original removed; the data round-trips.
    assert not (test_dir / "capture.pcap").exists()
    import zstandard

    assert (
        zstandard.decompress((test_dir / "capture.pcap.zst").read_bytes())
        == (FIXTURE / "cca-cubic" / "capture.pcap").read_bytes()
    )
    flows = pq.read_table(test_dir / "flows.parquet").to_pandas().set_index("flow")
    assert flows.loc["udp", "lost"] == 1
    page = (test_dir / "timeseries.html").read_text()
    assert "<table" in page and "goodput (Mbit/s)" in page and "udp" in page
    # plotly.js is the result folder's one copy, loaded by relative path (never from the network).
    (src,) = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert src == f"../{plotly_js_name()}" and (test_dir / src).is_file() and "Plotly.newPlot" in page
    sysinfo = (test_dir / "sysinfo_-.html").read_text()
    assert "tcp_congestion_control" in sysinfo and "Debian GNU/Linux 12" in sysinfo
    # A second run never overwrites: each report fails and says so.
    errors = run_after(test_dir, After())
    assert any("flows.parquet exists" in e for e in errors)


def test_timeseries_png_is_a_real_image(result: Path) -> None:
    from matplotlib.image import imread

    run_after(result / "cca-bbr", After())
    img = imread(result / "cca-bbr" / "timeseries.png")
    assert img.shape[:2] == (720, 1280)
    # Not blank: many distinct colours were drawn.
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_a_flow_without_echo_counts_at_the_server_and_charts_its_one_way_delay(result: Path) -> None:
    d = result / "cca-cubic"
    io = pq.read_table(d / "packet_io.parquet").to_pandas()
    one_way = io[~((~io["server"]) & (~io["sent"]))]  # drop the echo replies the client received
    pq.write_table(_packet_table(one_way), d / "packet_io.parquet")
    a = analyze(load(d)["."])
    udp = a.flows.set_index("flow").loc["udp"]
    assert (udp["received"], udp["lost"], udp["duplicates"]) == (199, 1, 1)
    assert np.isnan(udp["rtt_ms_median"]) and udp["owd_ms_median"] == pytest.approx(5.0)
    fig = timeseries_figure(a, ChartsTimeSeries())
    delay = [tr for tr in fig.data if tr.yaxis == "y2"]
    assert len(delay) == 1 and np.nanmedian(delay[0].y) == pytest.approx(5.0)


def test_interleaved_packet_flows_and_send_time_error(tmp_path: Path) -> None:
    """Two flows whose records interleave (as batches from several nodes do), with the sender's schedule."""
    from antler.node.items import PacketInfo
    from antler.results.store import TestWriter, write_meta

    t0 = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    w = TestWriter(tmp_path)
    rows: list[tuple[str, bool, int, int, int, int, bool, int | None]] = []
    for flow, n, lost in (("a", 100, set()), ("b", 50, {3, 7, 11})):
        w.write(PacketInfo(t0, flow, False))
        w.write(PacketInfo(t0, flow, True))
        for s in range(n):
            sent_ns = s * 1_000_000
            rows.append((flow, False, sent_ns + 5_000, s, 100, 1, True, sent_ns))
            if s not in lost:
                rows.append((flow, True, sent_ns + 2_000_000, s, 100, 1, False, 0))
                rows.append((flow, False, sent_ns + 4_000_000 + (s % 2) * 1_000_000, s, 100, 0, False, 0))
    w.close()
    rng = np.random.default_rng(7)
    df = pd.DataFrame(rows, columns=SCHEMAS["packet_io"].names[:8]).iloc[rng.permutation(len(rows))]
    pq.write_table(_packet_table(df), tmp_path / "packet_io.parquet")
    write_meta(tmp_path, {"test_id": {"t": "x"}})
    a = analyze(load(tmp_path)["."])
    f = a.flows.set_index("flow")
    assert (f.loc["a", "sent"], f.loc["a", "received"], f.loc["a", "lost"]) == (100, 100, 0)
    assert (f.loc["b", "sent"], f.loc["b", "received"], f.loc["b", "lost"]) == (50, 47, 3)
    assert f.loc["a", "late"] == 0 and f.loc["b", "duplicates"] == 0
    assert f.loc["a", "send_err_us_median"] == pytest.approx(5.0)
    assert f.loc["b", "owd_ms_median"] == pytest.approx(1.995)  # from the actual send, 5 µs late
    assert sorted(set(np.round(a.rtt[a.rtt["flow"] == "a"]["rtt_ms"], 6))) == [3.995, 4.995]
    assert a.rtt.groupby("flow", observed=True)["t_s"].apply(lambda s: s.is_monotonic_increasing).all()


def test_sparse_seqs_take_the_sorting_path_with_the_same_answers(result: Path) -> None:
    d = result / "cca-cubic"
    dense = analyze(load(d)["."])
    io = pq.read_table(d / "packet_io.parquet").to_pandas()
    io["seq"] = io["seq"] * 1_000_000_007  # far too sparse for a (flow, seq) table
    pq.write_table(_packet_table(io), d / "packet_io.parquet")
    sparse = analyze(load(d)["."])
    cols = ["sent", "received", "lost", "duplicates", "late", "early", "rtt_ms_median", "rtt_ms_p99", "owd_ms_median"]
    pd.testing.assert_frame_equal(
        dense.flows.set_index("flow")[cols], sparse.flows.set_index("flow")[cols], check_index_type=False
    )
    assert np.allclose(dense.rtt["rtt_ms"], sparse.rtt["rtt_ms"], equal_nan=True)
    assert dense.rtt["rtt_ms"].isna().sum() == sparse.rtt["rtt_ms"].isna().sum() > 0


def test_row_layout_in_the_file_does_not_change_the_analysis(tmp_path: Path) -> None:
    """Batches of one flow, end and direction (as the recorder ships them), mixed batches, one shuffled batch: one answer.

    Flow "c"'s server records nothing, so its loss is counted from the echoes
    at the client while "a" and "b" count at the server.
    """
    from antler.node.items import PacketInfo
    from antler.results.store import TestWriter, write_meta

    t0 = pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime()
    rows: list[tuple[str, bool, int, int, int, int, bool, int | None]] = []
    for flow, n, lost in (("a", 60, {5}), ("b", 40, {1, 2}), ("c", 30, {9})):
        for s in range(n):
            sent_ns = s * 1_000_000
            rows.append((flow, False, sent_ns + 3_000, s, 100, 1, True, sent_ns))
            if s in lost:
                continue
            late = 1_500_000 if s % 7 == 3 else 0  # arrives after the next one
            if flow != "c":
                rows.append((flow, True, sent_ns + 2_000_000 + late, s, 100, 1, False, None))
            rows.append((flow, False, sent_ns + 4_000_000 + late, s, 100, 0, False, None))
    df = pd.DataFrame(rows, columns=SCHEMAS["packet_io"].names[:8])
    kind = df["flow"] + df["server"].astype(str) + df["sent"].astype(str)
    layouts = {
        "shuffled": [_packet_table(df.iloc[np.random.default_rng(3).permutation(len(df))])],
        "small batches": [_packet_table(df.sort_values("t_ns", kind="stable"))],
        "by kind": [_packet_table(g) for _, g in df.groupby(kind, sort=False)],
    }
    got = {}
    for name, tables in layouts.items():
        d = tmp_path / name.replace(" ", "-")
        d.mkdir()
        w = TestWriter(d)
        for flow in ("a", "b", "c"):
            w.write(PacketInfo(t0, flow, False))
            w.write(PacketInfo(t0, flow, True))
        w.close()
        with pq.ParquetWriter(d / "packet_io.parquet", SCHEMAS["packet_io"]) as out:
            for t in tables:
                out.write_table(t, row_group_size=7)
        write_meta(d, {"test_id": {"t": name}})
        got[name] = analyze(load(d)["."])
    f = got["shuffled"].flows.set_index("flow")
    assert list(f.loc[["a", "b", "c"], "lost"]) == [1, 2, 1]
    assert list(f.loc[["a", "b", "c"], "late"]) == [8, 6, 4]
    for name in ("small batches", "by kind"):
        pd.testing.assert_frame_equal(got["shuffled"].flows, got[name].flows)
        pd.testing.assert_frame_equal(got["shuffled"].rtt, got[name].rtt)
        pd.testing.assert_frame_equal(got["shuffled"].owd, got[name].owd)


def _packet_table(df: pd.DataFrame) -> pa.Table:
    """_packet_table stores rows as packet_io, with the columns they lack (e.g. sched_t_ns) null."""
    schema = SCHEMAS["packet_io"]
    return pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False)
