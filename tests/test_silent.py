"""Nothing fails or stops silently (issue 16, part 6).

A runner canceled because a sibling failed says so in the log, runs that
never start say so, every flow the test named has a row in flows.parquet with
its status and error, and when Ray kills a node the terminal shows the tool's
own one-line error, Ray's paragraph staying in the node's log.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.config.test import parse_run
from antler.node.items import Error, FlowStatus, Item, LogEntry
from antler.node.launch.netns import launch_thread
from antler.node.root import do
from antler.results import load
from tests.lab.netns import NetnsFactory, unique_name

ISSUE_TREE = """# @package _global_
test:
  id: {experiment: silent}
  run:
    parallel:
      - stream_client: {addr: "127.0.0.1:9", upload: {flow: refused, duration: 1s}}
      - serial:
          - sleep: 1s
          - stream_client: {addr: "127.0.0.1:9", upload: {flow: later, duration: 1s}}
      - packet_client: {addr: "127.0.0.1:9", flow: probe, sender: [{unresponsive: {wait: [10ms], duration: 5s}}]}
"""


def test_a_flow_canceled_by_a_failing_sibling_has_a_log_line_and_a_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: the second flow was canceled when the first failed and appeared nowhere."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c" / "experiment").mkdir(parents=True)
    (tmp_path / "c" / "experiment" / "silent.yaml").write_text(ISSUE_TREE)
    assert main(["run", "--config-dir", str(tmp_path / "c"), "+experiment=silent"]) == 1
    test = load(tmp_path / "results" / "latest")["experiment-silent"]
    log = (test.path / "log.txt").read_text()
    assert "sleep: canceled: stream_client flow refused failed: flow refused: connect to 127.0.0.1:9" in log
    assert "not started: stream_client flow later (stream_client flow refused failed:" in log
    assert "packet_client: canceled (flow probe): stream_client flow refused failed:" in log
    flows = pd.read_parquet(test.path / "flows.parquet").set_index("flow")
    assert set(flows.index) == {"refused", "later", "probe"}
    row = {f: flows.loc[f].to_dict() for f in flows.index}
    assert row["refused"]["status"] == "failed" and "Connection refused" in str(row["refused"]["error"])
    assert row["later"]["status"] == "cancelled"
    assert str(row["later"]["error"]).startswith("never started: stream_client flow refused failed")
    assert row["later"]["kind"] == "stream" and pd.isna(row["later"]["goodput_mbps"])
    assert row["probe"]["status"] == "cancelled" and row["probe"]["kind"] == "packet"
    # The comparison page has a row for every flow, the one that never started too.
    index = (test.path.parent / "index.html").read_text()
    assert all(f in index for f in ("refused", "later", "probe"))


def test_a_node_canceled_from_another_node_logs_why(netns: NetnsFactory) -> None:
    a, b = netns.new("sa"), netns.new("sb")
    items: list[Item] = []
    tree = {
        "parallel": [
            {"child": {"node": {"id": "failing", "netns": {"name": a.name}}, "system": {"command": "false"}}},
            {"child": {"node": {"id": "waiting", "netns": {"name": b.name}}, "serial": [
                {"sleep": "20s"}, {"packet_client": {"addr": "127.0.0.1:9", "flow": "next", "sender": [{"unresponsive": {}}]}},
            ]}},
        ]
    }  # fmt: skip
    assert not asyncio.run(do(parse_run(tree), items.append, launch=launch_thread))
    waiting = [i.text for i in items if isinstance(i, LogEntry) and i.node_id == "waiting"]
    # The failure reaches "waiting" as its sibling's failure or as the test's first error, whichever comes first.
    (canceled,) = [t for t in waiting if t.startswith("canceled: ")]
    assert canceled.endswith("false: exited with status 1"), waiting
    assert any(t.startswith("not started: packet_client flow next (") and "false: exited" in t for t in waiting)
    (status,) = [i for i in items if isinstance(i, FlowStatus)]
    assert (status.node_id, status.flow, status.status) == ("waiting", "next", "cancelled")


def test_a_timeout_says_so_in_every_canceled_runner() -> None:
    items: list[Item] = []
    from antler.node.metric import Duration

    ok = asyncio.run(do(parse_run({"sleep": "10s"}), items.append, timeout=Duration.parse("200ms")))
    assert not ok
    # What was still running when the test timed out held it up: an Error names it.
    assert [i.text for i in items if isinstance(i, LogEntry)] == []
    assert [(i.tag, i.message) for i in items if isinstance(i, Error)] == [
        ("sleep", "still running when the test timed out after 200ms"),
        ("node", "test timed out after 200ms"),
    ]


KILLED = """# @package _global_
test:
  id: {{experiment: killed}}
  run:
    parallel:
      - child:
          node: {{id: victim, netns: {{name: {ns}, create: true}}}}
          serial:
            - sleep: 300ms
            - system: {{command: sh, args: ["-c", "kill -9 $PPID"]}}
            - sleep: 30s
      - child:
          node: {{id: bystander}}
          sleep: 30s
"""


def test_when_ray_kills_a_node_the_tools_own_error_comes_first(tmp_path: Path) -> None:
    """Issue 16: Ray's multi-line "possibly out of memory" paragraph came before the tool's one-line error."""
    (tmp_path / "c" / "experiment").mkdir(parents=True)
    (tmp_path / "c" / "experiment" / "killed.yaml").write_text(KILLED.format(ns=unique_name("rk")))
    done = subprocess.run(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(tmp_path / "c"), "+experiment=killed"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    terminal = done.stdout + done.stderr
    ours = terminal.find("victim node: error: node 'victim'")
    assert ours >= 0, terminal
    ray = terminal.find("A worker died")
    assert ray == -1 or ray > ours, terminal
    log = (tmp_path / "results" / "latest" / "experiment-killed" / "log.txt").read_text()
    assert "victim diagnostics: Ray: A worker died" in log or ray > ours
    assert "bystander sleep: canceled: serial on node victim failed: node 'victim'" in log, log
