"""Sweeps across hosts: placement, namespace names per running test, and a sweep on a two-raylet cluster.

The cluster tests start one Ray cluster of two raylets on this machine (hosts
``a`` and ``b``, as tests/test_raynodes.py does) for the module, and run the
command in subprocesses (one process joins one Ray cluster). They run in file
order: the last one kills host b.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from antler.config.compose import compose_jobs
from antler.config.sweep import sweep_spec
from antler.invoke.sweep.placement import DRIVER, Hosts, Needs, Queue, needs_of
from antler.invoke.sweep.tree import place
from antler.node.spec import ConfigError
from antler.results import load
from tests.lab.netns import netns_list, unique_name
from tests.lab.ray import free_ports, ray_start, ray_stop, wait_for_hosts

# --- placement


def test_each_host_takes_at_most_per_host_tests_and_spreads_them() -> None:
    hosts = Hosts(["a", "b"], per_host=2, cluster={"a", "b"})
    queue: Queue[int] = Queue([(k, Needs()) for k in range(6)])
    started = queue.start(hosts)
    assert [p.host for _, p in started] == ["a", "b", "a", "b"]
    assert len({p.tag for _, p in started}) == 4 and len(queue) == 2
    hosts.release(started[1][1])
    ((k, p),) = queue.start(hosts)
    assert (k, p.host) == (4, "b") and p.tag == started[1][1].tag  # the freed tag is reused


def test_a_test_pinned_to_two_hosts_waits_for_both_and_later_tests_do_not_overtake_it() -> None:
    hosts = Hosts(["a", "b"], cluster={"a", "b"})
    both = needs_of(["a", "b"], has_unpinned=False)
    queue: Queue[str] = Queue([("first", Needs()), ("both", both), ("later", Needs())])
    ((k, first),) = queue.start(hosts)
    assert (k, first.host) == ("first", "a")
    # "both" waits for a; "later" may not take b meanwhile, or "both" could starve.
    assert [k for k, _ in queue.items] == ["both", "later"] and hosts.busy.get("b", 0) == 0
    hosts.release(first)
    ((k, p),) = queue.start(hosts)
    assert (k, p.host, p.occupies) == ("both", "", ("a", "b"))


def test_a_lost_host_takes_no_more_tests_and_without_hosts_nothing_is_runnable() -> None:
    hosts = Hosts(["a", "b"], cluster={"a", "b"})
    hosts.lose("b")
    queue: Queue[int] = Queue([(0, Needs()), (1, Needs())])
    assert [p.host for _, p in queue.start(hosts)] == ["a"]
    hosts.lose("a")
    assert not hosts.runnable(Needs()) and hosts.capacity() == 0
    assert queue.drop(hosts.runnable) == [1]


def test_without_sweep_hosts_tests_run_one_at_a_time() -> None:
    hosts = Hosts([DRIVER])
    queue: Queue[int] = Queue([(k, Needs()) for k in range(3)])
    assert len(queue.start(hosts)) == 1


def test_place_renames_created_namespaces_everywhere_and_puts_unpinned_nodes_on_the_host() -> None:
    (job,) = compose_jobs(["+experiment=cubic", "rig.netns_prefix=ar-"])
    run, names = place(job.test.run, "b", "-t3")
    assert names == {"ar-mid": "ar-mid-t3", "ar-right": "ar-right-t3", "ar-left": "ar-left-t3"}
    assert {(n.launcher.ray.host, n.netns_name) for n in run.nodes() if n.launcher.ray} == {
        ("b", "ar-mid-t3"),
        ("b", "ar-right-t3"),
        ("b", "ar-left-t3"),
    }
    commands = [r.system.command for _, r in run.walk() if r.system is not None]
    assert "ip link add m-left type veth peer name l-mid netns ar-left-t3" in commands
    assert not any(" ar-left " in f" {c} " or c.endswith("ar-left") for c in commands)
    # The job's own tree, and so its config, is untouched.
    assert {n.netns_name for n in job.test.run.nodes()} == {"ar-mid", "ar-right", "ar-left"}


@pytest.mark.parametrize("bottleneck", ["kernel", "userspace"])
def test_two_placements_of_a_test_share_no_file_at_mid(bottleneck: str) -> None:
    # Two tests at once on one kernel: each one's queue records, qdisc samples
    # and schedule events are its own, or one's tear-down stops the other's recorder.
    schedule = "+rig.schedule=[{at: 1s, rate: 10mbit}]"
    (job,) = compose_jobs(["+experiment=cubic", "rig.netns_prefix=ar-", f"rig.bottleneck={bottleneck}", schedule])

    def files(suffix: str) -> set[str]:
        run, _ = place(job.test.run, "a", suffix)
        words = (w for _, r in run.walk() if r.system for w in (r.system.command, *r.system.args))
        return {f for w in words for f in w.split() if f.startswith(os.path.join(tempfile.gettempdir(), "antler-"))}

    t0, t1 = files("-t0"), files("-t1")
    assert t0 and len(t0) == len(t1) and not t0 & t1, (t0, t1)


def test_place_keeps_pinned_hosts_joined_user_namespaces_and_similar_words() -> None:
    from antler.config.test import parse_run

    run = parse_run(
        {
            "serial": [
                {"child": {"node": {"id": "x", "netns": {"name": "lab", "create": True}}, "sleep": "1ms"}},
                {
                    "child": {
                        "node": {"id": "y", "netns": {"name": "lab"}},
                        "system": {"command": "ping lab lab2 x-lab"},
                    }
                },
                {"child": {"node": {"id": "z", "netns": {"name": "theirs"}}, "system": {"command": "ip -n theirs a"}}},
                {"child": {"node": {"id": "p", "launcher": {"ray": {"host": "c"}}}, "sleep": "1ms"}},
            ]
        }
    )
    placed, names = place(run, "a", "-t0")
    assert names == {"lab": "lab-t0"}
    by_id = {n.id: n for n in placed.nodes()}
    assert by_id["y"].netns_name == "lab-t0" and by_id["z"].netns_name == "theirs"
    assert by_id["p"].launcher.ray is not None and by_id["p"].launcher.ray.host == "c"
    assert [r.system.command for _, r in placed.walk() if r.system] == ["ping lab-t0 lab2 x-lab", "ip -n theirs a"]
    assert place(run) == (run, {})


@pytest.mark.parametrize(
    ("config", "swept", "needle"),
    [
        ({"sweep": {"hosts": "a,b"}}, {}, "'a,b' is not a host name"),
        ({"sweep": {"hosts": ["a", "a"]}}, {}, "names a host twice"),
        ({"sweep": {"per_host": 0}}, {}, "sweep.per_host: 0 must be"),
        ({"sweep": {"host": ["a"]}}, {}, "sweep.host: unknown key"),
        ({}, {"sweep.hosts": "a"}, "sweep.hosts: is not sweepable"),
    ],
)
def test_sweep_config_mistakes_name_the_key(config: dict[str, object], swept: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        sweep_spec(config, swept)


def test_sweep_hosts_without_a_cluster_is_refused_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from antler.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["run", "-m", "+experiment=hello", "sweep.hosts=all"]) == 2
    assert "sweep.hosts: needs a Ray cluster to place tests on: set ray.address=HEAD:PORT" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_sweep_hosts_the_cluster_lacks_are_refused_listing_its_hosts() -> None:
    assert sweep_spec({"sweep": {"hosts": "all"}}).resolve({"b": 1, "a": 1}) == ["a", "b"]
    with pytest.raises(ConfigError, match=r"'c' not in the Ray cluster; its hosts: a, b"):
        sweep_spec({"sweep": {"hosts": ["a", "c"]}}).resolve({"a": 1, "b": 1})
    with pytest.raises(ConfigError, match="the Ray cluster has no hosts"):
        sweep_spec({"sweep": {"hosts": "all"}}).resolve({})


# --- a sweep on a cluster of two raylets


@dataclass
class Cluster:
    """The module's two-raylet Ray cluster: its address and host b's `ray start`."""

    address: str
    host_b: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ray_session: None) -> Iterator[Cluster]:
    """Run hosts a (head) and b for the module's tests, with Ray's token auth on, as `ray start` sets it.

    The session's Ray (ray_session) made ~/.ray/auth_token if there was none.
    """
    logs = tmp_path_factory.mktemp("cluster")
    free = free_ports(14)
    port = next(free)
    temp = Path("/tmp") / f"sw{os.getpid()}-{port}"  # short: Ray's socket paths have a length limit
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # both raylets: the second one needs it to join
    procs = []
    try:
        procs.append(
            ray_start(
                ["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard", "false",
                 "--ray-client-server-port", str(next(free)), "--resources", json.dumps({"host:a": 1})],
                logs / "head.log", free,
            )
        )  # fmt: skip
        address = f"127.0.0.1:{port}"
        procs.append(ray_start(["--address", address, "--resources", json.dumps({"host:b": 1})], logs / "b.log", free))
        wait_for_hosts(address, {"a", "b"}, logs)
        yield Cluster(address, procs[1])
    finally:
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved
        for p in reversed(procs):
            if p.poll() is None:
                ray_stop(p)
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _env(**extra: str) -> dict[str, str]:
    # What a user has: no RAY_AUTH_MODE, no RAY_ADDRESS; the token in ~/.ray.
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    return {**env, **extra}


def _argv(cluster: Cluster, prefix: str, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "antler", "run", "-m", "+experiment=cubic", f"rig.netns_prefix={prefix}",
        f"ray.address={cluster.address}", "sweep.hosts=all", *more,
    ]  # fmt: skip


def _delay_links(prefix: str) -> list[int]:
    """_Delay_links lists the rig's delay link processes running in namespaces named with prefix."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "antler.rig.delay run" in cmd:
            try:
                ns = os.readlink(f"/proc/{p.pid}/ns/net")
            except OSError:
                continue
            if any(os.stat(f"/run/netns/{n}").st_ino == int(ns.strip("net:[]")) for n in netns_list() if prefix in n):
                found.append(p.pid)
    return found


