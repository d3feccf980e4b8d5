"""The dumbbell rig and its delay emulation, on real namespaces (all deleted after each test).

Timing checks use the median of a ping series, which a user reads as "the
RTT", with the margins the rig promises: the configured RTT within 1 ms idle,
and the delay link within 0.5 ms under a 50 Mbit/s load. The load is an
iperf3 UDP sender paced at 50 Mbit/s through an unshaped rig (rig.rate=0), so
no queue builds anywhere and any extra RTT is the delay link's own error.
"""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from omegaconf import OmegaConf

from antler.cli import main
from antler.config.compose import compose_config, compose_jobs
from antler.config.test import parse_run
from antler.node import Duration, Item, do
from antler.node.launch.netns import launch_thread as launch
from antler.node.spec import ConfigError
from antler.rig import dumbbell, kernel
from antler.rig.delay_link import DelayError, LinkSpec
from tests.lab.netns import unique_name
from tests.lab.trees import errors, logs

PING_TIME = re.compile(r"time=([0-9.]+) ms")
PING_COUNTS = re.compile(r"(\d+) packets transmitted, (\d+) received")


Body = Callable[[dict[str, Any]], list[dict[str, Any]]]
"""Body makes the runs of a test from the rig's resolved config (its nodes and addresses)."""


def rig_test(overrides: list[str], body: Body | None = None) -> tuple[bool, list[Item], dict[str, Any]]:
    """Build the dumbbell with overrides, run body between set-up and tear-down, and return the items."""
    prefix = unique_name("rg") + "-"
    cfg = compose_config(["+experiment=rigcheck", f"rig.netns_prefix={prefix}", *overrides])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    rig = plain["rig"]
    setup, _, teardown = plain["test"]["run"]["serial"]
    tree = {"serial": [setup, *(body(rig) if body else []), teardown]}
    items: list[Item] = []
    ok = asyncio.run(do(parse_run(tree), items.append, launch=launch, timeout=Duration(120_000_000_000)))
    return ok, items, rig


def on(rig: dict[str, Any], node: str, **run: Any) -> dict[str, Any]:
    """Return a child run on one of the rig's nodes."""
    return {"child": {"node": rig["nodes"][node], **run}}


def ping_rtts(text: str) -> list[float]:
    """Return the RTTs in ms of a ping's per-packet lines."""
    return [float(m) for m in PING_TIME.findall(text)]


def ping_log(items: list[Item], count: int) -> str:
    """Find the log entry of the ping that sent count packets."""
    found = [t for t in logs(items, "left") if f"{count} packets transmitted" in t]
    assert found, f"no ping of {count} packets in the log: {logs(items)}"
    return found[0]


@pytest.mark.parametrize("rtt_ms", [10, 40])
def test_left_pings_right_through_mid_at_the_configured_rtt(rtt_ms: int) -> None:
    count = 100
    ok, items, _ = rig_test(
        [f"rig.rtt={rtt_ms}ms"],
        lambda rig: [on(rig, "left", system={"command": f"ping -c {count} -i 0.01 {rig['addr']['right']}"})],
    )
    assert ok, errors(items)
    rtts = ping_rtts(ping_log(items, count))
    assert len(rtts) == count
    median = statistics.median(rtts)
    assert abs(median - rtt_ms) < 1.0, f"median RTT {median:.3f} ms, configured {rtt_ms} ms"
    emulator = kernel.choose_emulator()
    assert any(f"emulator {emulator}" in t for t in logs(items, "mid")), "the rig logs the emulator it uses"
    assert any("qdisc pfifo 10:" in t and "limit 1000p" in t for t in logs(items, "mid")), "tear-down logs the queue"


def listening(port: int) -> dict[str, Any]:
    """Return a system runner that waits (10 s at most) until a TCP socket listens on port: a readiness signal."""
    return {
        "command": "timeout 10 sh -c",
        "args": [f"until ss -Hltn 'sport = :{port}' | grep -q .; do sleep 0.01; done"],
    }


