"""The antler-ray command: run, vet, list, sweeps, bad input and interruption."""

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
from antler.config.compose import compose_jobs, experiments
from antler.results import load

EXP = """# @package _global_
cca: cubic
test:
  id: {{experiment: {name}}}
  run:
{run}
"""


def write_exp(folder: Path, name: str, run: str, extra: str = "") -> Path:
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    (folder / "experiment" / f"{name}.yaml").write_text(EXP.format(name=name, run=run) + extra)
    return folder


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_list_shows_packaged_and_user_experiments(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_exp(cwd / "mine", "mytest", "    sleep: 1ms")
    assert main(["list", "--config-dir", str(conf)]) == 0
    names = capsys.readouterr().out.split()
    assert "hello" in names and "mytest" in names


def test_vet_prints_the_resolved_tree_and_runs_nothing(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write_exp(cwd / "mine", "v", "    system: {command: 'echo ${cca}'}")
    assert main(["vet", "--config-dir", str(conf), "+experiment=v", "cca=bbr"]) == 0
    assert "echo bbr" in capsys.readouterr().out
    assert not (cwd / "results").exists()


def test_sweep_runs_one_test_per_combination_into_one_folder(cwd: Path) -> None:
    conf = write_exp(cwd / "mine", "sw", "    system: {command: 'echo ${cca} ${x}', stdout: stream}", "x: 1\n")
    assert main(["run", "-m", "--config-dir", str(conf), "+experiment=sw", "cca=cubic,bbr", "x=1,2"]) == 0
    res = load(cwd / "results" / "latest")
    ids = sorted((t.id["cca"], t.id["x"]) for t in res.values())
    assert ids == [("bbr", "1"), ("bbr", "2"), ("cubic", "1"), ("cubic", "2")]
    for t in res.values():
        assert t["log"]["text"].tolist() == [f"{t.id['cca']} {t.id['x']}"]
    assert not (cwd / "outputs").exists() and not (cwd / "multirun").exists()
    log = res.concat("log")
    assert set(log["cca"]) == {"cubic", "bbr"}


@pytest.mark.parametrize("spelling", ['q=pfifo,"bfifo limit 50000"', "q=pfifo,bfifo limit 50000"])
def test_a_swept_value_with_spaces_gives_the_same_tests_quoted_or_not(cwd: Path, spelling: str) -> None:
    """Issue 16: the quoted spelling exited 2 with a test-ID message about '_bfifo_limit_50000_'."""
    conf = write_exp(cwd / "mine", "sp", "    system: {command: 'echo', args: ['${q}'], stdout: stream}", "q: x\n")
    assert main(["run", "-m", "--config-dir", str(conf), "+experiment=sp", spelling]) == 0
    res = load(cwd / "results" / "latest")
    applied = {t.id["q"]: t["log"]["text"].tolist() for t in res.values()}
    assert applied == {"pfifo": ["pfifo"], "bfifo_limit_50000": ["bfifo limit 50000"]}
    index = (cwd / "results" / "latest" / "index.html").read_text()
    assert "q = bfifo limit 50000" in index, "the index shows the value the test applied"


def test_meta_json_records_id_config_versions_kernel_and_format(cwd: Path) -> None:
    assert main(["run", "+experiment=hello"]) == 0
    test_dir = cwd / "results" / "latest" / "experiment-hello"
    meta = json.loads((test_dir / "meta.json").read_text())
    assert meta["test_id"] == {"experiment": "hello"}
    assert meta["format_version"] == 2
    assert meta["status"] == "ok"
    assert meta["config"]["test"]["run"]["serial"][0]["system"]["command"] == "echo Hello World!"
    assert "ray" in meta["versions"] and "antler-ray" in meta["versions"]
    assert meta["host"]["kernel"].startswith("Linux")
    assert (test_dir / "config.yaml").exists()


def test_results_are_never_overwritten(cwd: Path) -> None:
    assert main(["run", "+experiment=hello"]) == 0
    first = (cwd / "results" / "latest").resolve()
    assert main(["run", "-a", "+experiment=hello"]) == 0  # -a: it passed, so it would be linked
    second = (cwd / "results" / "latest").resolve()
    assert first != second and first.exists() and second.exists()
    assert (first / "experiment-hello" / "log.txt").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["+experiment=nosuch"], "unknown experiment 'nosuch'"),
        (["+experiment=hello", "nokey=1"], "Could not override 'nokey'"),
        (["+experiment=hello", "test.run.serial.1.sleep=10"], "test.run.serial[1].sleep: duration 10 has no unit"),
        (["+experiment=hello", "+test.run.serial.0.system.bogus=1"], "test.run.serial[0].system.bogus: unknown key"),
        (["+experiment=hello", "+test.run.serial.0.sleep=1ms"], "test.run.serial[0]: a run has exactly one of"),
        (["+experiment=hello", "test.id.experiment=Bad.x"], "test ID value 'Bad.x'"),
        (["+experiment=hello", "cca=a,b"], "add -m"),
    ],
)
def test_config_errors_exit_2_with_path_and_no_results(
    cwd: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    assert_config_error(cwd, capsys, ["run", *args], needle)


def assert_config_error(cwd: Path, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    """Run the command and check it exits 2 with needle in a short message, writing nothing."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert not (cwd / "results").exists()


FLOWS = """    serial:
      - stream_client: {addr: "127.0.0.1:9", upload: {flow: tcp}}
      - packet_client: {addr: "127.0.0.1:9", flow: echo, sender: [{unresponsive: {}}]}"""


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["+test.after.report=[{charts_time_series: {flow_label: {bluk: Bulk}}}]"],
            "test.after.report[0].charts_time_series.flow_label.bluk: no flow 'bluk' (flows: echo, tcp)",
        ),
        (
            ["+test.after.report=[{emit_log: {}}, {charts_fct: {flow_label: {tpc: TCP}}}]"],
            "test.after.report[1].charts_fct.flow_label.tpc: no flow 'tpc' (flows: echo, tcp)",
        ),
        (
            ["+test.after.report=[{charts_fct: {series: [{pattern: tcp, name: T}, {pattern: '^echo', name: E}]}}]"],
            "test.after.report[0].charts_fct.series[1].pattern: no stream flow matches '^echo' (stream flows: tcp)",
        ),
        (["index.flow=cubic"], "index.flow: no flow matches 'cubic' (flows: echo, tcp)"),
        (["index.flow='('"], "index: flow '(': missing ), unterminated subpattern"),
    ],
)
def test_a_flow_a_report_names_must_be_one_the_test_runs(
    cwd: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    conf = write_exp(cwd / "mine", "fl", FLOWS)
    assert main(["vet", "--config-dir", str(conf), "+experiment=fl"]) == 0
    capsys.readouterr()
    assert_config_error(cwd, capsys, ["run", "--config-dir", str(conf), "+experiment=fl", *args], needle)


def test_flow_names_are_checked_on_the_resolved_tree(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # fct's flow IDs come from ${each:...} (f0-cubic, f1-bbr, ...): the
    # patterns are checked against what the resolvers made.
    series = "+test.after.report=[{charts_fct: {series: [{pattern: '-cubic$', name: CUBIC}, {pattern: '-bbr$', name: BBR}]}}]"
    assert main(["vet", "+experiment=fct", "flows=4", series, "index.flow='^f3-'"]) == 0
    capsys.readouterr()
    assert main(["vet", "+experiment=fct", "flows=4", "index.flow='^f4-'"]) == 2
    assert "index.flow: no flow matches '^f4-' (flows: f0-cubic, f1-bbr, f2-cubic, f3-bbr)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cubic", "ratedrop", "tcpinfo", "vbrudp"])
def test_a_sweep_of_a_shipped_experiment_keeps_its_flow_ids(name: str) -> None:
    # The index draws a line per flow across the swept values only if every
    # test of the sweep names its flows alike (cca is a column, not an ID).
    jobs = compose_jobs([f"+experiment={name}", "cca=cubic,bbr", "rig.rtt=10ms,40ms"], multirun=True)
    assert [(j.test.id["cca"], j.test.id["rig_rtt"]) for j in jobs] == [
        ("cubic", "10ms"),
        ("cubic", "40ms"),
        ("bbr", "10ms"),
        ("bbr", "40ms"),
    ]
    flows = {tuple(j.test.flows()) for j in jobs}
    assert len(flows) == 1 and "tcp" in flows.pop()


@pytest.mark.parametrize("name", experiments())
def test_every_shipped_experiment_vets(name: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["vet", f"+experiment={name}"]) == 0, capsys.readouterr().err


def test_failed_runner_exits_1_with_error_in_errors_parquet_and_log(cwd: Path) -> None:
    conf = write_exp(cwd / "mine", "bad", "    system: {command: 'sh -c', args: ['exit 4']}")
    assert main(["run", "--config-dir", str(conf), "+experiment=bad"]) == 1
    test = load(cwd / "results" / "latest")["experiment-bad"]
    assert test["errors"]["message"].str.contains("status 4").all()
    assert "error:" in (test.path / "log.txt").read_text()
    assert test.meta["status"] == "failed"


def test_interrupted_test_keeps_what_it_measured(cwd: Path) -> None:
    conf = write_exp(
        cwd / "mine",
        "long",
        "    system: {command: 'sh -c', args: ['for i in $(seq 1000); do echo tick $i; sleep 0.05; done'], stdout: stream}",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(conf), "+experiment=long"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 5 and time.monotonic() < deadline:
            if "tick" in proc.stdout.readline():
                seen += 1
        os.kill(proc.pid, signal.SIGINT)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    test = load(cwd / "results" / "latest")["experiment-long"]
    ticks = test["log"]["text"].tolist()
    assert len(ticks) >= 5 and ticks[0] == "tick 1"
    assert test.meta["status"] == "interrupted"


def test_invalid_yaml_in_an_experiment_is_a_config_error(cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cwd / "c" / "experiment").mkdir(parents=True)
    (cwd / "c" / "experiment" / "y.yaml").write_text("test:\n  id: {experiment: y}\n  run: a: b\n")
    assert main(["run", "--config-dir", str(cwd / "c"), "+experiment=y"]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML" in err and "Traceback" not in err
    assert not (cwd / "results").exists()
