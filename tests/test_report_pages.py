"""The pages a result folder holds: one plotly.js per folder, loaded by relative path; no empty chart; the index.

The browser checks (they draw, sort, match flows.parquet) are in
test_report_browser.py; these check the files and the figures.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from threading import Thread

import pytest

from antler.cli import main
from antler.report.analyze import analyze
from antler.report.assets import plotly_js_name, write_plotly_js
from antler.report.charts import timeseries_figure
from antler.report.index import index_html, write_index
from antler.report.pipeline import run_after
from antler.report.spec import After, ChartsTimeSeries, IndexSpec
from antler.results import load
from antler.results.server import make_server
from antler.results.store import LATEST, write_meta
from tests.lab.results import REPORTS, SWEEP, sweep_with_failures

pytestmark = pytest.mark.no_netns

SCRIPT = re.compile(r'<script src="([^"]+)"')


def scripts(page: Path) -> list[Path]:
    """Return the files a page loads, resolved from its folder."""
    return [page.parent / src for src in SCRIPT.findall(page.read_text())]


def test_a_sweep_holds_one_plotly_js_and_light_pages(tmp_path: Path) -> None:
    result = sweep_with_failures(tmp_path / "2026-01-01-000000Z")
    script = result / plotly_js_name()
    assert sorted(p.name for p in result.rglob("plotly*.js")) == [script.name]
    pages = sorted(result.glob("*/*.html"))
    assert [p.name for p in pages] == ["timeseries.html"] * 5  # of the five tests that ran
    for page in pages:
        assert [p.resolve() for p in scripts(page)] == [script.resolve()], page
    per_test = {d.name: sum(p.stat().st_size for p in d.glob("*.html")) for d in result.iterdir() if d.is_dir()}
    # Each test's pages together: tens of kB, where each used to carry 4.6 MB of plotly.js.
    assert max(per_test.values()) < 200_000, per_test
    assert [p.resolve() for p in scripts(result / "index.html")] == [script.resolve()]
    # A copy of the folder elsewhere still finds the script from every page.
    moved = shutil.copytree(result, tmp_path / "elsewhere" / "copy")
    for page in [*moved.glob("*/*.html"), moved / "index.html"]:
        assert all(p.is_file() for p in scripts(page)), page


def test_no_chart_without_data(tmp_path: Path) -> None:
    result = sweep_with_failures(tmp_path / "result")
    # The sweep's flows are timed, not length-limited: no FCT chart at all.
    assert list(result.rglob("fct.*")) == []
    # The interrupted test measured nothing: no chart, and the page says why.
    assert not any((result / "experiment-cubic_cca-cubic_rig_rtt-100ms").glob("timeseries.*"))
    assert "No chart: the test was interrupted before its reports" in (result / "index.html").read_text()
    # Without a packet flow there is no delay axis; with only one, delay takes the left axis.
    tcp_only = result / "tcp-only"
    shutil.copytree(result / "experiment-cubic_cca-cubic_rig_rtt-10ms", tcp_only)
    for table in ("packet_io", "packet_info"):
        (tcp_only / f"{table}.parquet").unlink()
    a = analyze(load(tcp_only)["."])
    layout = timeseries_figure(a, ChartsTimeSeries()).to_plotly_json()["layout"]
    assert "yaxis2" not in layout and layout["yaxis"]["title"]["text"] == "Goodput (Mbit/s per 100 ms)"
    udp_only = result / "udp-only"
    shutil.copytree(SWEEP / "experiment-cubic_cca-cubic_rig_rtt-10ms", udp_only)
    for table in ("stream_io", "stream_info", "tcp_info", "flows"):
        (udp_only / f"{table}.parquet").unlink()
    fig = timeseries_figure(analyze(load(udp_only)["."]), ChartsTimeSeries())
    assert "yaxis2" not in fig.to_plotly_json()["layout"] and fig.layout.yaxis.title.text == "RTT (ms)"
    assert [t.yaxis for t in fig.data] == ["y"]
    assert run_after(udp_only, After()) == []
    assert (udp_only / "timeseries.png").is_file() and not (udp_only / "fct.html").exists()


def test_the_index_of_one_test(tmp_path: Path) -> None:
    test = tmp_path / "one"
    shutil.copytree(SWEEP / "experiment-cubic_cca-reno_rig_rtt-40ms", test)
    meta = json.loads((test / "meta.json").read_text())
    write_meta(test, {**meta, "swept": {"cca": "reno", "rig.rtt": "40ms"}})
    assert run_after(test, REPORTS, root=test) == []
    page, figs = index_html(test, IndexSpec())
    assert "cca = reno · rig.rtt = 40ms" in page  # the values as the sweep applied them
    assert figs == []  # nothing swept: no comparison chart, and no plotly.js on the page
    assert "1 test: 1 ok" in page and "<script src" not in page
    assert page.count("<tr>") == 1 + 2  # the heading, tcp and udp
    assert '<a href="timeseries.html"><img src="timeseries.png"' in page


@pytest.fixture
def results_root(tmp_path: Path) -> Path:
    """Return a results folder holding the sweep with its reports, as latest."""
    root = tmp_path / "results"
    sweep_with_failures(root / "2026-01-01-000000Z")
    (root / LATEST).symlink_to("2026-01-01-000000Z")
    return root


def test_report_rerun_writes_the_same_layout(results_root: Path) -> None:
    src = results_root / "2026-01-01-000000Z"
    assert main(["report", str(src), "--root", str(results_root)]) == 0
    new = results_root / os.readlink(results_root / LATEST)
    assert new != src and (new / plotly_js_name()).is_file()
    for page in new.glob("*/timeseries.html"):
        assert [p.resolve() for p in scripts(page)] == [(new / plotly_js_name()).resolve()]
    # One test re-reported alone is the top of its new folder: its pages load the script beside them.
    assert main(["report", str(src / "experiment-cubic_cca-reno_rig_rtt-10ms"), "--root", str(results_root)]) == 0
    alone = results_root / os.readlink(results_root / LATEST)
    assert SCRIPT.findall((alone / "timeseries.html").read_text()) == [plotly_js_name()]
    assert (alone / plotly_js_name()).is_file() and (alone / "index.html").is_file()


def test_pages_work_served_by_the_server(results_root: Path) -> None:
    server = make_server(results_root, port=0)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/latest/"
        for page in ("index.html", "experiment-cubic_cca-cubic_rig_rtt-40ms/timeseries.html"):
            with urllib.request.urlopen(base + page, timeout=10) as r:
                (src,) = SCRIPT.findall(r.read().decode())
            url = urllib.parse.urljoin(base + page, src)
            with urllib.request.urlopen(url, timeout=10) as r:
                assert r.read() == (results_root / "latest" / plotly_js_name()).read_bytes()
    finally:
        server.shutdown()
        server.server_close()


def test_a_linked_test_keeps_the_plotly_js_its_pages_were_made_with(tmp_path: Path) -> None:
    """An incremental run hard-links a passed test into a new folder: its pages load the older script."""
    old, new = tmp_path / "2026-01-01-000000Z", tmp_path / "2026-01-02-000000Z"
    test = "experiment-cubic_cca-reno_rig_rtt-10ms"
    shutil.copytree(SWEEP / test, old / test)
    assert run_after(old / test, REPORTS) == []
    # As if made by an older plotly: the page and the folder's script carry another version.
    page = (old / test / "timeseries.html").read_text().replace(plotly_js_name(), "plotly-3.0.0.min.js")
    (old / test / "timeseries.html").unlink()
    (old / test / "timeseries.html").write_text(page)
    (old / plotly_js_name()).rename(old / "plotly-3.0.0.min.js")
    (new / test).mkdir(parents=True)
    for f in (old / test).iterdir():
        os.link(f, new / test / f.name)
    write_index(new, IndexSpec())
    assert (new / "plotly-3.0.0.min.js").samefile(old / "plotly-3.0.0.min.js")
    # Without a folder that has it, the index says which pages cannot draw.
    lone = tmp_path / "lone" / "2026-01-03-000000Z"
    shutil.copytree(new, lone, ignore=shutil.ignore_patterns("*.js", "index.html"))
    write_index(lone, IndexSpec())
    assert f"plotly-3.0.0.min.js is missing: {test}/timeseries.html" in (lone / "index.html").read_text()


def test_plotly_js_is_written_once_and_never_replaced(tmp_path: Path) -> None:
    first = write_plotly_js(tmp_path)
    inode = first.stat().st_ino
    assert write_plotly_js(tmp_path) == first and first.stat().st_ino == inode
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary file left
    assert first.stat().st_size > 1_000_000
