"""Incremental runs: tests that passed are linked, not run again; filters; resuming; init.

The experiments here run commands on the root node only (no Ray, no
namespaces), so a run takes well under a second; each command appends to a
file in the working directory, which counts how often a test really ran.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from antler.cli import main
from antler.results import load
from antler.results.incremental import config_changes
from antler.results.store import IN_PROGRESS, LATEST
from antler.testid import IdFilter
from tests.lab import figures

pytestmark = pytest.mark.no_netns

# Test x=2 fails until the file "fixed" exists; test x=3 ticks until "stop" exists.
SWEEP = """# @package _global_
x: 1
logname: log.txt
test:
  id: {experiment: inc}
  run:
    system:
      command: sh -c
      args: ['echo ran >> ran-${x}; echo x=${x}; while [ ${x} = 3 ] && [ ! -e stop ]; do echo tick; sleep 0.05; done; test ${x} != 2 || test -e fixed']
      stdout: stream
  after:
    default: [{emit_log: {to: ["${logname}"]}}]
"""


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "inc.yaml").write_text(SWEEP)
    return tmp_path


def sweep(*args: str, xs: str = "1,2") -> list[str]:
    return ["run", "-m", "--config-dir", "conf", "+experiment=inc", f"x={xs}", *args]


def runs(cwd: Path, x: int) -> int:
    f = cwd / f"ran-{x}"
    return len(f.read_text().splitlines()) if f.exists() else 0


def folders(cwd: Path) -> list[str]:
    return sorted(p.name for p in (cwd / "results").iterdir() if not p.is_symlink())


def latest(cwd: Path) -> Path:
    return (cwd / "results" / LATEST).resolve()


def test_a_sweep_reruns_only_what_failed_or_changed_and_links_the_rest(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(sweep()) == 1  # x=2 fails
    first = latest(cwd)
    assert load(first)["experiment-inc_x-2"].meta["status"] == "failed"
    capsys.readouterr()

    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    out = capsys.readouterr().out
    assert "link experiment=inc x=1: passed in " + first.name in out
    assert "run  experiment=inc x=2: failed before" in out
    assert (runs(cwd, 1), runs(cwd, 2)) == (1, 2)  # x=1 did not run again
    second = latest(cwd)
    res = load(second)
    assert {k: t.meta["status"] for k, t in res.items()} == {"experiment-inc_x-1": "ok", "experiment-inc_x-2": "ok"}
    linked = res["experiment-inc_x-1"]
    assert linked.meta["linked_from"] == first.name and "linked_from" not in res["experiment-inc_x-2"].meta
    assert linked["log"]["text"].tolist() == ["x=1"]
    # Hard links to the originals, not copies; the index covers linked tests too.
    for name in ("log.parquet", "log.txt"):
        assert (second / "experiment-inc_x-1" / name).stat().st_ino == (
            first / "experiment-inc_x-1" / name
        ).stat().st_ino
    assert 'href="experiment-inc_x-1/' in (second / "index.html").read_text()

    # Everything passed: nothing is written and latest stays.
    before = folders(cwd)
    assert main(sweep()) == 0
    assert "nothing to run" in capsys.readouterr().out
    assert folders(cwd) == before and latest(cwd) == second

    # A change outside test (index.*) is no reason to run either.
    assert main(sweep("index.group_by=x")) == 0
    assert folders(cwd) == before

    assert main(sweep("-a")) == 0
    assert (runs(cwd, 1), runs(cwd, 2)) == (2, 3)

    assert main(sweep("+test.timeout=30s")) == 0
    assert "run  experiment=inc x=1: config changed: test.timeout" in capsys.readouterr().out
    assert (runs(cwd, 1), runs(cwd, 2)) == (3, 4)


def test_a_filter_runs_the_tests_it_selects_and_links_the_others(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    capsys.readouterr()
    assert main(sweep("--filter", "x=^2$")) == 0
    out = capsys.readouterr().out
    assert "run  experiment=inc x=2: selected by --filter x=^2$" in out
    assert "link experiment=inc x=1: not selected by --filter" in out
    assert (runs(cwd, 1), runs(cwd, 2)) == (1, 2)
    assert sorted(load(latest(cwd))) == ["experiment-inc_x-1", "experiment-inc_x-2"]

    # A test the filter leaves out and the prior folder lacks is skipped.
    assert main(sweep("--filter", "2", xs="1,2,4")) == 0
    assert "skip experiment=inc x=4: not selected by --filter" in capsys.readouterr().out
    assert sorted(load(latest(cwd))) == ["experiment-inc_x-1", "experiment-inc_x-2"]


def test_vet_lists_what_would_run_and_be_linked_and_runs_nothing(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    before = folders(cwd)
    capsys.readouterr()
    assert main(["vet", *sweep("--filter", "x=1", xs="1,2,4")[1:]]) == 0
    out = capsys.readouterr().out
    assert "# run  experiment=inc x=1: selected by --filter x=1" in out
    assert "# link experiment=inc x=2: not selected by --filter" in out
    assert "# skip experiment=inc x=4: not selected by --filter" in out
    assert main(["vet", *sweep(xs="1,4")[1:]]) == 0
    out = capsys.readouterr().out
    assert "# link experiment=inc x=1: passed in" in out and "# run  experiment=inc x=4: new" in out
    assert folders(cwd) == before and (runs(cwd, 1), runs(cwd, 2)) == (1, 1)


def test_a_sweep_after_another_experiment_links_from_the_earlier_folder(
    cwd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30: only latest was consulted, so a run of anything else in between made the sweep run again."""
    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    sweep_folder = latest(cwd)
    assert main(["run", "--config-dir", "conf", "+experiment=inc", "x=5"]) == 0  # another test: latest lacks the sweep
    assert latest(cwd) != sweep_folder
    capsys.readouterr()
    assert main(["vet", *sweep()[1:]]) == 0
    out = capsys.readouterr().out
    for x in (1, 2):
        assert f"# link experiment=inc x={x}: passed in {sweep_folder.name}" in out, out
    # The run makes a folder of the whole sweep, every test linked, none run.
    assert main(sweep()) == 0
    assert (runs(cwd, 1), runs(cwd, 2)) == (1, 1)
    res = load(latest(cwd))
    assert sorted(res) == ["experiment-inc_x-1", "experiment-inc_x-2"]
    assert {t.meta["linked_from"] for t in res.values()} == {sweep_folder.name}
    assert main(sweep()) == 0
    assert "nothing to run" in capsys.readouterr().out
    # A changed config is still run, naming the change the newest folder saw.
    assert main(sweep("+test.timeout=30s")) == 0
    assert (runs(cwd, 1), runs(cwd, 2)) == (2, 2)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--filter", "x=("], "--filter: 'x=(' is not a regex"),
        (["--filter", "x=9"], "--filter: x=9 selects none of the 2 tests"),
        (["-a", "--filter", "x=1"], "-a/--all runs every test"),
    ],
)
def test_filter_mistakes_exit_2_and_write_nothing(
    cwd: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert main(sweep(*args)) == 2
    assert needle in capsys.readouterr().err
    assert not (cwd / "results").exists()


def test_a_changed_after_pipeline_remakes_the_reports_of_linked_tests(cwd: Path) -> None:
    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    first = latest(cwd)
    assert main(sweep("logname=other.txt")) == 0
    second = latest(cwd)
    assert second != first and (runs(cwd, 1), runs(cwd, 2)) == (1, 1)
    for test in ("experiment-inc_x-1", "experiment-inc_x-2"):
        assert (second / test / "other.txt").read_text() == (first / test / "log.txt").read_text()
        assert not (first / test / "other.txt").exists()  # the source is never touched
        meta = json.loads((second / test / "meta.json").read_text())
        assert meta["config"]["test"]["after"]["default"] == [{"emit_log": {"to": ["other.txt"]}}]


def test_removing_the_original_keeps_the_linked_data_readable(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(sweep()) == 1
    first = latest(cwd)
    (cwd / "fixed").touch()
    assert main(sweep()) == 0
    second = latest(cwd)
    capsys.readouterr()
    assert main(["results"]) == 0
    assert f"experiment=inc x=1  ok  health ok  linked from {first.name}" in capsys.readouterr().out
    assert main(["remove", first.name]) == 0
    assert "hard-linked from other result folders, which keep them" in capsys.readouterr().out
    assert not first.exists()
    test = load(second)["experiment-inc_x-1"]
    assert test["log"]["text"].tolist() == ["x=1"] and "x=1" in (test.path / "log.txt").read_text()

    # A third run links from the second, and records where the test really ran.
    (cwd / "ran-1").unlink()
    assert main(sweep("index.group_by=x", xs="1,2,4")) == 0
    meta = load(latest(cwd))["experiment-inc_x-1"].meta
    assert (meta["linked_from"], meta["ran_in"]) == (second.name, first.name)
    assert runs(cwd, 1) == 0


def _start(cwd: Path) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "antler", *sweep(xs="1,3")]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_ticks(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if "tick" in proc.stdout.readline():
            return
    raise AssertionError("the second test never started ticking")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_an_interrupted_sweep_resumes_with_the_tests_not_yet_passed(
    cwd: Path, capsys: pytest.CaptureFixture[str], sig: signal.Signals
) -> None:
    proc = _start(cwd)
    try:
        _wait_for_ticks(proc)
        os.kill(proc.pid, sig)
        proc.communicate(timeout=20)
    finally:
        (cwd / "stop").touch()  # ends the tick loop, even one a killed run left behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == (130 if sig == signal.SIGINT else -signal.SIGKILL)
    if sig == signal.SIGKILL:
        assert (cwd / "results" / IN_PROGRESS).is_dir()
    # Wait for a tick loop the killed run orphaned to see "stop" and end.
    deadline = time.monotonic() + 10
    while runs(cwd, 3) == 1 and _orphan_ticking(cwd) and time.monotonic() < deadline:
        time.sleep(0.05)

    assert main(sweep(xs="1,3")) == 0
    out = capsys.readouterr().out
    assert "link experiment=inc x=1: passed in " in out
    assert "run  experiment=inc x=3: interrupted before" in out
    assert (runs(cwd, 1), runs(cwd, 3)) == (1, 2)
    res = load(latest(cwd))
    assert {k: t.meta["status"] for k, t in res.items()} == {"experiment-inc_x-1": "ok", "experiment-inc_x-3": "ok"}
    assert res["experiment-inc_x-1"]["log"]["text"].tolist() == ["x=1"]
    figures.record("lost", f"sweep stopped by {sig.name} at test 2: tests before it kept whole, not rerun", 1, "tests")
    if sig == signal.SIGKILL:
        # The killed run's folder was kept under its own name, and linked from.
        (interrupted,) = [f for f in folders(cwd) if f.endswith("-interrupted")]
        assert res["experiment-inc_x-1"].meta["linked_from"] == interrupted


def _orphan_ticking(cwd: Path) -> bool:
    import psutil

    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            if p.info["cwd"] == str(cwd) and "tick" in " ".join(p.info["cmdline"] or []):
                return True
        except psutil.Error:
            continue
    return False


def test_init_writes_a_project_that_runs_and_never_overwrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["init", "lab"]) == 0
    lab = tmp_path / "lab"
    assert sorted(p.relative_to(lab).as_posix() for p in lab.rglob("*") if p.is_file()) == [
        "README.md",
        "experiment/first.yaml",
        "experiment/two-flows.yaml",
    ]
    assert "--config-dir" in (lab / "README.md").read_text()
    (lab / "experiment" / "first.yaml").write_text((lab / "experiment" / "first.yaml").read_text() + "# mine\n")
    mine = (lab / "experiment" / "first.yaml").read_text()
    capsys.readouterr()
    assert main(["init", "lab"]) == 0
    assert "kept lab/experiment/first.yaml (it exists)" in capsys.readouterr().out
    assert (lab / "experiment" / "first.yaml").read_text() == mine

    monkeypatch.chdir(lab)
    assert main(["vet", "--config-dir", ".", "+experiment=two-flows"]) == 0
    assert main(["run", "--config-dir", ".", "+experiment=first", "message=hi-there"]) == 0
    (test,) = load(lab / "results" / LATEST).values()
    assert test["log"]["text"].tolist() == ["hi-there"]
    assert (test.path / "sysinfo_-.html").exists()
    (tmp_path / "afile").touch()
    assert main(["init", str(tmp_path / "afile")]) == 2


def test_id_filter_terms() -> None:
    f = IdFilter(["cca=^bbr$", "20ms"])
    assert f.accepts({"cca": "bbr", "rtt": "20ms"})
    assert not f.accepts({"cca": "bbr2", "rtt": "20ms"})
    assert not f.accepts({"cca": "bbr", "rtt": "40ms"})
    assert IdFilter(["rtt=10ms"]).accepts({"rtt": "110ms"})  # searched, as antler's MatchString
    assert IdFilter(["c.a=cubic"]).accepts({"cca": "cubic"})  # the key is a regex too
    assert not IdFilter() and IdFilter().accepts({"a": "b"})
    with pytest.raises(ValueError, match="is not a regex"):
        IdFilter(["[x"])


def test_config_changes_name_the_paths() -> None:
    old = {"timeout": "660s", "run": {"serial": [{"sleep": "1s"}, {"system": {"command": "a"}}]}}
    new = {"timeout": "10s", "run": {"serial": [{"sleep": "1s"}, {"system": {"command": "b"}}]}, "hmac": True}
    assert config_changes(old, new, "test") == ["test.timeout", "test.run.serial[1].system.command", "test.hmac"]
    assert config_changes(old, old, "test") == []
    assert config_changes([1], [1, 2], "x") == ["x"]
