"""Nothing is lost, nothing leaks: Ctrl-C (once, twice) and kill -9 in the middle of +experiment=cubic.

Each test runs the command as a user does, in a session of its own so that
a Ctrl-C reaches it as the terminal sends it: to the whole process group
(the command, its embedded Ray, the node actors).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from antler.node import lease
from antler.results import TestResult, load
from antler.results.store import read_arrows
from tests.lab import figures
from tests.lab.netns import netns_list, unique_name

pytestmark = pytest.mark.slow

ANTLER = [sys.executable, "-m", "antler"]
NO_CALIBRATION = ("calibrate=off",)
"""NO_CALIBRATION: these tests time the test itself; the calibration before it (15-40 s here) is tests/test_trust.py's."""


class Command:
    """Antler-ray running in a session of its own; its output is read into ``lines`` as it comes."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [*ANTLER, *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def interrupt(self) -> None:
        """Send SIGINT as a terminal's Ctrl-C does: to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def until(what: str, ok: Callable[[], bool], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, f"waited {timeout:.0f}s for {what}"
        time.sleep(0.05)


def stream_samples_s(folder: Path) -> float:
    """Return how many seconds of upload the in-progress stream_io stream holds (0 before any)."""
    io, info = folder / "stream_io.arrows", folder / "stream_info.arrows"
    if not (io.exists() and info.exists()):
        return 0.0
    t = read_arrows(io).column("t_ns").to_pylist()
    return max(t) / 1e9 if t else 0.0


def last_at(test: TestResult, kind: str) -> pd.Timestamp:
    """Return the absolute time of the last sample a test's flows of kind (stream or packet) recorded."""
    info, io = test[f"{kind}_info"], test[f"{kind}_io"]
    if io.empty:
        return pd.Timestamp(0, tz="UTC")
    tinit = info.drop_duplicates("flow").set_index("flow")["tinit"]
    return max(tinit[flow] + pd.to_timedelta(t.max(), unit="ns") for flow, t in io.groupby("flow")["t_ns"])


def leases_of(prefix: str) -> list[str]:
    return [held.name for held in lease.leases(lease.NETNS) if held.name.startswith(prefix)]


@pytest.fixture
def prefix() -> str:
    return unique_name("ri") + "-"


def test_ctrl_c_during_cubic_exits_130_within_10s_keeping_what_was_measured(tmp_path: Path, prefix: str) -> None:
    cmd = Command(tmp_path, "run", "+experiment=cubic", f"rig.netns_prefix={prefix}", *NO_CALIBRATION)
    try:
        folder = tmp_path / "results" / "in-progress" / "experiment-cubic"
        until("3 s of the upload on disk", lambda: stream_samples_s(folder) >= 3.0)
        signaled = pd.Timestamp.now(tz="UTC")
        cmd.interrupt()
        start = time.monotonic()
        assert cmd.wait(timeout=10) == 130, cmd.output
        exit_s = time.monotonic() - start
    finally:
        cmd.kill()
    assert "Traceback" not in cmd.output
    latest = tmp_path / "results" / "latest"
    assert latest.resolve().name != "in-progress"
    (test,) = load(latest).values()
    figures.record("lost", "Ctrl-C in +experiment=cubic: exited 130 after", round(exit_s, 1), "s")
    figures.record(
        "lost", "Ctrl-C: stream and echo samples kept", len(test["stream_io"]) + len(test["packet_io"]), "rows"
    )
    missing_s = (signaled - min(last_at(test, "stream"), last_at(test, "packet"))).total_seconds()
    figures.record(
        "lost", "Ctrl-C: data missing before the signal (at most 1 s)", round(max(missing_s, 0), 2), "s", lost=True
    )
    assert test.meta["status"] == "interrupted"
    # Every sample flushed before the signal is kept: at most 1 s is missing.
    assert last_at(test, "stream") >= signaled - pd.Timedelta(seconds=1), (last_at(test, "stream"), signaled)
    assert last_at(test, "packet") >= signaled - pd.Timedelta(seconds=1), (last_at(test, "packet"), signaled)
    assert not [n for n in netns_list() if n.startswith(prefix)] and not leases_of(prefix)


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(tmp_path: Path, prefix: str) -> None:
    cmd = Command(tmp_path, "run", "+experiment=cubic", f"rig.netns_prefix={prefix}", *NO_CALIBRATION)
    try:
        folder = tmp_path / "results" / "in-progress" / "experiment-cubic"
        until("1 s of the upload on disk", lambda: stream_samples_s(folder) >= 1.0)
        cmd.interrupt()
        # The echo flow's summary: the first Ctrl-C is stopping the test.
        until("the first Ctrl-C's effect", lambda: "packet_client: flow udp: sent" in cmd.output, 10)
        cmd.interrupt()
        start = time.monotonic()
        # At once: the first one's cleanup (2 s here) is not waited for.
        assert cmd.wait(timeout=5) == 130, cmd.output
        figures.record("lost", "second Ctrl-C: exited 130 after", round(time.monotonic() - start, 1), "s")
    finally:
        cmd.kill()
    assert "second Ctrl-C: exiting now" in cmd.output
    assert "Traceback" not in cmd.output
    (test,) = load(tmp_path / "results" / "latest").values()
    assert test.meta["status"] == "interrupted" and len(test["stream_io"]) > 0
    # Its namespaces went with it (its nodes could not delete them any more).
    assert not [n for n in netns_list() if n.startswith(prefix)] and not leases_of(prefix)


