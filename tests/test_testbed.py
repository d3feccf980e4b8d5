"""The testbed rig and the cluster launcher, on namespace hosts with their own sshd (tests/lab/hosts.py).

The fast tests build the testbed rig on the hosts' test network with nodes
that join the hosts' namespaces from this process. The slow one does what
the README tells a user: ``ray up`` with the shipped cluster.yaml (only the
addresses, SSH user and key replaced), ``antler-ray run +experiment=cubic
rig=testbed ... ray.address=auto`` on the head, ``ray down``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from omegaconf import OmegaConf

from antler.config.compose import compose_config, compose_jobs
from antler.config.test import parse_run
from antler.node import Duration, Item, do
from antler.node.launch.netns import launch_thread as launch
from antler.node.schemas import SCHEMAS
from antler.node.spec import ConfigError, parse
from antler.report.analyze import analyze, owd_clocks
from antler.report.charts import clock_note
from antler.report.pipeline import run_after
from antler.report.spec import After
from antler.results import load
from tests.lab.hosts import Host, NamespaceHosts, namespace_hosts
from tests.lab.netns import netns_list
from tests.lab.trees import errors, logs

RTT_MS = 20
FIXTURE = Path(__file__).parent / "data" / "result" / "cca-cubic"
TEST_NET = {"left": "10.77.141.1", "mid_left": "10.77.141.2", "mid_right": "10.77.142.1", "right": "10.77.142.2"}


def rig_overrides(tb: NamespaceHosts, *, joined: bool) -> list[str]:
    """Put the testbed rig on the namespace hosts (h1 - h2 - h3), with nodes joining their namespaces."""
    h1, h2, h3 = tb.hosts
    out = [
        "rig=testbed",
        f"rig.hosts.left={h1.name}", f"rig.hosts.mid={h2.name}", f"rig.hosts.right={h3.name}",
        "rig.ifaces.left=tn0", "rig.ifaces.mid_left=tn-l", "rig.ifaces.mid_right=tn-r", "rig.ifaces.right=tn0",
        *(f"rig.addr.{k}={v}" for k, v in TEST_NET.items()),
    ]  # fmt: skip
    if joined:
        # Nodes in this process, in each host's network namespace, instead of Ray actors on the hosts.
        for role, host in zip(("left", "mid", "right"), tb.hosts, strict=True):
            out += [f"~rig.nodes.{role}.launcher", f"+rig.nodes.{role}.netns.name={host.netns}"]
    return out


def build_rig(overrides: list[str], body: list[dict[str, Any]]) -> tuple[bool, list[Item], dict[str, Any]]:
    """Run the rig's set-up, body and tear-down (from rigcheck's tree) in this process."""
    cfg = compose_config(["+experiment=rigcheck", *overrides])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    setup, _, teardown = plain["test"]["run"]["serial"]
    items: list[Item] = []
    tree = parse_run({"serial": [setup, *body, teardown]})
    ok = asyncio.run(do(tree, items.append, launch=launch, timeout=Duration(120_000_000_000)))
    return ok, items, plain["rig"]


def network_state(host: Host) -> dict[str, str]:
    """Return what a rig could change on a host: addresses, route, rules, qdiscs, forwarding."""

    def ip(*args: str) -> str:
        return subprocess.run(["ip", "-n", host.netns, *args], capture_output=True, text=True, check=True).stdout

    def sysctl(pattern: str) -> str:
        out = subprocess.run(["ip", "netns", "exec", host.netns, "sysctl", "-a"], capture_output=True, text=True)
        return "\n".join(line for line in out.stdout.splitlines() if pattern in line)

    return {
        "addr": ip("-br", "addr"),
        "links": ip("-br", "link"),
        "routes": ip("route", "show", "table", "all"),
        "rules": ip("rule"),
        "qdiscs": subprocess.run(["tc", "-n", host.netns, "qdisc"], capture_output=True, text=True).stdout,
        "forwarding": sysctl(".forwarding"),
        "rp_filter": sysctl(".rp_filter"),
    }


def test_namespace_hosts_are_separate_machines_and_vanish() -> None:
    with namespace_hosts(("ha", "hb")) as tb:
        a, b = tb.hosts
        for host in (a, b):
            r = tb.ssh(host, "hostname; echo $HOME; echo $$; ls /tmp; ip -br addr show mgmt0")
            assert r.returncode == 0, r.stderr
            name, home, pid, *rest = r.stdout.splitlines()
            assert (name, home) == (host.name, "/root")
            # A session sees only its host's processes: sshd is PID 1, so `ray stop` there stops only that host's Ray.
            assert int(pid) < 100
            assert tb.ssh(host, "cat /proc/1/comm").stdout.strip() == "sshd"
            assert host.addr in rest[-1]
        assert tb.ssh(a, "touch /tmp/mine ~/mine").returncode == 0
        assert tb.ssh(b, "ls /tmp/mine ~/mine").returncode != 0, "hosts share /tmp or home"
        assert tb.ssh(a, f"ping -c 1 -W 2 {b.addr}").returncode == 0, "the management network"
        assert "tn0" in tb.ssh(a, "ip -br link").stdout
        pids = a.pids() + b.pids()
        assert pids
        names = [a.netns, b.netns, tb.ctl, tb.switch]
    assert not set(names) & netns_list()
    assert not [p for p in pids if subprocess.run(["kill", "-0", str(p)], capture_output=True).returncode == 0]


def test_testbed_rig_builds_the_dumbbell_across_hosts_and_leaves_them_as_found() -> None:
    count = 100
    with namespace_hosts() as tb:
        before = {h.name: network_state(h) for h in tb.hosts}
        ping = {"child": {"node": {"id": "left", "netns": {"name": tb.hosts[0].netns}},
                          "system": {"command": f"ping -c {count} -i 0.01 {TEST_NET['right']}"}}}  # fmt: skip
        ok, items, _ = build_rig(rig_overrides(tb, joined=True), [ping])
        after = {h.name: network_state(h) for h in tb.hosts}
    assert ok, errors(items)
    text = next(t for t in logs(items, "left") if f"{count} packets transmitted" in t)
    rtts = [float(t.split("time=")[1].split()[0]) for t in text.splitlines() if "time=" in t]
    assert len(rtts) == count
    assert abs(statistics.median(rtts) - RTT_MS) < 1.0, f"median RTT {statistics.median(rtts):.3f} ms"
    assert any("rig testbed:" in t and "on h2" in t for t in logs(items, "mid"))
    assert any("tn-l, tn-r ready" in t for t in logs(items, "mid"))
    assert any("qdisc pfifo 10:" in t for t in logs(items, "mid")), "tear-down logs the bottleneck's counters"
    assert any("\nlink d-fwd:" in t for t in logs(items, "mid")), "the delay link ended cleanly, with its counters"
    # Every address, route, rule, qdisc and forwarding flag is back as it was, mgmt0's never changed.
    changed = {(h, k): (before[h][k], after[h][k]) for h in before for k in before[h] if before[h][k] != after[h][k]}
    assert not changed


def test_testbed_rig_refuses_an_interface_in_use_and_touches_nothing() -> None:
    with namespace_hosts() as tb:
        before = [network_state(h) for h in tb.hosts]
        overrides = [
            o if o != "rig.ifaces.left=tn0" else "rig.ifaces.left=mgmt0" for o in rig_overrides(tb, joined=True)
        ]
        ok, items, _ = build_rig(overrides, [])
        after = [network_state(h) for h in tb.hosts]
    assert not ok
    assert any("check --iface mgmt0" in e.message for e in errors(items)), errors(items)
    assert any("'mgmt0' has 10.77.140.11/24, which the rig did not assign" in t for t in logs(items, "left"))
    assert after == before


def test_every_rig_experiment_composes_on_the_testbed_with_the_dumbbells_path_steps() -> None:
    hosts = ["rig.hosts.left=a", "rig.hosts.mid=b", "rig.hosts.right=c"]
    ifaces = ["rig.ifaces.left=e1", "rig.ifaces.mid_left=e1", "rig.ifaces.mid_right=e2", "rig.ifaces.right=e3"]
    for name in ("cubic", "fct", "iperf3", "packets", "ratedrop", "rigcheck", "tcpinfo", "tcpstream", "vbrudp"):
        (dumbbell,) = compose_jobs([f"+experiment={name}"])
        (job,) = compose_jobs([f"+experiment={name}", "rig=testbed", *hosts, *ifaces])
        nodes = {n["id"]: n["launcher"]["ray"]["host"] for n in _nodes(job.config["test"]["run"])}
        assert nodes == {"left": "a", "mid": "b", "right": "c"}, name
        commands = " ".join(_commands(job.config["test"]["run"]))
        assert "mgmt" not in commands and "ip_forward" not in commands and "conf.all" not in commands
        # The bottleneck and delay steps are the dumbbell's, with mid's interfaces renamed.
        path = [c.replace("m-left", "e1").replace("m-right", "e2") for c in _commands(dumbbell.config["test"]["run"])
                if c.startswith(("tc ", "ip rule", "ip tuntap"))]  # fmt: skip
        assert path and all(c in commands for c in path), name
    with pytest.raises(ConfigError, match=r"rig\.hosts\.left"):
        compose_jobs(["+experiment=cubic", "rig=testbed"])
    with pytest.raises(ConfigError, match=r"ifaces\.left is required"):
        compose_jobs(["+experiment=cubic", "rig=testbed", *hosts])
    with pytest.raises(ConfigError, match="three different hosts"):
        compose_jobs(["+experiment=cubic", "rig=testbed", *hosts[:2], "rig.hosts.right=a", *ifaces])


def _nodes(data: Any) -> list[dict[str, Any]]:
    if isinstance(data, dict):
        found = [data["child"]["node"]] if isinstance(data.get("child"), dict) else []
        return found + [n for v in data.values() for n in _nodes(v)]
    if isinstance(data, list):
        return [n for v in data for n in _nodes(v)]
    return []


def _commands(data: Any) -> list[str]:
    if isinstance(data, dict):
        if "system" in data and isinstance(data["system"], dict):
            s = data["system"]
            return [" ".join([s.get("command") or "", *s.get("args", [])]).strip()]
        return [c for v in data.values() for c in _commands(v)]
    if isinstance(data, list):
        return [c for v in data for c in _commands(v)]
    return []


def test_one_way_delay_across_hosts_is_corrected_by_the_clock_offset_and_the_chart_says_so(tmp_path: Path) -> None:
    # The fixture's echo flow "udp" (one-way delay 5 ms), as if its client ran
    # on h1 (the driver's host) and its server on h3, whose clock is 250 ms ahead.
    test_dir = tmp_path / "cca-cubic"
    shutil.copytree(FIXTURE, test_dir)
    info = pq.read_table(test_dir / "packet_info.parquet").to_pandas()
    info["node_id"] = np.where(info["server"], "right", "left")
    info.loc[info["server"], "tinit"] += pd.Timedelta(250, "ms")
    pq.write_table(
        # The fixture's columns (it predates packet_info's local and remote), typed as stored.
        pa.Table.from_pandas(
            info, schema=pa.schema([SCHEMAS["packet_info"].field(c) for c in info.columns]), preserve_index=False
        ),
        test_dir / "packet_info.parquet",
    )
    meta = json.loads((test_dir / "meta.json").read_text())
    meta["nodes"] = [
        {"id": "left", "host": "h1", "clock_offset_ns": 0, "clock_rtt_ns": 600_000, "same_clock": True},
        {"id": "right", "host": "h3", "clock_offset_ns": 250_000_000, "clock_rtt_ns": 800_000, "same_clock": False},
    ]
    meta["rig"] = {"kind": "testbed", "hosts": {"left": "h1", "mid": "h2", "right": "h3"},
                   "ifaces": {"left": "tn0", "mid_left": "tn-l", "mid_right": "tn-r", "right": "tn0"},
                   "rate_bps": 50_000_000, "qdisc": "pfifo limit 1000", "rtt_ms": 20.0, "emulator": "tun"}  # fmt: skip
    (test_dir / "meta.json").write_text(json.dumps(meta))
    a = analyze(load(test_dir)["."])
    udp = a.flows.set_index("flow").loc["udp"]
    assert udp["owd_ms_median"] == pytest.approx(5.0)
    assert udp["rtt_ms_median"] == pytest.approx(10.0), "an RTT is on one clock: no correction"
    (clock,) = a.clocks.itertuples(index=False)
    assert (clock.flow, clock.from_host, clock.to_host, clock.same_clock) == ("udp", "h1", "h3", False)
    assert clock.uncertainty_ms == pytest.approx(0.4)
    # A server launched by the node on h3 (over SSH, say) was measured against h3's clock: both errors count.
    nested = [
        *meta["nodes"],
        {"id": "far", "host": "r9", "parent": "right", "clock_rtt_ns": 2_000_000, "same_clock": False},
    ]
    info = info.assign(node_id=np.where(info["server"], "far", "left"))
    assert owd_clocks(info, nested)["uncertainty_ms"].tolist() == [pytest.approx(1.4)]
    note = clock_note(a, "owd")
    assert (
        note == "one-way delay of udp crosses hosts h1 → h3: clocks aligned by measured offsets, uncertainty ±0.40 ms"
    )
    assert clock_note(a, "rtt") == "", "the RTT chart draws no one-way delay"
    spec = parse(After, {"report": [{"charts_time_series": {"to": ["owd.html"], "delay": "owd"}}]}, "test.after")
    assert run_after(test_dir, spec) == []
    page = (test_dir / "owd.html").read_text()
    # The note is in the figure's title, whose JSON escapes what is not ASCII (→ as \u2192).
    shown = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), page)
    assert f"<sup>{note}</sup>" in shown
    assert "testbed h1 (tn0) → h2 (tn-l|tn-r) → h3 (tn0)" in page
    # Without the offsets the same data says 255 ms.
    del meta["nodes"]
    (test_dir / "meta.json").write_text(json.dumps(meta))
    assert analyze(load(test_dir)["."]).flows.set_index("flow").loc["udp", "owd_ms_median"] == pytest.approx(255.0)


# --- the cluster launcher itself: ray up, a test from the head, ray down

REPO = Path(__file__).resolve().parents[1]
UP_SECONDS = 420.0
JOIN_SECONDS = 300.0
DOWN_SECONDS = 150.0
RATEDROP_WINDOWS_S = ((1.5, 3.2), (4.5, 6.5), (8.0, 9.8))
"""RATEDROP_WINDOWS_S: a 10 s ratedrop's three phases (conf/experiment/ratedrop.yaml), each past the change's transient."""
"""DOWN_SECONDS: a worker's raylet ends about 60 s after the head's (Ray's GCS reconnect timeout), then its watch stops the rest."""


def wheelhouse() -> Path:
    """Return a folder of wheels of this venv's packages, the hosts' package index (they have no other).

    Built once per venv (pip wheel, from the registry or pip's cache, about
    7 s here), again when the installed set or pyproject.toml changes.
    """
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout  # fmt: skip
    stamp = hashlib.sha256((frozen + (REPO / "pyproject.toml").read_text()).encode()).hexdigest()[:16]
    wheels = Path(sys.prefix) / "testbed-wheels"
    if (wheels / f".built-{stamp}").exists():
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir()
    (wheels / "constraints.txt").write_text(frozen)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(wheels), "-c", str(wheels / "constraints.txt"),
                    str(REPO), "setuptools", "wheel"], check=True, capture_output=True, timeout=900)  # fmt: skip
    for own in wheels.glob("antler_ray-*.whl"):
        own.unlink()  # the hosts build this package from the checkout ray up copies, as a user's do
    (wheels / f".built-{stamp}").touch()
    return wheels