@pytest.mark.slow
def test_a_sweep_uses_both_hosts_at_once_and_every_test_holds(cluster: Cluster, tmp_path: Path) -> None:
    prefix = unique_name("sw") + "-"
    done = subprocess.run(
        _argv(cluster, prefix, "cca=cubic,reno", "rig.rtt=10ms,20ms", "duration=5s", "lead=1s"),
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "test 1 of 4 on a:" in done.stdout and "test 2 of 4 on b:" in done.stdout
    assert "sweep: 4/4 done" in done.stdout
    res = load(tmp_path / "results" / "latest")
    assert len(res) == 4
    used: dict[str, list[tuple[float, float]]] = {}
    names: dict[str, list[set[str]]] = {}
    for test in res.values():
        placement = test.meta["placement"]
        host = placement["host"]
        # Every node of the test sat on the one host its meta.json names.
        assert {n["host"] for n in test.meta["nodes"]} == {host}, test.meta["nodes"]
        assert {n["netns"] for n in test.meta["nodes"]} == set(placement["netns"].values())
        names.setdefault(host, []).append(set(placement["netns"].values()))
        start = pd.Timestamp(test.meta["started"]).timestamp()
        used.setdefault(host, []).append((start, start + test.meta["duration_s"]))
        # The science holds for every test, though two ran at once on two cores.
        flows = pd.read_parquet(test.path / "flows.parquet").set_index("flow")
        goodput = float(flows["goodput_mbps"]["tcp"])
        assert 44 <= goodput <= 50, (test.id, goodput)
        assert test.meta["status"] == "ok" and not test.meta.get("report_errors")
    assert sorted(used) == ["a", "b"]
    # Both hosts worked at once, and tests that overlapped had namespaces of their own.
    spans = [(start, end, ns) for host in used for (start, end), ns in zip(used[host], names[host], strict=True)]
    overlapping = [(x, y) for i, x in enumerate(spans) for y in spans[i + 1 :] if max(x[0], y[0]) < min(x[1], y[1])]
    assert overlapping, spans
    assert all(x[2].isdisjoint(y[2]) for x, y in overlapping)
    assert not {n for n in netns_list() if prefix in n}
    assert "index.html" in os.listdir(res.path)


@pytest.mark.slow
def test_ctrl_c_stops_every_host_within_10s_and_leaves_nothing(cluster: Cluster, tmp_path: Path) -> None:
    prefix = unique_name("sc") + "-"
    argv = _argv(cluster, prefix, "cca=cubic,reno,bbr", "duration=60s", "lead=1s")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        # Ready when both running tests have stored stream samples (the upload started on each host).
        deadline = time.monotonic() + 120
        while len(_measuring(tmp_path)) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert len(_measuring(tmp_path)) == 2, "".join(out)[-3000:]
        assert len(_delay_links(prefix)) == 2  # one rig per host, at once
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        proc.wait(timeout=60)
        stopped = time.monotonic() - sent
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, "".join(out)[-3000:]
    print(f"Ctrl-C: every host stopped {stopped:.1f}s later")
    assert stopped < 10, f"the sweep ran on for {stopped:.1f}s after Ctrl-C"
    assert not {n for n in netns_list() if prefix in n}
    assert _delay_links(prefix) == []
    res = load(tmp_path / "results" / "latest")
    assert sorted((t.meta["status"], t.meta["placement"]["host"]) for t in res.values()) == [
        ("interrupted", "a"),
        ("interrupted", "b"),
    ]
    for test in res.values():
        assert len(test["stream_io"]) > 0  # what it measured is kept


def _measuring(root: Path) -> list[Path]:
    """_Measuring lists the running tests' stream_io streams that hold a batch of samples."""
    return [p for p in (root / "results" / "in-progress").glob("*/stream_io.arrows") if p.stat().st_size > 4096]


def test_joining_needs_no_setup_and_a_bad_token_or_host_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    def run(*more: str, **env: str) -> subprocess.CompletedProcess[str]:
        argv = _argv(cluster, unique_name("sj") + "-", "cca=cubic,reno", *more)
        return subprocess.run(argv, capture_output=True, text=True, env=_env(**env), cwd=tmp_path, timeout=120)

    unknown = run("sweep.hosts=[a,zz]")
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.strip().splitlines()[-1] == (
        "antler-ray: config error: sweep.hosts: 'zz' not in the Ray cluster; its hosts: a, b"
    )
    (tmp_path / "home").mkdir()
    for env, needle in (
        ({"HOME": str(tmp_path / "home")}, "needs a token and this host has none"),
        ({"RAY_AUTH_TOKEN": "0" * 32}, "refused this host's token (RAY_AUTH_TOKEN)"),
    ):
        refused = run(**env)
        assert refused.returncode == 2, refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert needle in line and "~/.ray/auth_token" in line and "Traceback" not in line
    assert not (tmp_path / "results").exists()


@pytest.mark.science
@pytest.mark.slow
def test_a_lost_host_fails_only_its_running_test(cluster: Cluster, tmp_path: Path) -> None:
    prefix = unique_name("sk") + "-"
    argv = _argv(cluster, prefix, "cca=cubic,reno", "rig.rtt=10ms,20ms", "duration=5s", "lead=1s")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    lines = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or (line.startswith("[b]") and "packet_server: listening" in line):
                break
        ray_stop(cluster.host_b)  # host b goes down while its test measures
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = "".join(lines) + out
    assert proc.returncode == 1, out[-3000:]
    res = load(tmp_path / "results" / "latest")
    by_status: dict[str, list[str]] = {}
    for test in res.values():
        by_status.setdefault(test.meta["status"], []).append(test.meta["placement"]["host"])
    assert by_status == {"failed": ["b"], "ok": ["a", "a", "a"]}, by_status
    (failed,) = [t for t in res.values() if t.meta["status"] == "failed"]
    assert "on host 'b'" in (failed.path / "log.txt").read_text()
    assert f"1 of 4 tests run failed: {failed.id_text}" in out
    assert not {n for n in netns_list() if prefix in n}
