"""The reliability report shows each promise with what tried it and what was lost, from a figures file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab import figures
from tests.lab.reliability_report import PROMISES

pytestmark = pytest.mark.no_netns


def sections(markdown: str) -> dict[str, str]:
    """Map each ``## `` heading of a page to its text, in order."""
    out: dict[str, str] = {}
    for part in markdown.split("\n## ")[1:]:
        title, _, body = part.partition("\n")
        out[title] = body
    return out


def report(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.lab.reliability_report", str(path)],
        cwd=Path(__file__).parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_report_has_a_section_per_promise_with_its_figures_and_losses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "figures.jsonl"
    monkeypatch.delenv(figures.FIGURES_ENV, raising=False)
    figures.record("load", "figures written without a file named go nowhere", 1)
    assert not path.exists()
    monkeypatch.setenv(figures.FIGURES_ENV, str(path))
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_load.py::test_streams (call)")
    figures.session(long=True)
    figures.record("load", "stream clients run at once against one server", 200, "flows")
    figures.record("load", "stream flows whose byte counts differ between ends", 0, "flows", lost=True)
    figures.outcome("tests/test_load.py::test_streams", "passed", 43.2)
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/test_interrupt.py::test_ctrl_c (call)")
    figures.record("lost", "Ctrl-C: exited 130 after", 2.25, "s")
    figures.record("lost", "Ctrl-C: data missing before the signal", 0.4, "s", lost=True)
    figures.outcome("tests/test_interrupt.py::test_ctrl_c", "passed", 20)
    # A test that failed before recording anything still counts against its promise.
    figures.outcome("tests/test_hangs.py::test_a_peer_that_vanishes", "failed", 16)
    figures.outcome("tests/test_hangs.py::test_a_command_that_ignores_sigint", "passed", 7)

    done = report(path)
    assert done.returncode == 0, done.stderr
    page = done.stdout
    assert page.startswith("# Reliability\n")
    assert "the long run (ANTLER_RELIABILITY_LONG=1)" in page
    got = sections(page)
    assert list(got) == [p.title for p in PROMISES]

    load = got["Load held"]
    assert "**Tests:** 1 run, 1 passed, 43 s in all (test_load.py)." in load
    assert (
        "| `test_load.py::test_streams` (passed, 43 s) | stream clients run at once against one server | 200 flows |"
        in load
    )
    assert "Nothing: stream flows whose byte counts differ between ends: 0 flows." in load
    assert "200 flows" not in got["Nothing is lost"] + got["Nothing hangs"]

    lost = got["Nothing is lost"]
    assert "| Ctrl-C: exited 130 after | 2.25 s |" in lost
    what_was_lost = lost.split("**What was lost:**")[1]
    assert "- Ctrl-C: data missing before the signal: **0.4 s** (test_interrupt.py::test_ctrl_c)" in what_was_lost
    assert "exited 130" not in what_was_lost

    hangs = got["Nothing hangs"]
    assert "**Tests:** 2 run, 1 passed, 1 failed, 23 s in all (test_hangs.py)." in hangs
    assert "- test failed: `test_hangs.py::test_a_peer_that_vanishes`" in hangs.split("**What was lost:**")[1]
    assert (
        "| `test_hangs.py::test_a_command_that_ignores_sigint` (passed, 7 s) | (pass or fail is the result) | |"
        in hangs
    )

    for untried in ("Nothing leaks", "Bad config never reaches the network", "Hostile traffic is harmless"):
        assert got[untried].strip().endswith("Not tried in this run: no test of it ran and none recorded a figure.")
    # The summary table says the same, a row per promise.
    summary = page.split("\n## ")[0]
    assert "| [Load held](#load-held) | 1 of 1 | 2 | nothing |" in summary
    assert (
        "| [Nothing is lost](#nothing-is-lost) | 1 of 1 | 2 | Ctrl-C: data missing before the signal: 0.4 s |"
        in summary
    )
    assert "| [Nothing hangs](#nothing-hangs) | 1 of 2 | 0 | 1 test failed |" in summary
    assert "| [Secrets stay secret](#secrets-stay-secret) | 0 of 0 | 0 | not tried |" in summary


def test_a_bad_figures_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "figures.jsonl"
    path.write_text('{"promise": "load", "what": "x", "value": 1}\n{"what": "no promise"}\n')
    done = report(path)
    assert done.returncode == 2 and not done.stdout
    assert "figures line 2" in done.stderr and "promise" in done.stderr
    done = report(tmp_path / "missing.jsonl")
    assert done.returncode == 2 and "missing.jsonl" in done.stderr
