"""The run tree: validation with paths, combinators, feedback, cancellation and cleanup."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from antler.config.test import parse_run
from antler.node import FeedbackConflict, Run, do, merge
from antler.node.context import Context
from antler.node.feedback import Feedback
from antler.node.items import Item
from antler.node.launch.netns import launch_thread as launch
from antler.node.runners.sleep import Sleep
from antler.node.spec import ConfigError
from tests.lab.trees import errors, logs, run_tree, wait_for

# --- feedback merging: antler once shipped a merge that merged nothing ---


def test_merge_unions_keys() -> None:
    assert merge({"a": 1}, {"b": 2}, {}) == {"a": 1, "b": 2}


def test_merge_refuses_a_repeated_key_naming_it() -> None:
    with pytest.raises(FeedbackConflict, match="'addr'"):
        merge({"addr": "x"}, {"addr": "y"})


# --- validation ---


def test_empty_run_is_valid_and_does_nothing() -> None:
    ok, items, _, _ = run_tree({}, launch=launch)
    assert ok and items == []


def test_two_fields_of_a_run_name_the_path() -> None:
    data = {
        "serial": [
            {"sleep": "1ms"},
            {"sleep": "1ms"},
            {"child": {"node": {"id": "a"}, "serial": [{"sleep": "1ms", "system": {"command": "true"}}]}},
        ]
    }
    with pytest.raises(ConfigError) as e:
        parse_run(data, "test.run")
    assert e.value.path == "test.run.serial[2].child.serial[0]"
    assert "sleep, system" in str(e.value)


def test_unknown_key_names_path_and_known_keys() -> None:
    with pytest.raises(ConfigError) as e:
        parse_run({"parallel": [{"system": {"comand": "true"}}]}, "test.run")
    assert e.value.path == "test.run.parallel[0].system.comand"
    assert "command" in str(e.value)


def test_duration_without_unit_names_the_path() -> None:
    with pytest.raises(ConfigError, match=r"test.run.serial\[0\].sleep: duration 10 has no unit"):
        parse_run({"serial": [{"sleep": 10}]}, "test.run")


def test_child_without_node_is_refused() -> None:
    with pytest.raises(ConfigError, match="child needs a node"):
        parse_run({"child": {"sleep": "1ms"}})


# --- combinators ---


def test_serial_runs_in_order_and_stops_at_first_failure() -> None:
    ok, items, _, _ = run_tree(
        {
            "serial": [
                {"system": {"command": "echo one"}},
                {"system": {"command": "false"}},
                {"system": {"command": "echo three"}},
            ]
        },
        launch=launch,
    )
    assert not ok
    assert logs(items) == ["one", "not started: system (system failed: false: exited with status 1)"]
    assert len(errors(items)) == 1 and errors(items)[0].tag == "system"


def test_parallel_runs_concurrently() -> None:
    start = time.monotonic()
    ok, _, _, _ = run_tree({"parallel": [{"sleep": "1s"}, {"sleep": "1s"}, {"sleep": "1s"}]}, launch=launch)
    assert ok
    # one after another would take 3 s; the margin is for a busy machine
    assert time.monotonic() - start < 2


def test_parallel_failure_cancels_siblings() -> None:
    start = time.monotonic()
    ok, items, _, _ = run_tree(
        {"parallel": [{"sleep": "10s"}, {"serial": [{"sleep": "50ms"}, {"system": {"command": "false"}}]}]},
        launch=launch,
    )
    assert not ok
    assert time.monotonic() - start < 3
    assert [e.tag for e in errors(items)] == ["system"]


def test_schedule_waits_cycle_sequentially() -> None:
    s = parse_run({"schedule": {"wait": ["10ms", "20ms"], "run": [{}, {}, {}, {}]}}).schedule
    assert s is not None
    assert list(s.waits()) == [0.0, 0.01, 0.02, 0.01]
    s = parse_run({"schedule": {"wait": ["10ms", "20ms"], "wait_first": True, "run": [{}, {}, {}]}}).schedule
    assert s is not None
    assert list(s.waits()) == [0.01, 0.02, 0.01]


def test_schedule_random_waits_come_from_the_list() -> None:
    s = parse_run({"schedule": {"wait": ["1ms", "7ms"], "random": True, "run": [{}] * 50}}).schedule
    assert s is not None
    got = set(list(s.waits())[1:])
    assert got == {0.001, 0.007}


def test_schedule_starts_runs_after_waits_and_overlaps_them() -> None:
    cmd = {"command": "date +%s.%N", "stdout": "stream"}
    start = time.time()
    ok, items, _, _ = run_tree(
        {"schedule": {"wait": ["200ms"], "run": [{"system": cmd}, {"system": cmd}, {"system": cmd}]}}, launch=launch
    )
    assert ok
    times = sorted(float(t) - start for t in logs(items))
    assert times[1] - times[0] == pytest.approx(0.2, abs=0.1)
    assert times[2] - times[0] == pytest.approx(0.4, abs=0.1)


def test_sequential_schedule_waits_for_each_run() -> None:
    start = time.monotonic()
    ok, _, _, _ = run_tree(
        {"schedule": {"wait": ["100ms"], "sequential": True, "run": [{"sleep": "200ms"}, {"sleep": "200ms"}]}},
        launch=launch,
    )
    assert ok
    assert time.monotonic() - start >= 0.5


# --- feedback through the tree ---


@dataclass(frozen=True)
class _Emit:
    """A test runner returning fixed feedback and logging the feedback it saw."""

    key: str
    seen: ClassVar[list[Feedback]] = []

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        _Emit.seen.append(dict(feedback))
        return {self.key: ctx.node_id}


def _emit_run(key: str) -> Run:
    r = Run(sleep=Sleep.from_scalar("0s"))
    object.__setattr__(r, "sleep", _Emit(key))
    return r


@dataclass(frozen=True)
class _RecordError:
    """A test runner that records an Error and returns normally, as a server's background task would."""

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        ctx.rec.error("something broke in the background")
        return {}


