"""The local launcher: nodes as child processes speaking the wire protocol over stdio, in namespaces they create."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from antler.cli import main
from antler.config.test import parse_run
from antler.node import Control, Duration, Node, do
from antler.node.items import Item
from antler.node.launch import Launchers, child
from antler.node.launch.local import command
from antler.node.nodespec import Launcher, Local, Netns
from antler.node.spec import ConfigError
from antler.results import load
from tests.lab.netns import netns_list, unique_name
from tests.lab.trees import errors, local, logs, processes_with, run_tree, veth, write_experiment

NET = "10.77.12"
"""NET is the /24 these tests put on the veths between their namespaces."""


def node_processes() -> list[str]:
    """List the command lines of antler node processes that are this process's descendants."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if "antler.node" in cmd or ".pyz" in cmd:
            out.append(cmd)
    return out


def test_two_local_nodes_in_namespaces_they_create_carry_a_tcp_flow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns_s, ns_c = unique_name("ls"), unique_name("lc")
    run = {
        "serial": [
            {
                "child": {
                    "node": local("server", ns_s),
                    "serial": [
                        *veth(NET, ns_c, "vs", "vc"),
                        {"stream_server": {"listen_addr": f"{NET}.1:0", "listen_addr_key": "server"}},
                    ],
                }
            },
            {
                "child": {
                    "node": local("client", ns_c),
                    "serial": [
                        {"system": {"command": "ip netns identify"}},
                        {
                            "stream_client": {
                                "addr_key": "server",
                                "upload": {"flow": "up", "duration": "1s", "sample_io_interval": "10ms"},
                            }
                        },
                    ],
                }
            },
        ]
    }
    write_experiment(tmp_path / "conf", "pair", run)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config-dir", str(tmp_path / "conf"), "+experiment=pair"]) == 0
    res = load(tmp_path / "results" / "latest")["experiment-pair"]
    io = res["stream_io"]
    assert set(io["server"]) == {True, False}, "both ends recorded samples"
    flow = res["flows"].set_index("flow").loc["up"]
    assert flow["goodput_mbps"] > 1
    assert ns_c in res["log"]["text"].tolist()
    nodes = {n["id"]: n for n in res.meta["nodes"]}
    for node_id, ns in (("server", ns_s), ("client", ns_c)):
        facts = nodes[node_id]
        assert facts["launcher"] == "local" and facts["netns"] == ns and facts["netns_created"]
        assert facts["host"] and facts["clock_offset_ns"] == 0 and facts["same_clock"] and facts["clock_rtt_ns"] > 0
        assert facts["pid"] != os.getpid() and facts["command"].endswith(f"-m antler.node {node_id}")
    assert not {ns_s, ns_c} & netns_list()
    assert node_processes() == []


def test_a_local_node_launches_local_nodes_of_its_own() -> None:
    inner_ns = unique_name("li")
    run = {
        "child": {
            "node": local("outer"),
            "serial": [
                {"system": {"command": "sh", "args": ["-c", "echo outer $PPID"]}},
                {
                    "child": {
                        "node": local("inner", inner_ns),
                        "system": {"command": "sh", "args": ["-c", "echo inner $PPID $(ps -o ppid= -p $PPID)"]},
                    }
                },
            ],
        }
    }
    ok, items, launchers, _ = run_tree(run)
    assert ok, errors(items)
    facts = {f["id"]: f for f in launchers.take_facts()}
    assert logs(items, "outer") == [f"outer {facts['outer']['pid']}"]
    # The inner node is the outer node's child process: the outer node launched it.
    assert logs(items, "inner")[0].split() == ["inner", str(facts["inner"]["pid"]), str(facts["outer"]["pid"])]
    assert facts["inner"]["parent"] == "outer" and facts["inner"]["netns"] == inner_ns
    assert inner_ns not in netns_list()


def test_a_local_node_that_dies_ends_the_test_naming_it_and_leaves_nothing() -> None:
    victim_ns = unique_name("lk")
    sleeper = ["sleep", "61.3377"]
    run = {
        "parallel": [
            {"child": {"node": local("other"), "serial": [{"system": {"command": "echo kept"}}, {"sleep": "30s"}]}},
            {
                "child": {
                    "node": local("victim", victim_ns),
                    "serial": [
                        {"system": {"command": " ".join(sleeper), "background": True}},
                        {"sleep": "300ms"},
                        # The node's own process dies, as if it crashed.
                        {"system": {"command": "sh", "args": ["-c", "kill -9 $PPID"]}},
                        {"sleep": "30s"},
                    ],
                }
            },
        ]
    }
    ok, items, _, took = run_tree(run)
    assert not ok
    assert took < 15, f"the test ran {took:.1f}s"
    (err,) = [e for e in errors(items) if e.node_id == "victim"]
    assert err.message == "node 'victim' ended unexpectedly (killed by SIGKILL)"
    # The survivor's sleep says why it stopped (issue 16: nothing stops silently).
    assert logs(items, "other") == ["kept", f"canceled: serial on node victim failed: {err.message}"]
    assert victim_ns not in netns_list()
    assert processes_with(sleeper) == []


def test_a_garbled_stream_ends_the_test_naming_the_node() -> None:
    run = {
        "child": {
            "node": local("noisy"),
            "serial": [
                {"system": {"command": "sh", "args": ["-c", "echo 'Welcome!' > /proc/$PPID/fd/1"]}},
                {"sleep": "30s"},
            ],
        }
    }
    ok, items, _, took = run_tree(run)
    assert not ok and took < 15
    (err,) = errors(items)
    assert err.node_id == "noisy"
    assert err.message.startswith("node 'noisy': corrupt frame: bad magic b'Welcome!")


