"""Charts never draw what was not measured: an outage is zeros in goodput and breaks in delays (issue 16, part 7)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from antler.node.launch.netns import launch_thread as launch
from antler.report.analyze import analyze_frames
from antler.report.charts import timeseries_figure
from antler.report.decimate import decimate
from antler.report.spec import ChartsTimeSeries
from tests.lab.netns import NetnsFactory
from tests.lab.trees import on, run_tree

OUTAGE = (1.5, 2.5)  # seconds after the flows start: every packet into the server is dropped


def test_an_outage_is_zero_goodput_and_a_break_in_the_rtt(netns: NetnsFactory) -> None:
    """Issue 16: the goodput series had no point in a 1 s outage and the chart drew a line across it."""
    a, b = netns.new("oc"), netns.new("os")
    netns.link(a, "10.77.45.1/24", b, "10.77.45.2/24")
    drop = "iptables {} INPUT -s 10.77.45.1 -j DROP"
    out = run_tree(
        {
            "serial": [
                on(b.name, {"stream_server": {"listen_addr": "10.77.45.2:7782", "listen_addr_key": "tcp"}}),
                on(b.name, {"packet_server": {"listen_addr": ":7783"}}),
                {"parallel": [
                    on(a.name, {"stream_client": {"addr_key": "tcp", "upload": {
                        "flow": "bulk", "duration": "4s", "sample_io_interval": "10ms"}}}),
                    on(a.name, {"packet_client": {"addr": "10.77.45.2:7783", "flow": "ping", "sender": [
                        {"unresponsive": {"wait": ["20ms"], "length": [64], "duration": "4s", "echo": True}}]}}),
                    {"schedule": {"wait": [f"{OUTAGE[0]}s", f"{OUTAGE[1] - OUTAGE[0]}s"], "wait_first": True, "run": [
                        on(b.name, {"system": {"command": drop.format("-A")}}),
                        on(b.name, {"system": {"command": drop.format("-D")}}),
                    ]}},
                ]},
            ]
        },
        launch=launch, timeout="90s",
    )  # fmt: skip
    assert out.ok, out.errors()
    stream_info = pd.DataFrame([vars(i) for i in out.items if type(i).__name__ == "StreamInfo"]).rename(
        columns={"length": "length_bytes"}
    )
    a_ = analyze_frames(
        stream_info=stream_info,
        stream_io=out.table("stream_io"),
        packet_info=out.packet_info(),
        packet_io=out.table("packet_io"),
    )
    g = a_.goodput[a_.goodput["flow"] == "bulk"]
    inside = g[(g["t_s"] > OUTAGE[0] + 0.15) & (g["t_s"] < OUTAGE[1] - 0.05)]
    assert len(inside) >= 7, g.to_string()
    assert (inside["goodput_mbps"] == 0).all(), inside
    assert g["goodput_mbps"].max() > 10, "the flow ran before and after the outage"
    rtt = a_.rtt[a_.rtt["flow"] == "ping"]
    lost = rtt[rtt["rtt_ms"].isna()]
    assert len(lost) >= 40 and lost["t_s"].between(OUTAGE[0] - 0.1, OUTAGE[1] + 0.1).all(), lost
    # The page draws the same series: zeros, not a line from before the outage to after it.
    fig = timeseries_figure(a_, ChartsTimeSeries())
    (bulk,) = [tr for tr in fig.data if tr.name.split()[0] == "bulk" and not tr.name.endswith("samples")]
    x, y = np.asarray(bulk.x), np.asarray(bulk.y)
    assert (y[(x > OUTAGE[0] + 0.15) & (x < OUTAGE[1] - 0.05)] == 0).all()


def test_decimation_keeps_zeros_and_breaks() -> None:
    t = np.arange(10_000) / 1000.0
    y = np.where((t > 4) & (t < 6), 0.0, 50.0)
    idx = decimate(t, y, 200)
    assert (y[idx][(t[idx] > 4.05) & (t[idx] < 5.95)] == 0).all()
    d = np.where((t > 4) & (t < 6), np.nan, 10.0)
    idx = decimate(t, d, 200)
    kept = t[idx][np.isnan(d[idx])]
    assert len(kept) >= 18, "every bucket (0.1 s) wholly in the outage keeps a break"
    assert ((kept > 3.99) & (kept < 6.01)).all()


@pytest.mark.parametrize("interval_ms", [150, 1000])
def test_samples_sparser_than_the_interval_are_not_taken_for_an_outage(interval_ms: int) -> None:
    """A receiver sampling every 150 ms (or 1 s) with 100 ms intervals delivered all along: no zeros."""
    t_ns = np.arange(0, 6_000_000_000, interval_ms * 1_000_000, dtype=np.int64)
    io = pd.DataFrame({"flow": "f", "server": True, "t_ns": t_ns, "total_bytes": (t_ns // 1000) + 1, "sent": False})
    a_ = analyze_frames(stream_io=io)
    assert (a_.goodput["goodput_mbps"] > 0).all()
