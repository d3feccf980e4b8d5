"""Expectations (test.expect): the grammar, its refusals, evaluation on stored results, vet and run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from antler.cli import main
from antler.report.expect import ExpectationError, apply_expectations, parse_expectation
from antler.report.pipeline import run_after
from antler.report.spec import After
from tests.lab.competition import write_competition

pytestmark = pytest.mark.no_netns

FLOWS = ["a", "b", "c", "ping"]


def test_grammar_parses_tables_flows_columns_and_units() -> None:
    e = parse_expectation("flows.a.goodput_mbps >= 40", FLOWS)
    assert (e.table, e.flow, e.column, e.op, e.bound) == ("flows", "a", "goodput_mbps", ">=", 40.0)
    assert parse_expectation("summary.jain>=0.9").flow == ""
    assert parse_expectation("flows.ping.rtt_ms_p99 < 0.05 s", FLOWS).bound == pytest.approx(50.0)
    assert parse_expectation("flows.*.goodput_mbps > 1Gbit/s", FLOWS).bound == pytest.approx(1000.0)
    assert parse_expectation("flows.ping.loss_pct <= 1%", FLOWS).bound == 1.0
    assert parse_expectation("summary.share_bbr != 0").column == "share_bbr"
    assert parse_expectation("flows.sc-1.fct_s < 250ms").flow == "sc-1"  # no flow list: any ID


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("flowz.a.goodput_mbps >= 1", "unknown table 'flowz'"),
        ("flows.a.goodput >= 1", "unknown column 'goodput'"),
        ("flows.tpc.goodput_mbps >= 1", "unknown flow 'tpc'"),
        ("summary.a.jain >= 1", "no flow"),
        ("flows.goodput_mbps >= 1", "needs a flow"),
        ("flows.a.goodput_mbps >= 1 ms", "does not convert"),
        ("summary.jain >= 1 %", "has no unit"),
        ("flows.a.goodput_mbps => 1", "is not TABLE"),
        ("flows.a.goodput_mbps >= __import__('os')", "is not TABLE"),
        ("flows.a.status == 1", "unknown column 'status'"),
    ],
)
def test_bad_expectations_are_refused_naming_the_problem(text: str, names: str) -> None:
    with pytest.raises(ExpectationError, match=names.replace("(", r"\(")):
        parse_expectation(text, FLOWS)


def test_outcomes_go_into_meta_and_a_failure_fails_the_test(tmp_path: Path) -> None:
    test = write_competition(tmp_path)
    assert run_after(test, After()) == []
    meta = json.loads((test / "meta.json").read_text())
    meta["status"] = "ok"
    meta["config"] = {
        "test": {
            "expect": [
                "flows.a.goodput_mbps >= 29",  # 30 Mbit/s for 4 s
                "summary.jain >= 0.99",  # 0.9608
                "flows.*.rtt_ms_loaded_p99 < 50",
                "flows.b.rtt_ms_median < 1",  # a stream flow's RTT: none recorded here
            ]
        }
    }
    failed = apply_expectations(test, meta)
    assert failed == ["summary.jain >= 0.99", "flows.b.rtt_ms_median < 1"]
    stored = json.loads((test / "meta.json").read_text())
    assert stored["status"] == "failed" and stored["failed_expectations"] == failed
    got = {o["expect"]: o for o in stored["expectations"]}
    assert got["flows.a.goodput_mbps >= 29"]["pass"] and got["flows.a.goodput_mbps >= 29"]["value"] == pytest.approx(30)
    assert got["summary.jain >= 0.99"]["value"] == pytest.approx(44100 / 45900, abs=1e-9)
    assert got["flows.*.rtt_ms_loaded_p99 < 50"] == {
        "expect": "flows.*.rtt_ms_loaded_p99 < 50", "value": {"ping": pytest.approx(40.0)}, "pass": True,
    }  # fmt: skip
    assert got["flows.b.rtt_ms_median < 1"]["value"] is None


def test_a_test_without_expectations_is_left_alone(tmp_path: Path) -> None:
    test = write_competition(tmp_path)
    before = (test / "meta.json").read_text()
    assert apply_expectations(test, json.loads(before)) == []
    assert (test / "meta.json").read_text() == before


EXP = """# @package _global_
test:
  id: {experiment: ex}
  expect: [EXPECT]
  run:
    system: {command: 'echo hi'}
"""


def test_vet_refuses_an_unknown_flow_and_run_fails_an_unmet_expectation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    exp = conf / "experiment" / "ex.yaml"
    exp.write_text(EXP.replace("EXPECT", "'flows.tcp.goodput_mbps >= 40'"))
    assert main(["vet", "--config-dir", str(conf), "+experiment=ex"]) == 2
    err = capsys.readouterr().err
    assert "test.expect[0]" in err and "unknown flow 'tcp'" in err
    assert not (tmp_path / "results").exists()
    exp.write_text(EXP.replace("EXPECT", "'summary.flows >= 1', 'summary.failed == 0'"))
    assert main(["run", "--config-dir", str(conf), "+experiment=ex"]) == 1
    err = capsys.readouterr().err
    assert "summary.flows >= 1" in err and "summary.failed == 0" not in err
    meta = json.loads((tmp_path / "results" / "latest" / "experiment-ex" / "meta.json").read_text())
    assert meta["status"] == "failed" and meta["failed_expectations"] == ["summary.flows >= 1"]
    assert [o["pass"] for o in meta["expectations"]] == [False, True]