def test_an_error_recorded_in_the_background_ends_the_test() -> None:
    r = Run(sleep=Sleep.from_scalar("0s"))
    object.__setattr__(r, "sleep", _RecordError())
    tree = Run(parallel=(r, Run(sleep=Sleep.from_scalar("30s"))))
    items: list[Item] = []
    start = time.monotonic()
    assert not asyncio.run(do(tree, items.append))
    # The 30 s sibling was cancelled by the first Error, not waited for.
    assert time.monotonic() - start < 10
    assert [e.message for e in errors(items)] == ["something broke in the background"]
    assert errors(items)[0].tag == "sleep"  # the runner's type, set by the executor


def test_serial_passes_earlier_feedback_to_later_runs() -> None:
    _Emit.seen.clear()
    tree = Run(serial=(_emit_run("a"), _emit_run("b"), _emit_run("c")))
    items: list[Item] = []
    assert asyncio.run(do(tree, items.append))
    assert _Emit.seen == [{}, {"a": "-"}, {"a": "-", "b": "-"}]


def test_parallel_merges_feedback_and_conflict_is_an_error() -> None:
    _Emit.seen.clear()
    tree = Run(serial=(Run(parallel=(_emit_run("a"), _emit_run("b"))), _emit_run("c")))
    items: list[Item] = []
    assert asyncio.run(do(tree, items.append))
    assert _Emit.seen[-1] == {"a": "-", "b": "-"}
    items.clear()
    tree = Run(parallel=(_emit_run("x"), _emit_run("x")))
    assert not asyncio.run(do(tree, items.append))
    assert "'x'" in errors(items)[0].message


# --- cancellation and cleanup ---