def iperf3_with_ping(client_args: str, ping_after: str, count: int) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Return a rig body: an iperf3 load from left to right, pinged `ping_after` into it."""

    def body(rig: dict[str, Any]) -> list[dict[str, Any]]:
        right = rig["addr"]["right"]
        return [
            on(rig, "right", system={"command": f"iperf3 -s -1 -B {right}", "background": True, "stdout": "quiet"}),
            on(rig, "right", system=listening(5201)),
            {
                "parallel": [
                    on(rig, "left", system={"command": f"iperf3 -c {right} {client_args} -J"}),
                    {
                        "serial": [
                            {"sleep": ping_after},
                            on(rig, "left", system={"command": f"ping -c {count} -i 0.01 {right}"}),
                        ]
                    },
                ]
            },
        ]

    return body


@pytest.mark.slow
def test_delay_link_keeps_the_rtt_under_50_mbit_load() -> None:
    count = 250

    body = iperf3_with_ping("-u -b 50M -l 1400 -t 4", ping_after="1s", count=count)

    ok, items, _ = rig_test(["rig.rate=0", "rig.rtt=20ms", "rig.emulator=tun"], body)
    assert ok, errors(items)
    report = json.loads(next(t for t in logs(items, "left") if t.lstrip().startswith("{")))
    udp = report["end"]["sum"]
    assert udp["bits_per_second"] > 45e6, f"the load was only {udp['bits_per_second'] / 1e6:.1f} Mbit/s"
    # Some of the load may be lost in the receiving socket's buffer on a busy
    # host; what matters is that 50 Mbit/s crossed the delay link meanwhile.
    assert udp["lost_percent"] < 20, f"{udp['lost_percent']}% of the load was lost"
    rtts = ping_rtts(ping_log(items, count))
    assert len(rtts) >= count * 0.98
    median = statistics.median(rtts)
    assert abs(median - 20.0) < 0.5, f"median RTT under load {median:.3f} ms, configured 20 ms"


def test_random_loss_of_one_percent_measures_about_one_percent() -> None:
    count = 4000
    ok, items, _ = rig_test(
        ["rig.rtt=10ms", "rig.loss=1%", "rig.seed=7"],
        lambda rig: [on(rig, "left", system={"command": f"ping -c {count} -i 0.0005 -l 40 -q {rig['addr']['right']}"})],
    )
    assert ok, errors(items)
    m = PING_COUNTS.search(ping_log(items, count))
    assert m is not None
    sent, received = int(m.group(1)), int(m.group(2))
    loss = 1 - received / sent
    assert 0.005 <= loss <= 0.015, f"measured loss {loss:.2%} for rig.loss=1%"


def test_qdisc_detection_agrees_with_the_kernel() -> None:
    have = kernel.qdiscs()
    assert {"pfifo", "bfifo", "htb", "tbf"} <= have
    # Ask the kernel directly about netem, the qdisc the emulator choice hangs on.
    ns = unique_name("rq")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            capture_output=True,
            text=True,
        )
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=True)
    assert ("netem" in have) == (r.returncode == 0)
    assert kernel.choose_emulator() == ("netem" if r.returncode == 0 else "tun")


def kernel_without(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Make the kernel probe answer every qdisc antler knows but kind, whatever this kernel has."""
    have = frozenset(kernel.QDISC_PROBES) - {kind}
    monkeypatch.setattr(kernel, "qdiscs", lambda: have)


def test_a_qdisc_the_kernel_lacks_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # cake: neither this kernel nor the userspace bottleneck has it (rig.bottleneck auto tries both).
    kernel_without(monkeypatch, "cake")
    with pytest.raises(ConfigError) as e:
        compose_jobs(["+experiment=rigcheck", "rig.qdisc=cake"])
    message = str(e.value)
    assert "rig.qdisc 'cake'" in message
    assert "lacks it" in message
    assert "pfifo" in message and "htb" in message, "the error names the qdiscs the kernel has"
    assert "fq_codel" in message, "and those the userspace bottleneck implements"


def test_forcing_netem_without_it_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    kernel_without(monkeypatch, "netem")
    with pytest.raises(ConfigError, match=r"lacks netem; it has: .*pfifo"):
        compose_jobs(["+experiment=rigcheck", "rig.emulator=netem"])


def test_rig_config_mistakes_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"rig\.rtt"):
        compose_jobs(["+experiment=rigcheck", "rig.rtt=20"])
    with pytest.raises(ConfigError, match="loss"):
        compose_jobs(["+experiment=rigcheck", "rig.loss=150%"])
    with pytest.raises(
        ConfigError, match=r"^rig\.nodes: the rig's nodes need distinct IDs, got \['left', 'left', 'right'\]"
    ):
        compose_jobs(["+experiment=rigcheck", "rig.nodes.mid.id=left"])


