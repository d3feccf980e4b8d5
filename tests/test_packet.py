"""Packet flows over real namespaces: echo RTT, loss counting, schedules, bad input, HMAC."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from antler.config.test import parse_run
from antler.node import hmac
from antler.node.flow import check_flow
from antler.node.launch.netns import launch_thread as launch
from antler.node.runners.packet import Unresponsive
from antler.node.runners.packet.wire import BadPacket, Packet, PacketFlag, PacketHeader, decode, reply_to
from antler.node.spec import ConfigError, parse
from antler.report.analyze import analyze_frames, arrival_counts, packet_flows
from tests.lab.netns import NetnsFactory
from tests.lab.trees import on, run_tree

GARBAGE = str(Path(__file__).parent / "lab" / "packet_garbage.py")
PORT = 7778


@pytest.fixture
def pair(netns: NetnsFactory) -> tuple[str, str]:
    """Return a client namespace and a server namespace (10.77.41.2) joined by a veth."""
    a, b = netns.new("pc"), netns.new("ps")
    netns.link(a, "10.77.41.1/24", b, "10.77.41.2/24")
    return a.name, b.name


def server(ns: str) -> dict[str, Any]:
    return on(ns, {"packet_server": {"listen_addr": f":{PORT}"}})


def client(ns: str, flow: str, **sender: Any) -> dict[str, Any]:
    return on(ns, {"packet_client": {"flow": flow, "addr": f"10.77.41.2:{PORT}", "sender": [{"unresponsive": sender}]}})


def test_echo_flow_records_rtt_and_both_ends(pair: tuple[str, str]) -> None:
    a, b = pair
    out = run_tree(
        {"serial": [server(b), client(a, "echo", wait=["5ms"], length=[100], duration="1s", echo=True)]},
        launch=launch,
        timeout="90s",
    )
    assert out.ok, out.errors()
    f = out.packet_flows().loc["echo"]
    assert (f.sent, f.received, f.lost, f.duplicates) == (200, 200, 0, 0)
    assert f.server_received == 200
    # A veth round trip inside one host is well under the 5 ms between packets.
    assert 0 < f.rtt_ms_median < 5
    assert 0 < f.owd_ms_median < f.rtt_ms_median
    rtt = analyze_frames(packet_info=out.packet_info(), packet_io=out.table("packet_io")).rtt
    assert len(rtt) == 200 and (rtt.rtt_ms > 0).all()
    info = out.packet_info()
    assert sorted(zip(info.flow, info.server, strict=True)) == [("echo", False), ("echo", True)]
    io = out.table("packet_io")
    replies = io[~io.server & ~io.sent]
    assert (replies["flags"] & int(PacketFlag.REPLY)).all() and not (replies["flags"] & int(PacketFlag.ECHO)).any()
    assert io[io.server].sched_t_ns.isna().all() and io[~io.server & io.sent].sched_t_ns.notna().all()


def _io(rows: Sequence[tuple[bool, int, int, int, bool]], flow: str = "f") -> pd.DataFrame:
    """_io builds packet_io rows from (server, t_ns, seq, flags, sent)."""
    return pd.DataFrame(
        [
            {"flow": flow, "server": s, "t_ns": t, "seq": q, "length": 64, "flags": fl, "sent": sent, "sched_t_ns": t}
            for s, t, q, fl, sent in rows
        ]
    )


def test_lost_duplicate_late_early_counted_from_a_crafted_sequence() -> None:
    sends = [(False, i * 1000, i, PacketFlag.ECHO, True) for i in range(10)]
    # Replies arrive as 0 1 3 2 2 5 4 7 9: 6 and 8 lost, 2 duplicated,
    # 3 and 5 overtook 2 and 4 (early), which arrive late.
    order = [0, 1, 3, 2, 2, 5, 4, 7, 9]
    replies = [(False, 100_000 + k * 1000, q, PacketFlag.REPLY, False) for k, q in enumerate(order)]
    f = packet_flows(None, _io(sends + replies)).set_index("flow").loc["f"]
    assert (f.sent, f.received, f.lost, f.duplicates, f.late, f.early) == (10, 8, 2, 1, 2, 2)
    assert f.loss_pct == pytest.approx(20.0)
    # RTT of seq q is 100 µs + 1 µs x (arrival index - q) in this sequence.
    assert f.rtt_ms_median == pytest.approx(
        np.median([(100_000 + k * 1000 - q * 1000) / 1e6 for k, q in enumerate(order) if k != 4])
    )

    # One-way packets are counted at the server; a duplicate that arrives before
    # its original's successor is not late.
    oneway = [(False, i * 1000, i, 0, True) for i in range(6)]
    arrivals = [(True, 50_000 + k, q, 0, False) for k, q in enumerate([0, 0, 2, 1, 5])]
    g = packet_flows(None, _io(oneway + arrivals, "g")).set_index("flow").loc["g"]
    assert (g.sent, g.received, g.lost, g.duplicates, g.late, g.early) == (6, 4, 2, 1, 1, 1)
    assert np.isnan(g.rtt_ms_median)
    assert arrival_counts(np.array([3, 2, 1, 0])) == (4, 0, 3, 3)
    assert arrival_counts(np.array([], dtype=np.int64)) == (0, 0, 0, 0)


@pytest.mark.slow
def test_one_percent_random_loss_is_measured_within_half_a_point(netns: NetnsFactory) -> None:
    a, b = netns.new("pc"), netns.new("ps")
    netns.link(a, "10.77.41.1/24", b, "10.77.41.2/24")
    b.run(
        "iptables", "-A", "INPUT", "-p", "udp", "--dport", str(PORT),
        "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP",
    )  # fmt: skip
    # 20,000 packets at 0.2 ms: 4 s.
    out = run_tree(
        {"serial": [server(b.name), client(a.name, "loss", wait=["200us"], length=[64], duration="4s")]},
        launch=launch,
        timeout="90s",
    )
    assert out.ok, out.errors()
    f = out.packet_flows().loc["loss"]
    assert f.sent == 20_000
    assert 0.5 <= f.loss_pct <= 1.5, f
    dropped = int(b.run("iptables", "-L", "INPUT", "-v", "-n", "-x").stdout.split("\n")[2].split()[0])
    # What the rule dropped is exactly what the flow lost: the tool itself lost nothing.
    assert f.lost == dropped


def test_sequential_and_random_waits_and_lengths_follow_the_lists(pair: tuple[str, str]) -> None:
    a, b = pair
    seq = {"wait": ["1ms", "3ms"], "length": [60, 120, 200], "duration": "400ms"}
    rnd = {**seq, "random_wait": True, "random_length": True, "wait_first": True, "seed": 3}
    out = run_tree(
        {"serial": [server(b), {"parallel": [client(a, "seq", **seq), client(a, "rnd", **rnd)]}]},
        launch=launch,
        timeout="90s",
    )
    assert out.ok, out.errors()
    io = out.table("packet_io")
    tx = io[~io.server & io.sent].sort_values("seq")
    s, r = tx[tx.flow == "seq"], tx[tx.flow == "rnd"]
    gaps = np.diff(s.sched_t_ns.to_numpy()) / 1e6
    assert list(gaps) == [1.0, 3.0] * (len(gaps) // 2) + [1.0] * (len(gaps) % 2)
    assert list(s.length) == [[60, 120, 200][i % 3] for i in range(len(s))]
    assert len(s) == 200  # 100 waits of 1 + 3 ms in 400 ms
    rgaps = np.diff(r.sched_t_ns.to_numpy()) / 1e6
    assert set(rgaps) == {1.0, 3.0} and set(r.length) == {60, 120, 200}
    assert list(rgaps) != sorted(rgaps) and list(r.length) != [[60, 120, 200][i % 3] for i in range(len(r))]
    # The server saw every packet with its length.
    got = io[io.server & ~io.sent]
    assert sorted(zip(got.flow, got.seq, got.length, strict=True)) == sorted(
        zip(tx.flow, tx.seq, tx.length, strict=True)
    )


def test_unresponsive_plan_cycles_or_draws_and_honours_wait_first() -> None:
    u = parse(Unresponsive, {"wait": ["10ms", "20ms"], "length": [50, 60], "duration": "100ms"}, "u")
    assert [(t // 1_000_000, n) for t, n, _ in u.plan()] == [
        (0, 50), (10, 60), (30, 50), (40, 60), (60, 50), (70, 60), (90, 50),
    ]  # fmt: skip
    first = parse(Unresponsive, {"wait": ["10ms"], "wait_first": True, "duration": "30ms"}, "u")
    assert [t // 1_000_000 for t, _, _ in first.plan()] == [10, 20]
    with pytest.raises(ConfigError, match="wait above 0"):
        parse(Unresponsive, {"wait": ["0"]}, "u")


def test_server_survives_random_datagrams_then_echoes_a_real_client(pair: tuple[str, str]) -> None:
    a, b = pair
    garbage = on(a, {"system": {"args": [sys.executable, GARBAGE, "10.77.41.2", str(PORT), "5000"]}})
    real = client(a, "real", wait=["2ms"], length=[80], duration="200ms", echo=True)
    out = run_tree({"serial": [server(b), garbage, real]}, launch=launch, timeout="90s")
    assert out.ok, out.errors()
    f = out.packet_flows()
    assert list(f.index) == ["real"]  # nothing of the garbage was recorded as a flow
    assert f.loc["real"].received == f.loc["real"].sent == 100
    (summary,) = [t for t in out.logs(tag="packet_server") if t.startswith("received")]
    dropped = sum(
        int(w) for w in summary.replace(",", " ").split()[summary.split().index("echoed") + 2 :] if w.isdigit()
    )
    # Of the 5000 datagrams only those that happen to be well formed (kind 4 with a
    # valid random flow is vanishingly rare) may pass; all the rest were counted.
    assert dropped >= 4990, summary


def test_hmac_forged_packets_are_dropped_and_counted(pair: tuple[str, str]) -> None:
    a, b = pair
    forged = on(a, {"system": {"args": [sys.executable, GARBAGE, "10.77.41.2", str(PORT), "600", "forged"]}})
    real = client(a, "signed", wait=["2ms"], length=[80], duration="200ms", echo=True)
    out = run_tree({"serial": [server(b), forged, real]}, hmac_key=b"test key", launch=launch, timeout="90s")
    assert out.ok, out.errors()
    assert any("dropped 600 with a missing or bad signature" in t for t in out.logs(tag="packet_server")), out.logs(
        "packet_server"
    )
    f = out.packet_flows()
    assert list(f.index) == ["signed"]
    assert f.loc["signed"].received == 100
    io = out.table("packet_io")
    assert (io["flags"] & int(PacketFlag.SIGNED)).all()
    assert not any("test key" in str(i) for i in out.items)


def test_a_lost_server_gives_loss_figures_not_a_hang(pair: tuple[str, str]) -> None:
    a, _ = pair
    out = run_tree(
        {"serial": [client(a, "lost", wait=["10ms"], length=[64], duration="300ms", echo=True)]},
        launch=launch,
        timeout="90s",
    )
    assert out.ok, out.errors()
    f = out.packet_flows().loc["lost"]
    assert (f.sent, f.received, f.lost) == (30, 0, 30)
    assert np.isnan(f.rtt_ms_median)


def test_a_flow_cut_short_by_the_test_timeout_stops_its_sender_and_keeps_what_it_sent(pair: tuple[str, str]) -> None:
    a, b = pair
    tree = {"serial": [server(b), client(a, "cut", wait=["2ms"], length=[64], duration="60s", echo=True)]}
    out = run_tree(tree, launch=launch, timeout="1s")
    # The timeout, and the flow it found running (what held the test up).
    assert not out.ok and [e.message for e in out.errors()] == [
        "still running (flow cut) when the test timed out after 1s",
        "test timed out after 1s",
    ]
    # The sender process reported every packet it sent before it was stopped
    # (the leak check fails the test if the process outlived it).
    (log,) = out.logs(tag="packet_client")
    sent = int(log.split("sent ")[1].split()[0])
    io = out.table("packet_io")
    assert 300 <= sent <= 500
    assert (~io.server & io.sent).sum() == sent


def test_wire_format_round_trips_and_rejects_tampering() -> None:
    p = Packet(PacketHeader(PacketFlag.ECHO, 2**40 + 5, "flow-1.a"), 120)
    data = p.encode(b"k")
    assert len(data) == 120
    got = decode(data, b"k")
    assert got.header.seq == 2**40 + 5 and got.header.flow == "flow-1.a" and got.length == 120
    assert got.header.flag == PacketFlag.ECHO | PacketFlag.SIGNED
    for i in (3, 5, 14, 60, 119):  # flags, seq, flow, tag and padding are all covered
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(BadPacket):
            decode(bytes(bad), b"k")
    with pytest.raises(BadPacket, match="unsigned"):
        decode(p.encode(), b"k")
    with pytest.raises(BadPacket, match="truncated"):
        decode(data[:10])
    reply = decode(reply_to(data, b"k"), b"k")
    assert reply.header.flag == PacketFlag.REPLY | PacketFlag.SIGNED and reply.header.seq == p.header.seq
    with pytest.raises(ValueError, match="shorter than its header"):
        Packet(PacketHeader(PacketFlag(0), 0, "f"), 10).encode()


def test_the_server_refuses_a_flow_id_that_only_starts_like_one() -> None:
    # Encode writes any ASCII ID; the server must take only whole flow IDs of
    # at most 16 characters, as config does (a flow ID becomes a file name).
    for flow in ("a" * 17, "a b", "a/../../x", "abcdefghijklmnopqrstuvwxyz"):
        data = Packet(PacketHeader(PacketFlag.ECHO, 1, flow), 64).encode()
        with pytest.raises(BadPacket, match="bad-flow"):
            decode(data)
    assert decode(Packet(PacketHeader(PacketFlag.ECHO, 1, "a" * 16), 64).encode()).header.flow == "a" * 16


def test_hmac_key_comes_from_env_then_file_then_random(tmp_path: Path) -> None:
    assert hmac.resolve_key(False, environ={hmac.KEY_ENV: "x"}) is None
    assert hmac.resolve_key(True, environ={hmac.KEY_ENV: "from env"}) == b"from env"
    (tmp_path / "key").write_text("from file\n")
    assert hmac.resolve_key(True, str(tmp_path / "key"), environ={}) == b"from file"
    k1, k2 = hmac.resolve_key(True, environ={}), hmac.resolve_key(True, environ={})
    assert k1 and k2 and k1 != k2


def test_config_errors_name_the_path() -> None:
    for flow in ("Upper", "1abc", "x" * 17, "a_b", ""):
        with pytest.raises(ValueError):
            check_flow(flow)
    check_flow("a.b-1" + "x" * 11)
    base = {"flow": "ok", "addr": "10.77.0.1:1", "sender": [{"unresponsive": {"wait": ["1ms"]}}]}
    with pytest.raises(ConfigError, match=r"run.serial\[1\].packet_client: invalid flow ID 'Bad'"):
        parse_run({"serial": [{"sleep": "1ms"}, {"packet_client": {**base, "flow": "Bad"}}]})
    with pytest.raises(ConfigError, match="above max_packet_size"):
        parse_run({"packet_client": {**base, "sender": [{"unresponsive": {"length": [2000]}}]}})
    with pytest.raises(ConfigError, match="exactly one of unresponsive"):
        parse_run({"packet_client": {**base, "sender": [{}]}})
    with pytest.raises(ConfigError, match="protocol"):
        parse_run({"packet_server": {"protocol": "tcp"}})


def test_packet_and_stream_sockopts_are_one_type_and_take_names_or_numbers() -> None:
    import socket

    from antler.node.sockopt import Sockopt

    base = {"flow": "ok", "addr": "10.77.0.1:1", "sender": [{"unresponsive": {"wait": ["1ms"]}}]}
    named = {"level": "SOL_SOCKET", "opt": "SO_PRIORITY", "value": "0x6", "name": "prio"}
    run = parse_run({"packet_client": {**base, "sockopt": [named]}})
    (opt,) = run.packet_client.sockopt  # type: ignore[union-attr]
    stream = parse_run({"stream_client": {"addr": "10.77.0.1:1", "upload": {"flow": "a", "sockopt": [named]}}})
    assert type(opt) is Sockopt and stream.stream_client.upload.sockopt == (opt,)  # type: ignore[union-attr]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        opt.apply(s)
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY) == 6
    with pytest.raises(ConfigError, match="unknown socket constant"):
        parse_run({"packet_client": {**base, "sockopt": [{**named, "opt": "SO_NOPE"}]}})
    with pytest.raises(ConfigError, match="brackets"):
        parse_run({"packet_client": {**base, "addr": "::1:7"}})
