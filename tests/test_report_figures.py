"""Figures a paper can use (issue 30): goodput no higher than the link, legends and titles that say what differs, tables that fit.

The goodput series is checked in analysis and then as headless Chromium draws
it (see tests/lab/browser.py): the points plotted, read back from the page.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from antler.report.analyze import analyze, analyze_frames
from antler.report.charts import charts_time_series, timeseries_figure
from antler.report.pipeline import run_after
from antler.report.spec import ChartsTimeSeries
from antler.results import load
from tests.lab.browser import CHROMIUM, DRAWN, PLOTS, Browser, problems
from tests.lab.results import REPORTS, SWEEP

pytestmark = pytest.mark.no_netns

LINK_MBPS = 50.0
STALL_S = (1.0, 1.26)
"""STALL_S is a loss recovery in the demo's shape: the receiver reads nothing, then at once all TCP held back."""


def stalled_upload() -> pd.DataFrame:
    """Return the receiver's stream_io of a 3 s upload at LINK_MBPS sampled every 10 ms, with a stall.

    Every sample's byte count is what the link delivered by then (rate times
    time): in the stall the receiver reads nothing, and its first read after
    it takes everything that arrived meanwhile.
    """
    t_ns = np.arange(10_000_000, 3_000_000_001, 10_000_000, dtype=np.int64)
    t_s = t_ns / 1e9
    t_ns = t_ns[(t_s <= STALL_S[0]) | (t_s >= STALL_S[1])]
    total = (t_ns / 1e9 * LINK_MBPS * 1e6 / 8).astype(np.int64)
    return pd.DataFrame({"flow": "tcp", "server": True, "t_ns": t_ns, "total_bytes": total, "sent": False})


def test_goodput_after_a_stall_is_not_above_the_link() -> None:
    """Issue 30: after a zero, the demo's goodput spiked to 153 Mbit/s on a 50 Mbit/s link."""
    a = analyze_frames(stream_io=stalled_upload())
    g = a.goodput
    assert (g[g["t_s"].between(1.15, 1.2)]["goodput_mbps"] == 0).any(), "the stall is still drawn as a zero"
    assert g["goodput_mbps"].max() <= LINK_MBPS * 1.001, g[g["goodput_mbps"] > LINK_MBPS]
    # The steady points are the link rate.
    assert np.median(g["goodput_mbps"]) == pytest.approx(LINK_MBPS, rel=1e-3)


MSS = 1448


def sender_tcp_info(every_ms: int = 10) -> pd.DataFrame:
    """Return the sender's tcp_info of stalled_upload's flow: SACKs count what arrives in the stall, ACKs only after."""
    t_ns = np.arange(every_ms * 1_000_000, 3_000_000_001, every_ms * 1_000_000, dtype=np.int64)
    delivered = (t_ns / 1e9 * LINK_MBPS * 1e6 / 8).astype(np.int64) // MSS * MSS
    t_s = t_ns / 1e9
    stalled = (t_s > STALL_S[0]) & (t_s < STALL_S[1])
    acked = np.where(stalled, delivered[np.searchsorted(t_s, STALL_S[0], side="right") - 1], delivered)
    return pd.DataFrame(
        {"flow": "tcp", "server": False, "t_ns": t_ns, "rtt_us": 20_000, "total_retrans": 1,
         "bytes_acked": acked, "sacked": (delivered - acked) // MSS, "snd_mss": MSS}
    )  # fmt: skip


def test_goodput_counts_what_the_sender_saw_delivered_where_tcp_info_has_it() -> None:
    """The bytes SACKed in a loss's recovery count when they arrived, not when the receiver read them."""
    info = pd.DataFrame(
        {"flow": ["tcp", "tcp"], "server": [False, True], "tinit": [pd.Timestamp("2026-01-01", tz="UTC")] * 2,
         "cca": ["cubic"] * 2, "direction": ["up"] * 2, "length_bytes": [0, 0]}
    )  # fmt: skip
    a = analyze_frames(stream_info=info, stream_io=stalled_upload(), tcp_info=sender_tcp_info())
    g = a.goodput
    # The network delivered throughout: no zero in the stall, no burst after it, one point per 100 ms.
    assert g["goodput_mbps"].max() <= LINK_MBPS * 1.001 and g["goodput_mbps"].iloc[1:].min() >= LINK_MBPS * 0.95
    assert len(g) == 31 and g["t_s"].iloc[:30].diff().dropna().between(0.099, 0.101).all()  # and the sample at 3 s
    # Without sacked (results of older releases), or sampled more sparsely than the interval: the receiver's reads.
    for tcp in (sender_tcp_info().drop(columns="sacked"), sender_tcp_info(every_ms=500)):
        g = analyze_frames(stream_info=info, stream_io=stalled_upload(), tcp_info=tcp).goodput
        assert (g[g["t_s"].between(1.15, 1.2)]["goodput_mbps"] == 0).any()


@pytest.mark.parametrize(
    ("rtt_ms", "interval_s"), [(None, 0.1), (0, 0.1), (20, 0.1), (40, 0.2), (100, 0.5), (300, 2.0)]
)
def test_the_default_goodput_interval_is_a_few_rtts_and_at_least_100ms(rtt_ms: float | None, interval_s: float) -> None:
    from antler.report.analyze.streams import default_interval_s

    assert default_interval_s(rtt_ms) == pytest.approx(interval_s)


def test_a_stored_test_is_binned_by_its_rig_rtt(tmp_path: Path) -> None:
    test = shutil.copytree(SWEEP / "experiment-cubic_cca-cubic_rig_rtt-40ms", tmp_path / "t")
    meta = json.loads((test / "meta.json").read_text())
    meta["rig"] = {**(meta.get("rig") or {}), "rtt_ms": 40.0}
    (test / "meta.json").write_text(json.dumps(meta))
    a = analyze(load(test)["."])
    assert a.goodput_interval_s == pytest.approx(0.2)
    fig = timeseries_figure(a, ChartsTimeSeries())
    assert fig.layout.yaxis.title.text == "Goodput (Mbit/s per 200 ms)"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)")