def test_background_commands_are_stopped_in_reverse_order_at_the_end(tmp_path: Any) -> None:
    log = tmp_path / "order"
    # Each command says it is ready once its trap is set; the tree ends only then.
    script = "trap 'echo {n} >> " + str(log) + "; exit 0' INT; touch {ready}; while true; do sleep 0.05; done"
    ready = [tmp_path / "ready1", tmp_path / "ready2"]
    tree = {
        "serial": [
            {"system": {"command": "sh -c", "args": [script.format(n=1, ready=ready[0])], "background": True}},
            {"system": {"command": "sh -c", "args": [script.format(n=2, ready=ready[1])], "background": True}},
            wait_for(*ready),
        ]
    }
    ok, _items, _, _ = run_tree(tree, launch=launch)
    assert ok
    assert log.read_text().split() == ["2", "1"]


def test_timeout_cancels_the_tree_and_cleanup_still_runs(tmp_path: Any) -> None:
    marker = tmp_path / "stopped"
    tree = {
        "serial": [
            {
                "system": {
                    "command": "sh -c",
                    "args": [f"trap 'touch {marker}; exit 0' INT; while true; do sleep 0.05; done"],
                    "background": True,
                }
            },
            {"sleep": "30s"},
        ]
    }
    from antler.node.metric import Duration

    start = time.monotonic()
    ok, items, _, _ = run_tree(tree, timeout=Duration.parse("300ms"), launch=launch)
    assert not ok
    assert time.monotonic() - start < 5
    assert marker.exists()
    assert any("timed out" in e.message for e in errors(items))


def test_control_cancel_reaches_a_foreground_command(tmp_path: Any) -> None:
    from antler.node import Control

    running = tmp_path / "running"
    tree = parse_run({"system": {"command": "sh -c", "args": [f"touch {running}; exec sleep 30"]}})

    async def main() -> tuple[bool, float]:
        control = Control()
        items: list[Item] = []
        task = asyncio.ensure_future(do(tree, items.append, control=control))
        await _until(running)  # the command is running: the cancel must reach it
        start = time.monotonic()
        control.cancel()
        ok = await task
        return ok, time.monotonic() - start

    ok, took = asyncio.run(main())
    assert not ok
    assert took < 2


async def _until(path: Any, seconds: float = 10.0) -> None:
    """_until waits for a file to appear (a readiness signal), failing after the deadline."""
    async with asyncio.timeout(seconds):
        while not path.exists():
            await asyncio.sleep(0.01)


def test_a_cancel_during_cleanup_is_raised_after_the_cleanup(tmp_path: Any) -> None:
    # A second Ctrl-C while a background command takes its time to stop: the
    # cleanup completes, and then the cancel is raised, never swallowed.
    armed, stopping, stopped = tmp_path / "armed", tmp_path / "stopping", tmp_path / "stopped"
    script = f"trap 'touch {stopping}; sleep 0.5; touch {stopped}; exit 0' INT; touch {armed}; while true; do sleep 0.05; done"
    tree = parse_run(
        {"serial": [{"system": {"command": "sh -c", "args": [script], "background": True}}, wait_for(armed)]}
    )

    async def main() -> None:
        items: list[Item] = []
        task = asyncio.ensure_future(do(tree, items.append))
        await _until(stopping)  # the cleanup has interrupted the command
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert stopped.exists()


def test_child_nodes_in_namespaces_are_launched_before_runs_and_removed_after() -> None:
    from tests.lab.netns import netns_list, unique_name

    name = unique_name("c")
    ok, items, _, _ = run_tree(
        {
            "serial": [
                {"system": {"command": "ip netns list", "stdout": "stream"}},
                {
                    "child": {
                        "node": {"id": "n1", "netns": {"name": name, "create": True}},
                        "system": {"command": "ip -o link", "stdout": "stream"},
                    }
                },
            ]
        },
        launch=launch,
    )
    assert ok
    lines = logs(items)
    # launched before the first run: the root's first command already sees it
    assert any(line.split()[0] == name for line in lines if line)
    # inside the namespace there is only loopback
    links = [line for line in lines if ": lo:" in line or "link/ether" in line]
    assert len(links) == 1 and ": lo:" in links[0]
    assert name not in netns_list()
