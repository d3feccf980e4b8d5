"""The system runner: each stdout/stderr mode, errors, background and kill."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from antler.config.test import parse_run
from antler.node import Error, FileData, LogEntry, do
from antler.node.items import Item

SCRIPT = "echo out1; echo out2; echo err1 >&2"


def run(system: dict[str, Any]) -> tuple[bool, list[Item]]:
    items: list[Item] = []
    ok = asyncio.run(do(parse_run({"system": system}), items.append))
    return ok, items


def texts(items: list[Item]) -> list[str]:
    return [i.text for i in items if isinstance(i, LogEntry)]


def test_default_mode_gathers_output_into_one_log_entry() -> None:
    ok, items = run({"command": "sh -c", "args": [SCRIPT]})
    assert ok
    assert sorted(texts(items)) == ["err1", "out1\nout2"]


def test_stream_mode_logs_each_line() -> None:
    ok, items = run({"command": "sh -c", "args": [SCRIPT], "stdout": "stream", "stderr": "quiet"})
    assert ok
    assert texts(items) == ["out1", "out2"]


def test_quiet_mode_discards_output() -> None:
    ok, items = run({"command": "sh -c", "args": [SCRIPT], "stdout": "quiet", "stderr": "quiet"})
    assert ok and texts(items) == []


def test_file_mode_saves_output_as_a_file() -> None:
    ok, items = run({"command": "sh -c", "args": ["head -c 200000 /dev/zero | tr '\\0' x"], "stdout": "out.txt"})
    assert ok
    chunks = [i for i in items if isinstance(i, FileData)]
    assert {c.name for c in chunks} == {"out.txt"}
    assert b"".join(c.data for c in chunks) == b"x" * 200000


def test_command_is_split_on_spaces_then_args_appended() -> None:
    ok, items = run({"command": "printf %s|%s|", "args": ["a b", "c"], "stdout": "stream"})
    assert ok
    assert texts(items) == ["a b|c|"]


def test_failing_command_is_an_error_with_its_status() -> None:
    ok, items = run({"command": "sh -c", "args": ["exit 3"]})
    assert not ok
    errs = [i for i in items if isinstance(i, Error)]
    assert len(errs) == 1 and "status 3" in errs[0].message and errs[0].tag == "system"


def test_ignore_errors_logs_instead_of_failing() -> None:
    ok, items = run({"command": "sh -c", "args": ["exit 3"], "ignore_errors": True})
    assert ok
    assert any("status 3" in t for t in texts(items))


def test_missing_command_is_an_error_not_a_crash() -> None:
    ok, items = run({"command": "no-such-command-antler"})
    assert not ok
    assert "could not start" in next(i for i in items if isinstance(i, Error)).message


def test_background_kill_true_kills_without_interrupting_first(tmp_path: Path) -> None:
    # The command outlives an interrupt (its trap notes it and carries on):
    # with kill it is killed at once, never interrupted, so the note stays unwritten.
    ready, interrupted = tmp_path / "ready", tmp_path / "interrupted"
    script = f"trap 'echo INT >> {interrupted}' INT; touch {ready}; while true; do sleep 0.05; done"
    waiter = f"until [ -e {ready} ]; do sleep 0.01; done"
    items: list[Item] = []
    tree = {
        "serial": [
            {"system": {"command": "sh -c", "args": [script], "background": True, "kill": True}},
            {"system": {"command": "timeout 10 sh -c", "args": [waiter]}},
        ]
    }
    assert asyncio.run(do(parse_run(tree), items.append))
    assert ready.exists() and not interrupted.exists()


def test_env_vars_of_the_node_reach_commands() -> None:
    tree = {
        "child": {
            "node": {"id": "e1", "env": {"vars": ["ANTLER_T=42"], "inherit": False}},
            "system": {"command": "sh -c", "args": ["echo $ANTLER_T $HOME"], "stdout": "stream"},
        }
    }
    items: list[Item] = []
    from antler.node.launch.netns import launch_thread as launch

    assert asyncio.run(do(parse_run(tree), items.append, launch=launch))
    assert texts(items) == ["42"]
