"""rig.schedule, rig.trace and each direction's values, checked before anything runs; the trace replay and the link's control on fake clocks and real sockets."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path

import pytest

from antler.cli import main
from antler.rig import dumbbell, kernel
from antler.rig.aqm.fifo import Pfifo
from antler.rig.delay_link import Link, LinkSpec
from antler.rig.link_control import Control
from antler.rig.trace import TraceBottleneck, rates, read_trace, resolve_trace


def _ipv4(length: int) -> bytes:
    """Return an IPv4 packet of length bytes (UDP, no options), enough for the bottleneck's parser."""
    header = bytes([0x45, 0, length >> 8, length & 0xFF, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 1, 1, 10, 77, 2, 2])
    return header + bytes([0, 1, 0, 2]) + bytes(length - 24)


def _pfifo(drop):  # type: ignore[no-untyped-def]
    return Pfifo(1000, drop=drop)


def test_a_constant_trace_delivers_one_1500_byte_packet_per_opportunity() -> None:
    ms = 1_000_000
    bn = TraceBottleneck(_pfifo, (1,), start_ns=0)  # one opportunity a millisecond, forever
    for _ in range(5):
        assert bn.arrive(_ipv4(1500), 0)
    sent = []
    for t in range(0, 6 * ms, ms // 4):
        while (out := bn.send(t)) is not None:
            sent.append(out[0])
    assert sent == [1 * ms, 2 * ms, 3 * ms, 4 * ms, 5 * ms]


def test_an_opportunity_carries_1500_bytes_however_they_are_packed() -> None:
    ms = 1_000_000
    bn = TraceBottleneck(_pfifo, (1,), start_ns=0)
    for _ in range(4):
        bn.arrive(_ipv4(500), 0)  # three fit one opportunity, the fourth takes the next
    bn.arrive(_ipv4(1400), 0)  # 1000 bytes left of the second, 400 of the third
    times = []
    for t in range(0, 5 * ms, ms):
        while (out := bn.send(t)) is not None:
            times.append(out[0] // ms)
    assert times == [1, 1, 1, 2, 3]


def test_an_idle_line_wastes_its_opportunities_and_the_trace_repeats() -> None:
    ms = 1_000_000
    bn = TraceBottleneck(_pfifo, (2, 10), start_ns=0)  # opportunities at 2, 10, 12, 20, 22, ... ms
    bn.arrive(_ipv4(1500), 11 * ms)
    bn.arrive(_ipv4(1500), 11 * ms)
    assert bn.next_start_ns() == 12 * ms
    got = [bn.send(12 * ms), bn.send(19 * ms), bn.send(20 * ms)]
    assert [g[0] // ms if g else None for g in got] == [12, None, 20]


def test_rates_makes_the_shipped_traces_mean_rate() -> None:
    assert rates([(1, 12)]) == list(range(1, 1001))
    square = rates([(5, 12), (5, 3)])
    assert sum(1 for t in square if t <= 5000) == 5000 and sum(1 for t in square if t > 5000) == 1250
    for name in ("const-12mbit", "square-12-3mbit-5s", "varying-seed1"):
        assert read_trace(resolve_trace(name))


def test_a_trace_with_a_bad_line_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.trace"
    bad.write_text("1\n2\nthree\n4\n")
    with pytest.raises(ValueError, match=r"bad.trace line 3: 'three' is not a whole number"):
        read_trace(str(bad))
    back = tmp_path / "back.trace"
    back.write_text("5\n3\n")
    with pytest.raises(ValueError, match=r"back.trace line 2: 3 is before the line above"):
        read_trace(str(back))
    with pytest.raises(ValueError, match="shipped traces: const-12mbit"):
        resolve_trace("no-such-trace")


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("rig.trace=nope", "rig.trace: 'nope': no such trace file"),
        (
            "rig.schedule=[{at: 2s, rate: 10mbit},{at: 1s, rate: 20mbit}]",
            "rig.schedule[1].at: 1s is before the step above",
        ),
        ("rig.schedule=[{at: 1s}]", "rig.schedule[0]: a step changes at least one of rate, rtt and loss"),
        ("rig.schedule=[{at: 1s, rate: 10MB}]", "rig.schedule[0].rate"),
        ("rig.schedule=[{at: 1s, rtt: 10ms, direction: forward}]", "rig.schedule[0].direction"),
        (
            "rig.schedule=[{at: 1s, rate: 5mbit, direction: reverse}]|rig.reverse.rate=0",
            "rig.schedule[0].rate: 5Mbit: the reverse direction has no rate",
        ),
        ("rig.reverse.qdisc=nosuch", "rig.reverse.qdisc 'nosuch'"),
    ],
)
def test_vet_refuses_a_bad_schedule_trace_or_direction_naming_it(
    override: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["vet", "+experiment=cubic", *override.split("|")]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_a_trace_file_with_a_bad_line_fails_vet_naming_file_and_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.trace").write_text("1\n1\nx2\n")
    assert main(["vet", "+experiment=trace", "rig.trace=my.trace"]) == 2
    assert "my.trace line 3: 'x2'" in capsys.readouterr().err


def test_the_default_dumbbell_shapes_both_directions_each_at_its_own_egress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel, "qdiscs", lambda: frozenset({"pfifo", "htb", "tbf"}))
    runs = json.dumps(dumbbell.setup_runs({}))
    for dev in ("m-right", "m-left"):
        assert f"tc class add dev {dev} parent 1: classid 1:1 htb rate 50000000bit" in runs
    one_way = json.dumps(dumbbell.setup_runs({"reverse": {"rate": 0}}))
    assert "dev m-left root handle 1: htb" not in one_way and "dev m-right root handle 1: htb" in one_way
    uneven = dumbbell.facts({"reverse": {"rate": "5mbit", "delay": "30ms"}, "forward": {"delay": "5ms"}})
    assert (uneven["forward"]["rate_bps"], uneven["reverse"]["rate_bps"]) == (50_000_000, 5_000_000)
    assert uneven["rtt_ms"] == 35.0


def test_the_link_takes_a_change_through_its_control_socket_and_answers_when() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    link = Link(LinkSpec("d-test", 10_000_000), random.Random(1), fd=a.fileno())
    name = f"antler-test-control-{os.getpid()}"
    control = Control(name, [link])
    asker = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    asker.bind("")
    asker.settimeout(2)
    try:
        asker.sendto(json.dumps({"dev": "d-test", "delay_ns": 40_000_000, "loss": 0.25}).encode(), f"\0{name}")
        control.handle()
        assert "t_ns" in json.loads(asker.recv(4096))
        assert (link.spec.delay_ns, link.spec.loss) == (40_000_000, 0.25)
        asker.sendto(json.dumps({"dev": "d-test", "rate_bps": 1}).encode(), f"\0{name}")
        control.handle()
        assert "is not a bottleneck" in json.loads(asker.recv(4096))["error"]
    finally:
        asker.close()
        control.sock.close()
        a.close()
        b.close()
