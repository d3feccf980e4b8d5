"""The terminal is not the test: a closed or slow terminal never stops, hangs or fails a test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from antler.results import load
from antler.terminal import Terminal
from tests.lab import figures
from tests.lab.netns import unique_name

ANTLER = [sys.executable, "-m", "antler"]


def test_a_pipe_nobody_reads_never_blocks_the_writer_and_the_dropped_lines_are_counted() -> None:
    r, w = os.pipe()
    out = os.fdopen(w, "w")
    term = Terminal(out, os.fdopen(os.dup(2), "w"), size=100)
    lines = 20_000  # 20 times what a pipe holds: a synchronous write blocks on the 3000th

    def write() -> None:
        for i in range(lines):
            print(f"line {i:08d} of a terminal nobody reads", file=term.out)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(30)
    assert not writer.is_alive(), "writing to a stalled terminal blocked the writer"
    assert term.dropped > 0
    # Once the reader comes back, it gets lines in order, and is told how many it missed.
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(r, 1 << 16), b"")), daemon=True)
    reader.start()
    assert term.drain(10)
    print("the end", file=term.out)
    assert term.drain(10)
    out.close()
    reader.join(10)
    os.close(r)
    got = b"".join(chunks).decode().splitlines()
    shown = [line for line in got if line.startswith("line ")]
    assert shown[0].startswith("line 00000000 ") and shown == sorted(shown)
    assert got[-1] == "the end"
    notices = [int(m.group(1)) for line in got if (m := re.fullmatch(r"\[(\d+) lines not shown: .*\]", line))]
    figures.record("hangs", "lines printed to a terminal nobody reads", lines, "lines")
    figures.record("hangs", "of them not shown, and counted in a notice", term.dropped, "lines")
    assert sum(notices) == term.dropped and len(shown) + term.dropped == lines


def test_a_closed_pipe_drops_the_output_without_an_error() -> None:
    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w")
    term = Terminal(out, out)
    for i in range(1000):
        print(f"line {i}", file=term.out)
        print(f"line {i}", file=term.err)
    assert term.drain(10)
    assert w in term.broken


def _experiment(folder: Path, name: str, run: str) -> Path:
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / f"{name}.yaml").write_text(
        f"# @package _global_\ntest:\n  id: {{experiment: {name}}}\n  run:\n{run}\n"
    )
    return folder


@pytest.mark.slow
def test_cubic_piped_into_head_passes_and_leaves_nothing(tmp_path: Path) -> None:
    # The issue's own command: a broken pipe on the terminal made the test fail
    # in its cleanup, left ar-left, ar-mid, ar-right behind, or hung for good.
    prefix = unique_name("rl") + "-"
    cmd = " ".join([*ANTLER, "run", "+experiment=cubic", "duration=1s", "lead=1s", f"rig.netns_prefix={prefix}"])
    done = into_head(cmd, 3, tmp_path, timeout=120)
    assert len(done.stdout.splitlines()) == 3
    assert done.returncode == 0, done.stdout + done.stderr
    (test,) = load(tmp_path / "results" / "latest").values()
    assert test.meta["status"] == "ok"
    assert len(test["stream_io"]) > 0
    # The rig's namespaces are gone (the leak check of this test says so too).
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    figures.record(
        "hangs",
        "+experiment=cubic | head -3 (broken pipe): namespaces left",
        names.count(prefix),
        "namespaces",
        lost=True,
    )
    assert prefix not in names


def test_a_terminal_nobody_reads_never_holds_up_a_test(tmp_path: Path) -> None:
    # 60,000 log lines (about 3 MB of live output) into a pipe that holds 64 KB
    # and is read only once the command has ended.
    conf = _experiment(tmp_path / "c", "loud", "    system: {command: 'seq 1 60000', stdout: stream}")
    r, w = os.pipe()
    proc = subprocess.Popen(
        [*ANTLER, "run", "--config-dir", str(conf), "+experiment=loud"], cwd=tmp_path, stdout=w, stderr=w
    )
    os.close(w)
    try:
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(r)
    (test,) = load(tmp_path / "results" / "latest").values()
    kept = test["log"]["text"].tolist()
    figures.record("hangs", "log lines of a test whose terminal is read only after it ends: kept", len(kept), "lines")
    assert test.meta["status"] == "ok"
    assert kept == [str(i) for i in range(1, 60001)]


def test_log_into_head_prints_no_traceback(tmp_path: Path) -> None:
    conf = _experiment(tmp_path / "c", "many", "    system: {command: 'seq 1 5000', stdout: stream}")
    subprocess.run([*ANTLER, "run", "--config-dir", str(conf), "+experiment=many"], cwd=tmp_path, check=True)
    done = into_head(" ".join([*ANTLER, "log"]), 2, tmp_path, timeout=60)
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 2 and "Traceback" not in done.stdout + done.stderr


def into_head(cmd: str, lines: int, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a shell command piped into ``head -LINES``, as a user would; its status is the command's."""
    return subprocess.run(
        ["bash", "-c", f"{cmd} 2>&1 | head -{lines}; exit ${{PIPESTATUS[0]}}"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
