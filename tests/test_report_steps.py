"""A report step is one class: registered once, it is parsed from the config, run, and remade by a re-run."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import pytest

from antler.node.spec import ConfigError, parse
from antler.report.analyze import analyze
from antler.report.pipeline import report_outputs, run_after
from antler.report.rerun import report
from antler.report.spec import After, Analyze
from antler.report.step import STEPS, Step, StepContext, register
from antler.results.tables import TestResult

pytestmark = pytest.mark.no_netns

FIXTURE = Path(__file__).parent / "data" / "result"


@pytest.fixture
def count_flows() -> Iterator[type[Step]]:
    """Register a step written here, as a user would write one, and unregister it after the test."""
    with patch.dict(STEPS):

        @register("count_flows")
        @dataclass(frozen=True)
        class CountFlows(Step):
            """Writes the number of flows the analysis found to ``to``."""

            to: str = "flow_count.txt"

            def outputs(self) -> set[str]:
                return {self.to}

            def run(self, ctx: StepContext) -> list[Path]:
                path = ctx.path / self.to
                path.write_text(f"{len(ctx.analysis().flows)}\n")
                return [path]

        yield CountFlows


def test_a_new_step_is_one_class(tmp_path: Path, count_flows: type[Step]) -> None:
    test_dir = tmp_path / "cca-bbr"
    shutil.copytree(FIXTURE / "cca-bbr", test_dir)
    flows = len(analyze(TestResult(test_dir)).flows)
    assert flows > 0
    after = parse(After, {"default": [], "report": [{"count_flows": {"to": "n.txt"}}]}, "test.after")
    name, step = after.report[0].step()
    assert name == "count_flows" and isinstance(step, count_flows)
    assert report_outputs(after) == {"n.txt"}
    assert run_after(test_dir, after) == []
    assert (test_dir / "n.txt").read_text() == f"{flows}\n"
    assert sorted(p.name for p in test_dir.iterdir()) == sorted(
        [*(p.name for p in (FIXTURE / "cca-bbr").iterdir()), "n.txt"]
    )


def test_a_new_step_is_made_afresh_by_a_rerun(tmp_path: Path, count_flows: type[Step]) -> None:
    src = tmp_path / "src"
    shutil.copytree(FIXTURE / "cca-bbr", src)
    meta = json.loads((src / "meta.json").read_text())
    meta["config"] = {"test": {"after": {"default": [{"count_flows": {}}]}}}
    (src / "meta.json").write_text(json.dumps(meta))
    (src / "flow_count.txt").write_text("stale\n")
    out = report(src, tmp_path / "out")
    made = out / "flow_count.txt"
    assert made.read_text() == f"{len(analyze(TestResult(src)).flows)}\n"
    assert made.stat().st_ino != (src / "flow_count.txt").stat().st_ino
    assert (src / "flow_count.txt").read_text() == "stale\n"  # the source is never touched


def test_step_config_errors_name_the_path(count_flows: type[Step]) -> None:
    with pytest.raises(ConfigError, match=r"^test.after.report\[0\].count_flows.to: expected text"):
        parse(After, {"report": [{"count_flows": {"to": ["a", "b"]}}]}, "test.after")
    with pytest.raises(ConfigError, match=r"^test.after.report\[0\].count_flow: unknown key .*count_flows"):
        parse(After, {"report": [{"count_flow": {}}]}, "test.after")
    with pytest.raises(
        ConfigError, match=r"^test.after.report\[0\]: a report step has exactly one of .*found analyze, count"
    ):
        parse(After, {"report": [{"analyze": {}, "count_flows": {}}]}, "test.after")


def test_a_step_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'analyze' is Analyze already"):

        @register("analyze")
        @dataclass(frozen=True)
        class Other(Analyze):
            pass

    assert STEPS["analyze"] is Analyze