def cluster_config(tb: NamespaceHosts) -> Path:
    """Return the shipped cluster.yaml with only the addresses, SSH user and key replaced."""
    cfg = yaml.safe_load((REPO / "cluster.yaml").read_text())
    head, *workers = tb.hosts
    cfg["provider"]["head_ip"] = head.addr
    cfg["provider"]["worker_ips"] = [w.addr for w in workers]
    cfg["auth"]["ssh_user"] = "root"
    cfg["auth"]["ssh_private_key"] = str(tb.key)
    out = tb.dir / "ctl" / "cluster.yaml"
    out.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return out


def cluster_hosts(tb: NamespaceHosts, ray: str, config: Path) -> set[str]:
    """Ask the head (ray exec ... ray status) which host:NAME resources the cluster has."""
    out = tb.on_ctl([ray, "exec", str(config), "ray status"], timeout=120).stdout
    return {name for name in (h.name for h in tb.hosts) if f"host:{name}" in out}


def diagnostics(tb: NamespaceHosts, *outputs: subprocess.CompletedProcess[str]) -> str:
    """Return the end of the commands' output and of the head's autoscaler log, for a failure message."""
    parts = [f"$ {' '.join(o.args[-3:])}\n{(o.stdout + o.stderr)[-3000:]}" for o in outputs]
    for log in sorted(tb.hosts[0].tmp.glob("ray/session_*/logs/monitor.*")):
        parts.append(f"{log.name}:\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(parts)


@pytest.mark.science
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ray_up_runs_cubic_on_the_testbed_rig_across_three_hosts_and_ray_down_leaves_nothing() -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    wheels = wheelhouse()
    times: dict[str, float] = {}
    start = time.monotonic()
    with namespace_hosts(("h1", "h2", "h3")) as tb:
        for host in tb.hosts:
            # The hosts' package index: the test network reaches no registry.
            (host.home / ".config" / "pip").mkdir(parents=True)
            (host.home / ".config" / "pip" / "pip.conf").write_text(
                f"[global]\nno-index = true\nfind-links = {wheels}\n"
            )
        config = cluster_config(tb)
        token = tb.on_ctl([ray, "get-auth-token", "--generate"], timeout=60)
        assert token.returncode == 0, token.stderr
        up = tb.on_ctl([ray, "up", "-y", str(config)], timeout=UP_SECONDS, cwd=REPO)
        times["ray up"] = time.monotonic() - start
        assert up.returncode == 0, diagnostics(tb, up)
        deadline = time.monotonic() + JOIN_SECONDS
        while (joined := cluster_hosts(tb, ray, config)) != {"h1", "h2", "h3"} and time.monotonic() < deadline:
            time.sleep(3)
        times["all hosts joined"] = time.monotonic() - start
        assert joined == {"h1", "h2", "h3"}, diagnostics(tb, up)

        # On the head, as `ray attach` then `antler-ray run ... ray.address=auto` would.
        head = tb.hosts[0]
        args = " ".join([*rig_overrides(tb, joined=False), "duration=10s", "ray.address=auto"])
        run = tb.on_ctl([ray, "exec", str(config), f"cd ~ && antler-ray run +experiment=cubic {args}"], timeout=300)
        times["cubic done"] = time.monotonic() - start
        assert run.returncode == 0, diagnostics(tb, run)
        result = head.home / "results" / "latest" / "experiment-cubic"
        meta = json.loads((result / "meta.json").read_text())
        a = analyze(load(result)["."])
        timeseries = (result / "timeseries.html").read_text()
        # The experiment that changes mid's shaper mid-test, by rig.ifaces.mid_right, unedited too.
        run = tb.on_ctl([ray, "exec", str(config), f"cd ~ && antler-ray run +experiment=ratedrop {args}"], timeout=300)
        times["ratedrop done"] = time.monotonic() - start
        assert run.returncode == 0, diagnostics(tb, run)
        drop = analyze(load(head.home / "results" / "latest" / "experiment-ratedrop")["."]).goodput

        down = tb.on_ctl([ray, "down", "-y", str(config)], timeout=120)
        times["ray down"] = time.monotonic() - start
        assert down.returncode == 0, diagnostics(tb, down)
        deadline = time.monotonic() + DOWN_SECONDS
        while (left := _ray_processes(tb)) and time.monotonic() < deadline:
            time.sleep(1)
        times["no Ray process left"] = time.monotonic() - start
        assert not left, f"Ray processes still running after ray down: {left}"
        names = [tb.ctl, tb.switch, *(h.netns for h in tb.hosts)]
    cubic = a.flows.set_index("flow").loc["tcp"]
    base = a.rtt[a.rtt["t_s"] < 1.8]["rtt_ms"]
    print(", ".join(f"{k} at {v:.0f} s" for k, v in times.items()))
    print(f"cubic {cubic['goodput_mbps']:.1f} Mbit/s, base RTT {base.median():.2f} ms ({meta['rig']['emulator']})")
    # ratedrop: rig.rate (50 Mbit/s), low_rate (10 Mbit/s) from a third of its 10 s, rig.rate again from two thirds.
    before, low, back = (drop[drop["t_s"].between(lo, hi)]["goodput_mbps"].median() for lo, hi in RATEDROP_WINDOWS_S)
    print(f"ratedrop {before:.1f}, then {low:.1f}, then {back:.1f} Mbit/s")
    assert not set(names) & netns_list()

    # The science is the namespace dumbbell's.
    assert 44 <= cubic["goodput_mbps"] <= 50, f"goodput {cubic['goodput_mbps']:.1f} Mbit/s"
    assert len(base) >= 50 and abs(base.median() - RTT_MS) <= 1, f"base RTT {base.median():.2f} ms"
    # Each node ran on its named host, and the rig's record names the hosts and interfaces.
    assert {n["id"]: n["host"] for n in meta["nodes"]} == {"left": "h1", "mid": "h2", "right": "h3"}
    assert meta["rig"]["hosts"] == {"left": "h1", "mid": "h2", "right": "h3"}
    assert meta["rig"]["ifaces"] == {"left": "tn0", "mid_left": "tn-l", "mid_right": "tn-r", "right": "tn0"}
    assert "testbed h1 (tn0) → h2 (tn-l|tn-r) → h3 (tn0)" in timeseries
    assert f"delay by {meta['rig']['emulator']}" in timeseries
    assert before > 40 and 8 < low < 10.5 and back > 40, f"ratedrop: {before:.1f}, {low:.1f}, {back:.1f} Mbit/s"


def _ray_processes(tb: NamespaceHosts) -> dict[str, list[str]]:
    """_Ray_processes lists, per host, the processes of its PID namespace other than sshd's."""
    found = {}
    for host in tb.hosts:
        cmds = []
        for pid in host.pids():
            try:
                cmd = " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if not cmd.startswith("sshd"):
                cmds.append(cmd[:100])
        if cmds:
            found[host.name] = cmds
    return found
