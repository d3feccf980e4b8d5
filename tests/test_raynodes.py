"""Nodes on Ray: actors in namespaces, pinned to hosts, feedback across nodes, faults.

All tests but the cluster one share the session's Ray instance; the cluster
test starts its own two raylets and runs the command in a subprocess (one
process can join only one Ray cluster).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from antler.cli import main
from antler.config.test import parse_run
from antler.node import Child, Control, Duration, Netns, Node, Run, do
from antler.node.context import Context
from antler.node.feedback import Feedback
from antler.node.items import Batch, Item
from antler.node.launch import Launchers, ray as ray_launch
from antler.node.launch.ray import handle as ray_handle
from antler.node.schemas import SCHEMAS
from tests.lab.netns import NetnsFactory, netns_list, unique_name
from tests.lab.ray import free_ports, ray_start, ray_stop, wait_for_hosts
from tests.lab.trees import errors, logs, processes_with, run_tree, wait_for

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("ray_session")]

# The test runners below travel to the actors by value: the workers cannot import tests/.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class Listen:
    """A test runner: a TCP server on host that greets each client, returning its address."""

    host: str

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Bind, register the server's canceler and return its address as feedback."""

        async def greet(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(f"hello from {ctx.node_id}\n".encode())
            await w.drain()
            w.close()

        server = await asyncio.start_server(greet, self.host, 0)
        port = server.sockets[0].getsockname()[1]

        async def stop() -> None:
            server.close()
            await server.wait_closed()

        ctx.on_cancel(stop)
        return {"listen_addr": f"{self.host}:{port}"}


@dataclass(frozen=True)
class Dial:
    """A test runner: it connects to the address in feedback and logs the greeting."""

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Read one line from the server named by ``listen_addr``."""
        host, port = feedback["listen_addr"].rsplit(":", 1)
        r, w = await asyncio.open_connection(host, int(port))
        line = (await r.readline()).decode().strip()
        w.close()
        await w.wait_closed()
        ctx.rec.log(f"got {line!r} from {feedback['listen_addr']}", "dial")
        return {}


@dataclass(frozen=True)
class Samples:
    """A test runner: it records n stream_io samples, as a stream runner would."""

    n: int

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Append the samples to a columnar buffer, yielding now and then."""
        cols = ctx.rec.columns("stream_io", "f1", server=False)
        for i in range(self.n):
            cols.append(i * 1000, i * 1448, True)
            if i % 1000 == 0:
                await asyncio.sleep(0.001)
        return {}


def test_child_in_created_namespace_sees_only_its_interfaces() -> None:
    nid = unique_name("rn")
    run = parse_run(
        {
            "child": {
                "node": {"id": nid, "netns": {"create": True}},
                "serial": [
                    {"system": {"command": "ip netns identify"}},
                    {"system": {"command": "ip -o link"}},
                    # The actor process (the command's parent) vs the command itself.
                    {"system": {"command": "sh", "args": ["-c", "readlink /proc/$PPID/ns/net /proc/self/ns/net"]}},
                ],
            }
        }
    )
    ok, items, launchers, _ = run_tree(run)
    assert ok, errors(items)
    ident, links, namespaces = logs(items, nid)
    assert ident == nid
    assert [line.split(":")[1].strip() for line in links.splitlines()] == ["lo"]
    actor_ns, command_ns = namespaces.split()
    # The actor's own Ray connection stays in the host namespace; only the node's thread moved.
    assert actor_ns == os.readlink("/proc/self/ns/net") != command_ns
    assert nid not in netns_list()
    (facts,) = launchers.take_facts()
    assert facts["netns"] == nid and facts["netns_created"] and facts["clock_offset_ns"] == 0


def test_two_namespaced_nodes_talk_over_a_veth_and_feedback_crosses_nodes(
    netns: NetnsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = netns.new("rs"), netns.new("rc")
    netns.link(a, "10.77.51.1/24", b, "10.77.51.2/24")
    server, client = Node(id="server", netns=Netns(name=a.name)), Node(id="client", netns=Netns(name=b.name))
    put: list[Any] = []
    real_put = ray.put

    def spy(value: Any, **kw: Any) -> Any:
        put.append(value)
        return real_put(value, **kw)

    monkeypatch.setattr(ray, "put", spy)
    run = Run(
        serial=(
            Run(child=Child(node=client, serial=(parse_run({"system": {"command": "ping -c 1 -W 5 10.77.51.1"}}),))),
            Run(child=Child(node=server, system=Listen("10.77.51.1"))),  # type: ignore[arg-type]
            Run(child=Child(node=client, system=Dial())),  # type: ignore[arg-type]
        )
    )
    ok, items, _, _ = run_tree(run)
    assert ok, errors(items)
    assert any("1 received" in t for t in logs(items, "client"))
    assert any(t.startswith("got 'hello from server' from 10.77.51.1:") for t in logs(items, "client"))
    # The server's address went to the client's node through the object store.
    assert any(isinstance(v, dict) and str(v.get("listen_addr", "")).startswith("10.77.51.1:") for v in put)
    # Joined namespaces are left in place for their owner.
    assert {a.name, b.name} <= netns_list()


def test_nested_child_runs_on_a_node_launched_by_the_driver() -> None:
    outer, inner = unique_name("ro"), unique_name("ri")
    run = parse_run(
        {
            "child": {
                "node": {"id": outer, "netns": {"create": True}},
                "serial": [
                    {"system": {"command": "ip netns identify"}},
                    {
                        "child": {
                            "node": {"id": inner, "netns": {"create": True}},
                            "system": {"command": "ip netns identify"},
                        }
                    },
                ],
            }
        }
    )
    ok, items, launchers, _ = run_tree(run)
    assert ok, errors(items)
    assert logs(items, outer) == [outer] and logs(items, inner) == [inner]
    assert [f["id"] for f in launchers.take_facts()] == [outer, inner]


def test_measurements_reach_the_driver_as_arrow_batches() -> None:
    ok, items, _, _ = run_tree(Run(child=Child(node=Node(id=unique_name("rs")), system=Samples(20000))))  # type: ignore[arg-type]
    assert ok, errors(items)
    batches = [i for i in items if isinstance(i, Batch)]
    assert sum(b.batch.num_rows for b in batches) == 20000
    assert len(batches) <= 20, "samples crossed one by one, not in batches"
    assert batches[0].batch.schema.equals(SCHEMAS["stream_io"])
    assert batches[-1].batch.column("total_bytes")[-1].as_py() == 19999 * 1448


def test_a_node_gets_the_tests_hmac_key() -> None:
    # The root hands the key over through this optional handle method (main's HMAC work).
    async def main_() -> bytes | None:
        launchers = Launchers()
        node = Node(id=unique_name("rh"))
        handle = await launchers(node, lambda item: None, {})
        try:
            await handle.set_hmac_key(b"k3y")  # type: ignore[attr-defined]
            return await handle.actor.__ray_call__.remote(lambda actor: actor.runtime.ctx.hmac_key)  # type: ignore[attr-defined, no-any-return]
        finally:
            await handle.close()

    assert asyncio.run(main_()) == b"k3y"


def test_unknown_host_is_refused_before_any_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    run = parse_run(
        {
            "serial": [
                {"system": {"command": f"touch {marker}"}},
                {"child": {"node": {"id": "far", "launcher": {"ray": {"host": "nowhere"}}}, "sleep": "1ms"}},
            ]
        }
    )
    ok, items, _, _ = run_tree(run)
    assert not ok
    (err,) = errors(items)
    assert "host 'nowhere' is not in the Ray cluster; its hosts:" in err.message
    assert not marker.exists()


def test_version_mismatch_is_an_error_at_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_launch, "code_version", lambda: "0.0.0+stale")
    ok, items, _, _ = run_tree(parse_run({"child": {"node": {"id": "v"}, "sleep": "1ms"}}))
    assert not ok
    (err,) = errors(items)
    assert "the driver runs 0.0.0+stale" in err.message and "runs antler 0.1.0+" in err.message


def test_killed_actor_ends_the_test_with_an_error_naming_it_and_leaves_nothing(tmp_path: Path) -> None:
    victim, other = unique_name("rk"), unique_name("rv")
    sleeper = ["sleep", "61.4713"]
    logged = tmp_path / "logged"
    run = parse_run(
        {
            "parallel": [
                {
                    "child": {
                        "node": {"id": other},
                        "serial": [
                            {"system": {"command": "sh -c", "args": [f"echo kept from {other}; touch {logged}"]}},
                            {"sleep": "30s"},
                        ],
                    }
                },
                {
                    "child": {
                        "node": {"id": victim, "netns": {"create": True}},
                        "serial": [
                            {"system": {"command": " ".join(sleeper), "background": True}},
                            # The other node has logged what must be kept.
                            wait_for(logged),
                            # The node's own actor process dies, as if it crashed.
                            {"system": {"command": "sh", "args": ["-c", "kill -9 $PPID"]}},
                            {"sleep": "30s"},
                        ],
                    }
                },
            ]
        }
    )
    start = time.monotonic()
    ok, items, _, _ = run_tree(run)
    elapsed = time.monotonic() - start
    assert not ok
    assert elapsed < 20, f"the test took {elapsed:.1f}s after its node died"
    named = [e for e in errors(items) if e.node_id == victim and victim in e.message]
    assert named, errors(items)
    assert f"kept from {other}" in logs(items, other)
    assert victim not in netns_list()
    assert processes_with(sleeper) == []


def test_closing_a_node_ends_even_if_its_poller_missed_the_cancel(monkeypatch: pytest.MonkeyPatch) -> None:
    # On Python 3.11 asyncio.wait_for returns instead of raising when a cancel
    # arrives as the call it waits for completes; a drain that does that once
    # left a poller running and the test never ended.
    swallowed: list[bool] = []
    real = ray_handle.RayHandle._drain_now

    async def drain_swallowing_one_cancel(self: ray_handle.RayHandle, timeout: float | None = None) -> None:
        try:
            await real(self, timeout)
            await asyncio.sleep(0.5)  # so close() finds the poller here
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(True)

    monkeypatch.setattr(ray_handle.RayHandle, "_drain_now", drain_swallowing_one_cancel)
    monkeypatch.setattr(ray_handle, "POLL_SECONDS", 0.001)
    start = time.monotonic()
    ok, items, _, _ = run_tree(parse_run({"child": {"node": {"id": unique_name("rp")}, "sleep": "300ms"}}))
    assert ok, errors(items)
    assert swallowed, "the poller's drain was never canceled"
    assert time.monotonic() - start < 30


def test_cancel_reaches_every_node() -> None:
    a, b = unique_name("rca"), unique_name("rcb")
    sleeper = ["sleep", "62.3141"]
    run = parse_run(
        {
            "parallel": [
                {"child": {"node": {"id": a, "netns": {"create": True}}, "system": {"command": " ".join(sleeper)}}},
                {"child": {"node": {"id": b}, "sleep": "60s"}},
            ]
        }
    )
    items: list[Item] = []
    control = Control()

    async def main_() -> bool:
        task = asyncio.ensure_future(do(run, items.append, launch=Launchers(), control=control))
        deadline = time.monotonic() + 60
        while not processes_with(sleeper) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert processes_with(sleeper), "the command never started"
        control.cancel()
        return await asyncio.wait_for(task, 15)

    start = time.monotonic()
    assert asyncio.run(main_()) is False
    assert time.monotonic() - start < 60
    assert processes_with(sleeper) == []
    assert a not in netns_list()


def test_timeout_ends_a_test_running_on_nodes() -> None:
    run = parse_run({"child": {"node": {"id": unique_name("rt"), "netns": {"create": True}}, "sleep": "60s"}})
    start = time.monotonic()
    ok, items, _, _ = run_tree(run, timeout=Duration.parse("1s"))
    assert not ok
    assert any("timed out" in e.message for e in errors(items))
    assert time.monotonic() - start < 30


def test_meta_json_records_each_nodes_host_and_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nid = unique_name("rm")
    (tmp_path / "experiment").mkdir()
    exp = {
        "test": {
            "id": {"experiment": "rn"},
            "run": {
                "child": {"node": {"id": nid, "netns": {"create": True}}, "system": {"command": "ip netns identify"}}
            },
        }
    }
    (tmp_path / "experiment" / "rn.yaml").write_text("# @package _global_\n" + yaml.safe_dump(exp))
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--config-dir", str(tmp_path), "+experiment=rn"]) == 0
    meta = json.loads((tmp_path / "results" / "latest" / "experiment-rn" / "meta.json").read_text())
    (node,) = meta["nodes"]
    assert node["id"] == nid and node["netns"] == nid and node["host"]
    assert node["clock_offset_ns"] == 0 and node["same_clock"] and node["clock_rtt_ns"] > 0
    assert nid in (tmp_path / "results" / "latest" / "experiment-rn" / "log.txt").read_text()


# --- a Ray cluster of two raylets on this machine


@dataclass
class Cluster:
    """A test-local Ray cluster: its address and the `ray start` of host b."""

    address: str
    host_b: subprocess.Popen[bytes]


@pytest.fixture
def two_hosts(tmp_path: Path) -> Iterator[Cluster]:
    """Run a head raylet (host a) and a second raylet (host b), all deleted after."""
    free = free_ports(14)  # 6 per raylet, the head's GCS and its client server
    port = next(free)
    temp = Path("/tmp") / f"rn{os.getpid()}-{port}"  # short: Ray's socket paths have a length limit
    head = ray_start(
        ["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard", "false",
         "--ray-client-server-port", str(next(free)), "--resources", json.dumps({"host:a": 1})],
        tmp_path / "head.log", free,
    )  # fmt: skip
    procs = [head]
    try:
        address = f"127.0.0.1:{port}"
        procs.append(
            ray_start(["--address", address, "--resources", json.dumps({"host:b": 1})], tmp_path / "b.log", free)
        )
        wait_for_hosts(address, {"a", "b"}, tmp_path)
        yield Cluster(address, procs[1])
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                ray_stop(p)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


@pytest.mark.slow
def test_two_raylet_cluster_places_nodes_on_named_hosts(two_hosts: Cluster, tmp_path: Path) -> None:
    nb = unique_name("rb")
    (tmp_path / "experiment").mkdir()
    pinned = {
        "test": {
            "id": {"experiment": "pinned"},
            "run": {
                "serial": [
                    {
                        "child": {
                            "node": {"id": "on-a", "launcher": {"ray": {"host": "a"}}},
                            "system": {"command": "echo on a"},
                        }
                    },
                    {
                        "child": {
                            "node": {"id": nb, "launcher": {"ray": {"host": "b"}}, "netns": {"create": True}},
                            "system": {"command": "ip netns identify"},
                        }
                    },
                ]
            },
        }
    }
    stray = {
        "test": {
            "id": {"experiment": "stray"},
            "run": {"child": {"node": {"id": "x", "launcher": {"ray": {"host": "c"}}}, "sleep": "1ms"}},
        }
    }
    marker = tmp_path / "b-running"
    nd = unique_name("rd")
    dies = {
        "test": {
            "id": {"experiment": "dies"},
            "run": {
                "parallel": [
                    {
                        "child": {
                            "node": {"id": "stays", "launcher": {"ray": {"host": "a"}}},
                            "serial": [{"system": {"command": "echo still here"}}, {"sleep": "60s"}],
                        }
                    },
                    {
                        "child": {
                            "node": {"id": nd, "launcher": {"ray": {"host": "b"}}, "netns": {"create": True}},
                            "serial": [{"system": {"command": f"touch {marker}"}}, {"sleep": "60s"}],
                        }
                    },
                ]
            },
        }
    }
    for name, exp in (("pinned", pinned), ("stray", stray), ("dies", dies)):
        (tmp_path / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(exp))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    def argv(experiment: str) -> list[str]:
        return [sys.executable, "-m", "antler", "run", "--config-dir", str(tmp_path), f"+experiment={experiment}",
                f"ray.address={two_hosts.address}"]  # fmt: skip

    def cli(experiment: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv(experiment), capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)

    done = cli("pinned")
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads((tmp_path / "results" / "latest" / "experiment-pinned" / "meta.json").read_text())
    by_id = {n["id"]: n for n in meta["nodes"]}
    a, b = by_id["on-a"], by_id[nb]
    assert (a["id"], a["host"]) == ("on-a", "a")
    assert (b["id"], b["host"], b["netns"]) == (nb, "b", nb)
    assert a["ray_node_id"] != b["ray_node_id"]
    log = (tmp_path / "results" / "latest" / "experiment-pinned" / "log.txt").read_text()
    assert "on a" in log and f"{nb} system: {nb}" in log
    assert nb not in netns_list()

    refused = cli("stray")
    assert refused.returncode == 1
    log = (tmp_path / "results" / "latest" / "experiment-stray" / "log.txt").read_text()
    assert "host 'c' is not in the Ray cluster; its hosts: a, b" in log

    # Host b goes down mid-test: the test ends soon after, naming the node, keeping a's data.
    with subprocess.Popen(
        argv("dies"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=tmp_path
    ) as proc:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), proc.communicate()[0]
        ray_stop(two_hosts.host_b)
        down = time.monotonic()
        out, _ = proc.communicate(timeout=60)
        ended = time.monotonic() - down
    assert proc.returncode == 1, out
    print(f"host b down: the test ended {ended:.1f}s later")
    assert ended < 15, f"the test ran on for {ended:.1f}s after host b went down"
    log = (tmp_path / "results" / "latest" / "experiment-dies" / "log.txt").read_text()
    assert f"{nd} node: error: node {nd!r}" in log, log
    assert "stays system: still here" in log
    # Host b is this machine: the driver removed the namespace the dead node left.
    assert nd not in netns_list()


def test_background_commands_on_a_ray_node_are_interrupted_not_killed(tmp_path: Path) -> None:
    # Ray's workers block SIGINT; a command started on a node must not inherit
    # that, or it is killed after the grace period and loses its last words.
    # (a shell would not do: dash unblocks signals itself at start)
    ready = tmp_path / "ready"
    script = (
        "import pathlib, signal, sys, time; signal.signal(2, lambda *a: (print('interrupted'), sys.exit(0))); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    run = parse_run(
        {
            "serial": [
                {
                    "child": {
                        "node": {"id": "bg"},
                        "system": {"args": [sys.executable, "-c", script], "background": True},
                    }
                },
                wait_for(ready),  # the handler is set: an interrupt now must reach it
            ]
        }
    )
    ok, items, _, _ = run_tree(run)
    assert ok
    # Killed after the grace period instead, it would have said nothing.
    assert "interrupted" in logs(items, "bg")


ON_RAY = """# @package _global_
test:
  id: {experiment: onray}
  run:
    child:
      node: {id: r}
      system: {command: "echo on a Ray node"}
"""


def test_with_no_address_the_tool_starts_its_own_ray_whatever_ray_start_left_recorded(tmp_path: Path) -> None:
    """A cluster that `ray start` recorded in Ray's temp folder (and that has gone) is not joined.

    ray.init() with no address joins the last cluster recorded there; the
    tool's config says no address means an embedded Ray of its own. With a
    stale record the run waited 80 s and failed.
    """
    ray_tmp = Path("/tmp") / unique_name("rt")  # short: Ray's socket paths have a length limit
    (ray_tmp / "ray").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        gone = s.getsockname()[1]  # nothing listens there once it is closed
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{gone}\n")
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "onray.yaml").write_text(ON_RAY)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "antler", "run", "--config-dir", "conf", "+experiment=onray"],
            cwd=tmp_path, env={**env, "RAY_TMPDIR": str(ray_tmp)}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        subprocess.run(["rm", "-rf", str(ray_tmp)], check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "r system: on a Ray node" in done.stdout