@pytest.mark.science
def test_kill_9_mid_test_then_the_same_command_runs_and_leaves_nothing(tmp_path: Path, prefix: str) -> None:
    args = ("run", "+experiment=cubic", "duration=8s", f"rig.netns_prefix={prefix}", *NO_CALIBRATION)
    cmd = Command(tmp_path, *args)
    try:
        # The moment of the kill: 2 s of the upload on disk, whatever else has been flushed.
        folder = tmp_path / "results" / "in-progress" / "experiment-cubic"
        until("2 s of the upload on disk", lambda: stream_samples_s(folder) >= 2.0)
        killed = pd.Timestamp.now(tz="UTC")
        cmd.proc.kill()  # the command only, as `kill -9 PID` does; its Ray and nodes die with it
        cmd.wait(10)
    finally:
        cmd.kill()
    left = sorted(n for n in netns_list() if n.startswith(prefix))
    assert left == [f"{prefix}left", f"{prefix}mid", f"{prefix}right"]  # what the next run must reclaim

    again = Command(tmp_path, *args)
    try:
        assert again.wait(timeout=120) == 0, again.output
    finally:
        again.kill()
    reclaimed = [
        role for role in ("left", "mid", "right") if f"reclaimed network namespace '{prefix}{role}'" in again.output
    ]
    figures.record("leaks", "namespaces left by kill -9, reclaimed by the next run", len(reclaimed), "namespaces")
    still = [n for n in netns_list() if n.startswith(prefix)]
    figures.record("leaks", "namespaces of the killed run left after the next run", len(still), "namespaces", lost=True)
    for role in ("left", "mid", "right"):
        assert f"reclaimed network namespace '{prefix}{role}' left by process" in again.output
    (test,) = load(tmp_path / "results" / "latest").values()
    assert test.meta["status"] == "ok"
    assert any("reclaimed network namespace" in t for t in test["log"]["text"])
    # The killed run's data is kept under *-interrupted, readable up to its last flush.
    (kept,) = (tmp_path / "results").glob("*-interrupted")
    (dead,) = load(kept).values()
    figures.record(
        "lost", "kill -9: samples kept under *-interrupted", len(dead["stream_io"]) + len(dead["packet_io"]), "rows"
    )
    missing_s = (killed - last_at(dead, "stream")).total_seconds()
    figures.record(
        "lost", "kill -9: data missing before the kill (at most 1 s)", round(max(missing_s, 0), 2), "s", lost=True
    )
    assert dead.meta["status"] == "interrupted"
    assert last_at(dead, "stream") >= killed - pd.Timedelta(seconds=1), (last_at(dead, "stream"), killed)
    assert not [n for n in netns_list() if n.startswith(prefix)] and not leases_of(prefix)