def test_the_page_plots_no_goodput_above_the_link_and_names_the_cca(tmp_path: Path) -> None:
    """Read back in Chromium: the plotted goodput stays under the link, the axis too; raw samples a click away."""
    info = pd.DataFrame(
        {"flow": ["tcp"], "server": [True], "tinit": [pd.Timestamp("2026-01-01", tz="UTC")], "cca": ["cubic"],
         "direction": ["up"], "length_bytes": [0]}
    )  # fmt: skip
    io = stalled_upload()
    a = analyze_frames(stream_info=info, stream_io=io)
    assert charts_time_series(a, ChartsTimeSeries(to=("timeseries.html",)), tmp_path) is not None
    with Browser(tmp_path / "profile") as browser:
        page = browser.open((tmp_path / "timeseries.html").as_uri())
        page.wait_for(DRAWN)
        (plot,) = page.eval(PLOTS)
        assert problems(page) == []
        visible = [t for t in plot["traces"] if t["points"] or t["line"]]
        assert [t["name"] for t in visible] == ["tcp cubic"]
        y = np.array(visible[0]["y"], dtype=float)
        assert y.max() <= LINK_MBPS * 1.001 and (y == 0).any()
        assert "tcp cubic samples" in [t["name"] for t in plot["traces"]], "the raw samples are one click away"
        y_range = page.eval("document.querySelector('.js-plotly-plot')._fullLayout.yaxis.range")
        assert y_range[1] <= LINK_MBPS * 1.1
        assert "per 100 ms" in page.eval("document.querySelector('.js-plotly-plot')._fullLayout.yaxis.title.text")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)")
def test_the_flows_table_fits_a_1400px_window(tmp_path: Path) -> None:
    """Issue 30: at 1400 px the flows table was cut off, retransmits behind a horizontal scrollbar."""
    a = analyze(load(SWEEP / "experiment-cubic_cca-cubic_rig_rtt-10ms")["."])
    # Every column a failed mixed test fills: the stream and packet metrics, its status and error.
    stream = a.flows["kind"] == "stream"
    a.flows.loc[stream, ["retrans", "fct_s"]] = [1234.0, 3.5]
    a.flows["status"] = "failed"
    a.flows["error"] = "stream_client: connection reset by peer after 2.5 s (errno 104, ECONNRESET)"
    for col, v in (("lost_up", 3.0), ("loss_up_pct", 2.0), ("lost_down", 1.0), ("loss_down_pct", 0.6667)):
        a.flows[col] = np.where(stream, np.nan, v)
    # And every other metric the table can show (ECN, CE marks, the queue's): a real demo fills them.
    for col in a.flows.columns:
        if pd.api.types.is_float_dtype(a.flows[col]) and a.flows[col].isna().all():
            a.flows[col] = 12.5
    assert charts_time_series(a, ChartsTimeSeries(to=("timeseries.html",)), tmp_path, "cca=cubic rig_rtt=10ms")
    with Browser(tmp_path / "profile", width=1400) as browser:
        page = browser.open((tmp_path / "timeseries.html").as_uri())
        page.wait_for(DRAWN)
        fit = page.eval(
            "(() => { const th = [...document.querySelectorAll('table.flows th')].find(h => h.textContent === 'retrans');"
            " return {right: th.getBoundingClientRect().right, width: document.documentElement.clientWidth,"
            " scroll: document.documentElement.scrollWidth}; })()"
        )
        assert fit["scroll"] <= fit["width"] and fit["right"] <= fit["width"], fit


def test_a_page_says_its_title_once_and_a_changed_rate_is_not_the_rate(tmp_path: Path) -> None:
    test = shutil.copytree(SWEEP / "experiment-cubic_cca-cubic_rig_rtt-10ms", tmp_path / "t")
    meta = json.loads((test / "meta.json").read_text())
    meta["rig"] = {
        "kind": "dumbbell",
        "rate_bps": 50e6,
        "qdisc": "pfifo limit 1000",
        "rtt_ms": 10.0,
        "emulator": "netem",
    }
    drop = {"system": {"command": "tc class change dev mid.r parent 1: classid 1:1 htb rate 10000000 ceil 10000000"}}
    meta["config"]["test"]["run"] = {"serial": [meta["config"]["test"].get("run") or {}, {"schedule": {"run": [drop]}}]}
    (test / "meta.json").write_text(json.dumps(meta))
    assert run_after(test, REPORTS) == []
    html = (test / "timeseries.html").read_text()
    h1 = html.split("<h1>")[1].split("</h1>")[0]
    assert "50 Mbit/s at the start, changed during the test" in h1
    # The heading is the title; the chart on the page does not draw it again.
    assert html.count("Time Series (") == 2, "once in <title>, once in <h1>"