def test_link_spec_reads_delay_and_loss() -> None:
    assert LinkSpec.parse("d-fwd:10ms:1%") == LinkSpec("d-fwd", 10_000_000, 0.01)
    assert LinkSpec.parse("d-ret:250us") == LinkSpec("d-ret", 250_000, 0.0)
    for bad in ("d-fwd", "d-fwd:10", "d-fwd:10ms:2", "d-fwd:10ms:1", ":10ms"):
        with pytest.raises(DelayError):
            LinkSpec.parse(bad)


@pytest.mark.slow
def test_the_bottleneck_shapes_tcp_to_rig_rate_and_its_queue_shows_in_the_rtt() -> None:
    count = 300

    body = iperf3_with_ping("-t 6 -O 2 -C cubic", ping_after="3s", count=count)

    ok, items, _ = rig_test(["rig.rate=50mbit", "rig.rtt=20ms", "rig.qdisc=pfifo", "rig.limit=1000"], body)
    assert ok, errors(items)
    report = json.loads(next(t for t in logs(items, "left") if t.lstrip().startswith("{")))
    goodput = report["end"]["sum_received"]["bits_per_second"] / 1e6
    assert 44 <= goodput <= 50.5, f"TCP goodput {goodput:.1f} Mbit/s through a 50 Mbit/s bottleneck"
    rtts = ping_rtts(ping_log(items, count))
    assert statistics.median(rtts) > 20 + 50, f"median RTT under load {statistics.median(rtts):.1f} ms: no bufferbloat"


@pytest.mark.usefixtures("ray_session")
def test_meta_json_records_the_emulator_the_rig_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    prefix = unique_name("rg") + "-"
    assert main(["run", "+experiment=rigcheck", f"rig.netns_prefix={prefix}", "rig.rtt=10ms"]) == 0
    test_dir = tmp_path / "results" / "latest" / "experiment-rigcheck"
    meta = json.loads((test_dir / "meta.json").read_text())
    assert meta["rig"]["emulator"] == kernel.choose_emulator()
    assert meta["rig"]["rtt_ms"] == 10.0
    assert "pfifo" in meta["rig"]["kernel_qdiscs"]
    assert "50 packets transmitted, 50 received" in (test_dir / "log.txt").read_text()


def _commands(runs: list[dict[str, Any]]) -> list[str]:
    out = []
    for child in runs:
        for step in child["child"]["serial"]:
            s = step["system"]
            out.append(" ".join([s.get("command", ""), *s.get("args", [])]).strip())
    return out


def test_the_rig_uses_netem_where_the_kernel_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "qdiscs", lambda: frozenset({"pfifo", "htb", "tbf", "netem"}))
    rig = {"rtt": "20ms", "loss": "1%"}
    netem = _commands(dumbbell.setup_runs(rig))
    assert any(c.endswith("root netem delay 10000us limit 100000 loss 1%") for c in netem), netem
    assert any("mirred egress redirect dev ifb-fwd" in c for c in netem)
    assert not any("antler.rig.delay" in c for c in netem)
    tun = _commands(dumbbell.setup_runs({**rig, "emulator": "tun"}))
    assert not any("netem" in c for c in tun)
    assert any("antler.rig.delay run --link d-fwd:10ms:1% --link d-ret:10ms" in c for c in tun), tun
    plain = _commands(dumbbell.setup_runs({"rtt": "0", "loss": 0}))
    assert not any("netem" in c or "antler.rig.delay" in c for c in plain), "no delay, no emulator"
    assert any("emulator none" in c for c in plain)


def test_a_rig_given_in_part_takes_the_packaged_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # conf/rig/dumbbell.yaml is the one place the defaults are written: a rig
    # given in Python gets the same ones Hydra composes, nodes named after its prefix.
    composed = OmegaConf.to_container(compose_config(["+experiment=rigcheck"]).rig, resolve=True)
    assert dumbbell.params({}) == dumbbell.params(composed)
    monkeypatch.setattr(kernel, "qdiscs", lambda: frozenset({"pfifo", "htb", "netem"}))
    runs = dumbbell.setup_runs({"netns_prefix": "zz-", "rtt": "10ms"})
    assert sorted(r["child"]["node"]["netns"]["name"] for r in runs) == ["zz-left", "zz-mid", "zz-right"]
    assert dumbbell.params({"netns_prefix": "zz-"}).nodes.left.netns_name == "zz-left"
