"""Result folders: layout, files from commands, killed runs, result streams, load()."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from antler.cli import main
from antler.results import load
from antler.results.store import read_arrows
from antler.results.tables import FormatError


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def exp(folder: Path, name: str, body: str) -> Path:
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / f"{name}.yaml").write_text(
        f"# @package _global_\ntest:\n  id: {{experiment: {name}}}\n{body}"
    )
    return folder


def test_layout_latest_link_and_in_progress_gone(cwd: Path) -> None:
    assert main(["run", "+experiment=hello"]) == 0
    root = cwd / "results"
    latest = root / "latest"
    assert latest.is_symlink() and not os.path.isabs(os.readlink(latest))
    assert (latest / "experiment-hello" / "log.parquet").exists()
    assert not (root / "in-progress").exists()
    assert not list((latest / "experiment-hello").glob("*.arrows"))


def test_command_output_file_lands_in_the_test_folder(cwd: Path) -> None:
    conf = exp(cwd / "c", "f", "  run:\n    system: {command: 'echo saved', stdout: out.txt}\n")
    assert main(["run", "--config-dir", str(conf), "+experiment=f"]) == 0
    assert (cwd / "results" / "latest" / "experiment-f" / "out.txt").read_text() == "saved\n"


def test_file_name_escaping_the_folder_is_refused(cwd: Path) -> None:
    conf = exp(cwd / "c", "f", "  run:\n    system: {command: 'echo x', stdout: ../escape.txt}\n")
    main(["run", "--config-dir", str(conf), "+experiment=f"])
    assert not list(cwd.rglob("escape.txt"))


def stored_rows(path: Path) -> int:
    """Return how many whole rows an Arrow stream being written holds (0 before it exists)."""
    return read_arrows(path).num_rows if path.exists() else 0


def test_killed_run_keeps_its_data_and_the_next_run_recovers_it(cwd: Path) -> None:
    conf = exp(
        cwd / "c",
        "k",
        "  run:\n    system: {command: 'sh -c', args: ['for i in $(seq 1000); do echo tick $i; sleep 0.02; done'], stdout: stream}\n",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(conf), "+experiment=k"],
        stdout=subprocess.PIPE,
        text=True,
    )
    in_progress = cwd / "results" / "in-progress" / "experiment-k"
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        line = ""
        for line in proc.stdout:  # ends at EOF if the run dies
            if "tick 60" in line or time.monotonic() > deadline:
                break
        assert "tick 60" in line, f"the run printed no 'tick 60' (exit {proc.poll()})"
        # The writer flushes rows at least once a second: wait until 20 are on disk.
        while stored_rows(in_progress / "log.arrows") < 20:
            assert time.monotonic() < deadline, "the writer stored fewer than 20 log rows in 60 s"
            time.sleep(0.05)
        descendants = psutil.Process(proc.pid).children(recursive=True)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    ticks = load(in_progress)["."]["log"]["text"].tolist()
    assert len(ticks) >= 20 and ticks[0] == "tick 1"
    try:
        # Its command ran in a session of its own and outlived it ...
        assert any(p.is_running() for p in descendants)
        # ... until the next run reclaims it, and says so in its first test's log.
        assert main(["run", "+experiment=hello"]) == 0
        assert not [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    finally:
        for p in descendants:
            with contextlib.suppress(psutil.Error):
                p.kill()
    log = load(cwd / "results" / "latest")["experiment-hello"]["log"]
    assert log["text"].str.startswith("reclaimed the session of command").any()
    # The next run moves the dead run's folder aside and keeps it, its test marked interrupted.
    kept = [p for p in (cwd / "results").iterdir() if p.name.endswith("-interrupted")]
    assert len(kept) == 1 and (kept[0] / "experiment-k" / "log.arrows").exists()
    assert load(kept[0])["experiment-k"].meta["status"] == "interrupted"


def test_load_refuses_a_newer_format_and_upgrades_an_older_one(cwd: Path) -> None:
    assert main(["run", "+experiment=hello"]) == 0
    test_dir = cwd / "results" / "latest" / "experiment-hello"
    meta = json.loads((test_dir / "meta.json").read_text())
    (test_dir / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FormatError, match="newer"):
        load(test_dir)
    old = {k: v for k, v in meta.items() if k != "test_id"} | {"format_version": 0, "id": {"experiment": "hello"}}
    (test_dir / "meta.json").write_text(json.dumps(old))
    assert load(test_dir)["."].id == {"experiment": "hello"}
