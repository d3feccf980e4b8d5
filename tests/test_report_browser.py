"""The report pages draw in a real browser with no network at all, and show what flows.parquet holds.

Headless Chromium runs in an empty network namespace (see tests/lab/browser.py),
opening the pages from disk. Each page must draw its charts (plotly's SVG,
with the series read back from the page compared to flows.parquet), log
nothing (no error, no warning, no failed load), and the comparison page's
table must sort when its headings are clicked.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from antler.report.analyze import analyze
from antler.report.html import figure_div, page
from antler.report.index import write_index
from antler.report.pipeline import run_after
from antler.report.spec import IndexSpec
from antler.results import load
from tests.lab.browser import CHROMIUM, DRAWN, PLOTS, Browser, Page, problems
from tests.lab.results import FIXTURE, REPORTS, sweep_with_failures

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)"),
    pytest.mark.no_netns,
]


def column(page: Page, heading: str) -> list[str]:
    """Return the text of a summary table column, top to bottom, found by its heading."""
    return list(
        page.eval(
            "(() => { const t = document.querySelector('table.sortable');"
            f" const i = [...t.tHead.rows[0].cells].findIndex(c => c.textContent === {heading!r});"
            " return [...t.tBodies[0].rows].map(r => r.cells[i].textContent); })()"
        )
    )


def numbers(values: list[str]) -> list[float]:
    return [float(v.replace(",", "")) if v else float("nan") for v in values]


def test_comparison_page_draws_a_line_per_flow_and_sorts(tmp_path: Path) -> None:
    result = sweep_with_failures(tmp_path / "results" / "2026-01-01-000000Z")
    flows = load(result).concat("flows")
    with Browser(tmp_path / "profile") as browser:
        page = browser.open((result / "index.html").as_uri())
        page.wait_for(DRAWN)
        plots = {p["title"]: p for p in page.eval(PLOTS)}
        assert problems(page) == []

        # One chart per compared metric against rig_rtt, a line per flow and cca.
        assert sorted(plots) == ["goodput_mbps vs rig_rtt", "loss_pct vs rig_rtt", "rtt_ms_p99 vs rig_rtt"]
        for metric, names in (
            ("goodput_mbps", {"tcp cca=cubic", "tcp cca=reno"}),
            ("rtt_ms_p99", {"tcp cca=cubic", "tcp cca=reno", "udp cca=cubic", "udp cca=reno"}),
            ("loss_pct", {"udp cca=cubic", "udp cca=reno"}),
        ):
            traces = {t["name"]: t for t in plots[f"{metric} vs rig_rtt"]["traces"]}
            assert set(traces) == names
            for name, t in traces.items():
                flow, cca = name.split(" cca=")
                want = flows[(flows["flow"] == flow) & (flows["id_cca"] == cca)].set_index("rig_rtt")[metric]
                assert dict(zip(t["x"], t["y"], strict=True)) == pytest.approx(want.dropna().to_dict())
                # Lines, not single dots: a drawn path through every point, in sweep order.
                assert t["mode"] == "lines+markers" and t["points"] == len(t["x"]) >= 2
                assert t["line"].count("L") == len(t["x"]) - 1
        # The failed test (reno at 100ms) is drawn, as a cross; the interrupted one has no flows.
        reno = next(t for t in plots["goodput_mbps vs rig_rtt"]["traces"] if t["name"] == "tcp cca=reno")
        assert reno["x"] == ["10ms", "40ms", "100ms"] and reno["symbols"] == ["circle", "circle", "x"]

        # Every test and flow is a row; the failed and interrupted tests say so.
        status = column(page, "status")
        assert status.count("ok") == 8 and status.count("failed") == 2 and status.count("interrupted") == 1
        rows = set(zip(*(column(page, h) for h in ("cca", "rig_rtt", "status", "first error")), strict=True))
        assert {r for r in rows if r[1] == "100ms"} == {
            ("reno", "100ms", "failed", "right stream: connection reset by peer"),  # the first of its two errors
            ("cubic", "100ms", "interrupted", ""),
        }

        # A real click on a heading sorts by it; again, the other way; blanks stay last.
        page.click("table.sortable th:nth-child(5)")  # goodput (Mbit/s), after experiment, cca, rig_rtt, flow
        goodput = numbers(column(page, "goodput (Mbit/s)"))
        given = [g for g in goodput if not np.isnan(g)]
        assert len(given) == 5 and given == sorted(given) and all(np.isnan(goodput[len(given) :]))
        page.click("table.sortable th:nth-child(5)")
        goodput = numbers(column(page, "goodput (Mbit/s)"))
        assert goodput[:5] == sorted(given, reverse=True)
        assert page.eval("document.querySelector('table.sortable th:nth-child(5)').getAttribute('aria-sort')") == (
            "descending"
        )
        # Swept values sort by their number: 10ms, 40ms, 100ms (as text, 100ms would come first).
        page.click("table.sortable th:nth-child(3)")
        rtts = column(page, "rig_rtt")
        assert rtts == sorted(rtts, key=lambda v: int(v.removesuffix("ms"))) and rtts[-1] == "100ms"
        assert problems(page) == []

        # Each test's image links to its page; every link and image is a file in the folder.
        cards = page.eval("[...document.querySelectorAll('.card')].map(c => c.textContent)")
        assert len(cards) == 6 and sum("No chart: the test was interrupted" in c for c in cards) == 1
        assert all("charts: timeseries" in c for c in cards if "interrupted" not in c)
        assert not any("fct" in c.split("files")[0] for c in cards)  # no length-limited flow: no FCT chart
        targets = page.eval(
            "[...document.querySelectorAll('a[href], img[src], script[src]')].map(e => e.href || e.src)"
        )
        for url in targets:
            assert url.startswith("file://") and Path(url.removeprefix("file://")).is_file(), url
        images = page.eval("[...document.querySelectorAll('.card a img')].map(i => i.closest('a').href)")
        assert len(images) == 5 and all(u.endswith("/timeseries.html") for u in images)


def test_every_test_page_draws_its_flows_offline(tmp_path: Path) -> None:
    result = sweep_with_failures(tmp_path / "results" / "2026-01-01-000000Z")
    pages = sorted(result.glob("*/timeseries.html"))
    assert len(pages) == 5  # the interrupted test made none
    with Browser(tmp_path / "profile") as browser:
        for path in pages:
            page = browser.open(path.as_uri())
            page.wait_for(DRAWN)
            (plot,) = page.eval(PLOTS)
            assert problems(page) == [], path
            flows = pd.read_parquet(path.parent / "flows.parquet").set_index("flow")
            traces = {t["name"]: t for t in plot["traces"]}
            # The stream flow is named with its CCA; its raw samples are a hidden trace beside it.
            cca = str(flows.loc["tcp", "cca"])
            tcp_name = f"tcp {cca}"
            assert set(traces) == {tcp_name, f"{tcp_name} samples", "udp RTT"} and plot["axes"] == ["yaxis", "yaxis2"]
            tcp, udp = traces[tcp_name], traces["udp RTT"]
            # Goodput on the left axis: its steady value is the flow's goodput.
            assert tcp["yaxis"] == "y" and np.median(tcp["y"]) == pytest.approx(flows.loc["tcp", "goodput_mbps"])
            # Every echoed packet's RTT is a point on the right axis, with the flow's median and p99.
            rtt = np.array([v for v in udp["y"] if v is not None], dtype=float)
            assert udp["yaxis"] == "y2" and udp["points"] == len(rtt) == flows.loc["udp", "received"]
            assert np.median(rtt) == pytest.approx(flows.loc["udp", "rtt_ms_median"])
            assert np.percentile(rtt, 99) == pytest.approx(flows.loc["udp", "rtt_ms_p99"])
            assert "<table" in page.eval("document.body.innerHTML")


def test_a_page_of_older_results_with_plotly_inline_still_draws(tmp_path: Path) -> None:
    """Pages made before plotly.js moved out of them carry it inline; the index links them and they draw."""
    result = tmp_path / "result"
    shutil.copytree(FIXTURE, result)
    test = result / "cca-cubic"
    a = analyze(load(test)["."])
    fig = go.Figure(go.Scatter(x=a.goodput["t_s"], y=a.goodput["goodput_mbps"], name="bulk"))
    inline = fig.to_html(full_html=False, include_plotlyjs=True, include_mathjax=False)
    (test / "timeseries.html").write_text(page("Time Series", inline))
    assert run_after(result / "cca-bbr", REPORTS) == []
    write_index(result, IndexSpec())
    with Browser(tmp_path / "profile") as browser:
        for path in (test / "timeseries.html", result / "cca-bbr" / "timeseries.html", result / "index.html"):
            page_ = browser.open(path.as_uri())
            page_.wait_for(DRAWN)
            plots: list[dict[str, Any]] = page_.eval(PLOTS)
            assert problems(page_) == [] and all(p["traces"] for p in plots), path
    # The old page is linked like the new ones.
    assert 'href="cca-cubic/timeseries.html"' in (result / "index.html").read_text()


def test_a_figure_div_loads_no_script_of_its_own() -> None:
    html = figure_div(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    assert "<script src" not in html and "Plotly.newPlot" in html and len(html) < 10_000
