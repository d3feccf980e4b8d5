"""The report pages draw in a real browser with no network at all.

Headless Chromium runs in a fresh, empty network namespace (``unshare -n``):
if a page needed anything from the internet (a CDN's plotly.js), it could not
draw. The DOM it renders must hold plotly's SVG with one trace per series, and
the page must log nothing to the console (no errors, no warnings).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from antler.report.index import write_index
from antler.report.pipeline import run_after
from antler.report.spec import After, IndexSpec

FIXTURE = Path(__file__).parent / "data" / "result"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)"),
    pytest.mark.no_netns,
]


def render(page: Path, profile: Path) -> tuple[str, list[str]]:
    """Render loads page in headless Chromium without network; returns the DOM and console lines."""
    assert CHROMIUM is not None
    argv = [
        "unshare",
        "-n",
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--log-level=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.as_uri(),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=90)
    finally:
        # Chromium's helpers share its session: end the whole group we started.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Chromium's own internal pages (chrome://) log too; only the page's messages count.
    console = [line for line in err.splitlines() if ":CONSOLE" in line and "source: file://" in line]
    return out, console


def test_timeseries_and_index_pages_draw_offline(tmp_path: Path) -> None:
    result = tmp_path / "result"
    shutil.copytree(FIXTURE, result)
    for test in ("cca-cubic", "cca-bbr"):
        assert run_after(result / test, After()) == []
    write_index(result, IndexSpec())

    dom, console = render(result / "cca-cubic" / "timeseries.html", tmp_path / "profile1")
    assert console == []
    assert 'class="main-svg"' in dom
    # bulk, join, six short flows and the udp RTT: one drawn trace each.
    assert len(re.findall(r'class="trace scatter', dom)) == 9
    assert "udp RTT" in dom and "Time (s)" in dom
    assert "<table" in dom  # the flow table

    dom, console = render(result / "index.html", tmp_path / "profile2")
    assert console == []
    assert 'class="main-svg"' in dom and "goodput_mbps vs cca" in dom
    assert 'href="cca-cubic/timeseries.html"' in dom