def test_a_local_node_that_stops_answering_is_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a host that goes down without closing its connection: the heartbeats stop.
    monkeypatch.setattr(child, "DEAD_AFTER_SECONDS", 2.0)
    run = {
        "child": {
            "node": local("frozen"),
            "serial": [{"system": {"command": "sh", "args": ["-c", "kill -STOP $PPID"]}}, {"sleep": "30s"}],
        }
    }
    ok, items, _, took = run_tree(run)
    assert not ok and took < 15
    (err,) = errors(items)
    assert err.node_id == "frozen" and err.message.startswith("node 'frozen' lost: no answer for 2s")
    assert node_processes() == []


def test_cancel_and_timeout_reach_local_nodes() -> None:
    ns = unique_name("lt")
    sleeper = ["sleep", "62.7182"]
    run = parse_run(
        {"parallel": [{"child": {"node": local("a", ns), "system": {"command": " ".join(sleeper)}}}, {"sleep": "60s"}]}
    )
    items: list[Item] = []
    control = Control()

    async def cancel_when_running() -> bool:
        task = asyncio.ensure_future(do(run, items.append, launch=Launchers(), control=control))
        deadline = time.monotonic() + 30
        while not processes_with(sleeper) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert processes_with(sleeper), "the command never started"
        control.cancel()
        return await asyncio.wait_for(task, 15)

    assert asyncio.run(cancel_when_running()) is False
    assert processes_with(sleeper) == [] and ns not in netns_list()
    assert node_processes() == []

    ok, items, _, took = run_tree(
        {"child": {"node": local("b", ns), "system": {"command": " ".join(sleeper)}}}, timeout=Duration.parse("1s")
    )
    assert not ok and took < 15
    # The timeout, and what it found running (what held the test up), on its node.
    assert sorted((e.node_id, e.tag, e.message) for e in errors(items)) == [
        ("-", "node", "test timed out after 1s"),
        ("b", "system", "still running when the test timed out after 1s"),
    ]
    assert processes_with(sleeper) == [] and ns not in netns_list()


def test_ctrl_c_at_the_terminal_reaches_local_nodes_through_the_tool(tmp_path: Path) -> None:
    ns = unique_name("lq")
    marker = tmp_path / "started"
    sleeper = ["sleep", "63.5511"]
    run = {
        "child": {
            "node": local("q", ns),
            "serial": [
                {"system": {"command": " ".join(sleeper), "background": True}},
                {"system": {"command": f"touch {marker}"}},
                {"sleep": "60s"},
            ],
        }
    }
    write_experiment(tmp_path / "conf", "ctrlc", run)
    # Its own session, as a terminal's foreground job: SIGINT goes to the whole process group.
    proc = subprocess.Popen(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(tmp_path / "conf"), "+experiment=ctrlc"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()[0]
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out
    assert b"Traceback" not in out
    assert processes_with(sleeper) == [] and ns not in netns_list()


def test_the_node_process_imports_nothing_but_antler_and_the_standard_library() -> None:
    def imported(*argv: str) -> tuple[set[str], subprocess.CompletedProcess[str]]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        lines = [line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
        return {name.split(".")[0] for name in lines[1:]}, done

    startup, _ = imported("-c", "pass")  # what the interpreter's site set-up imports (a venv's hooks)
    modules, done = imported("-m", "antler.node", "n")
    assert "antler" in modules
    jython = {"org"}  # copy and pickle try Jython's org.python.core first (an import that fails)
    assert modules - startup - jython - {"antler"} <= sys.stdlib_module_names, "no numpy, pyarrow or other package"
    assert done.returncode == 1 and "the parent closed the connection" in done.stderr


def test_local_privileges_follow_antlers_rules() -> None:
    node = Node(id="n", launcher=Launcher(local=Local()), netns=Netns(name="ns1"))
    assert command(node, Local(root=True), euid=1000, environ={}).argv[:3] == ["sudo", "-n", "--"]
    user = os.environ.get("USER") or "root"
    as_root = command(node, Local(root=True), euid=0, environ={"SUDO_USER": "nobody"})
    assert as_root.argv[1:] == ["-m", "antler.node", "n"] and not as_root.launcher_netns
    dropped = command(node, Local(), euid=0, environ={"SUDO_USER": "nobody"})
    assert dropped.argv[:5] == ["ip", "netns", "exec", "ns1", "setpriv"]
    assert "--reuid=65534" in dropped.argv and dropped.launcher_netns and dropped.env["HOME"] == "/nonexistent"
    plain = command(node, Local(), euid=0, environ={"USER": user})
    assert plain.argv[1:] == ["-m", "antler.node", "n"] and not plain.launcher_netns


def test_a_ray_node_under_a_local_node_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="node 'r' runs under local node 'l', so it cannot be a ray node"):
        parse_run({"child": {"node": local("l"), "child": {"node": {"id": "r"}, "sleep": "1ms"}}})


@pytest.mark.ray
@pytest.mark.usefixtures("ray_session")
def test_a_ray_node_launches_the_local_nodes_under_it() -> None:
    ns = unique_name("lr")
    run = {
        "child": {
            "node": {"id": "r"},
            "child": {
                "node": local("l", ns),
                "system": {"command": "sh", "args": ["-c", "ip netns identify; echo $PPID"]},
            },
        }
    }
    ok, items, launchers, _ = run_tree(run)
    assert ok, errors(items)
    facts = {f["id"]: f for f in launchers.take_facts()}
    assert facts["l"]["parent"] == "r" and facts["l"]["launcher"] == "local"
    ident, ppid = logs(items, "l")[0].split()
    assert ident == ns and int(ppid) == facts["l"]["pid"]
    assert ns not in netns_list()
