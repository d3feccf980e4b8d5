"""Addresses are checked against their protocol before anything runs, and socket errors name them (issue 16, part 3)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from antler.cli import main
from antler.config.test import parse_run
from antler.node import Error, Item, LogEntry, do
from antler.node.launch.netns import launch_thread as launch
from antler.node.metric import Duration
from antler.node.spec import ConfigError
from tests.lab.netns import NetnsFactory, sh


@pytest.mark.parametrize(
    ("run", "key", "protocol", "addr"),
    [
        # Issue 16: passed vet, then "Address family for hostname not supported" at run time.
        ({"packet_server": {"listen_addr": "10.77.91.2:7778", "protocol": "udp6"}}, "listen_addr", "udp6", "10.77.91.2:7778"),
        ({"packet_client": {"flow": "p", "addr": "[::1]:7778", "protocol": "udp4", "sender": [{"unresponsive": {}}]}},
         "addr", "udp4", "[::1]:7778"),
        ({"stream_server": {"listen_addr": "[::1]:7777", "protocol": "tcp4"}}, "listen_addr", "tcp4", "[::1]:7777"),
        ({"stream_client": {"addr": "10.77.91.2:7777", "protocol": "tcp6", "upload": {"flow": "u"}}},
         "addr", "tcp6", "10.77.91.2:7777"),
    ],
)  # fmt: skip
def test_a_literal_of_the_wrong_family_is_refused_naming_key_protocol_and_address(
    run: dict[str, Any], key: str, protocol: str, addr: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_run({"serial": [run]})
    message = str(e.value)
    assert key in message and protocol in message and addr in message, message


def test_vet_exits_2_for_a_wrong_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c" / "experiment").mkdir(parents=True)
    (tmp_path / "c" / "experiment" / "v6.yaml").write_text(
        "# @package _global_\ntest:\n  id: {experiment: v6}\n  run:\n"
        '    packet_server: {listen_addr: "10.77.91.2:7778", protocol: udp6}\n'
    )
    assert main(["vet", "--config-dir", str(tmp_path / "c"), "+experiment=v6"]) == 2
    err = capsys.readouterr().err
    assert "test.run.packet_server" in err and "udp6" in err and "10.77.91.2:7778" in err


@pytest.mark.parametrize("runner", ["stream_server", "packet_server"])
def test_a_link_local_address_to_listen_on_needs_its_interface(runner: str) -> None:
    with pytest.raises(ConfigError, match=r"link-local address without its interface.*\[fe80::1%IFACE\]"):
        parse_run({runner: {"listen_addr": "[fe80::1]:7777", "listen_addr_key": "k"}})


def _run(tree: dict[str, Any]) -> tuple[bool, list[Item]]:
    items: list[Item] = []
    ok = asyncio.run(do(parse_run(tree), items.append, launch=launch, timeout=Duration.parse("30s")))
    return ok, items


def _link_local_pair(netns: NetnsFactory) -> tuple[Any, Any, str]:
    """Two namespaces on a veth with link-local IPv6 addresses only (fe80::1 and fe80::2, no DAD wait)."""
    c, s = netns.new("lc"), netns.new("ls")
    ci, si = netns.link(c, "10.77.97.1/24", s, "10.77.97.2/24")
    c.ip("-6", "addr", "add", "fe80::1/64", "dev", ci, "nodad")
    s.ip("-6", "addr", "add", "fe80::2/64", "dev", si, "nodad")
    return c, s, si


def test_a_link_local_server_reached_through_feedback_works(netns: NetnsFactory) -> None:
    """Issue 16: the published address lost its zone and the client's connect failed with "Invalid argument"."""
    c, s, server_if = _link_local_pair(netns)
    client = {"id": "client", "netns": {"name": c.name}}
    server = {"id": "server", "netns": {"name": s.name}}
    listen = f"[fe80::2%{server_if}]:0"
    ok, items = _run(
        {
            "serial": [
                {"child": {"node": server, "stream_server": {"listen_addr": listen, "listen_addr_key": "tcp"}}},
                {"child": {"node": server, "packet_server": {"listen_addr": listen, "listen_addr_key": "udp"}}},
                {"child": {"node": client, "stream_client": {"addr_key": "tcp", "upload": {"flow": "ll", "duration": "200ms"}}}},
                {"child": {"node": client, "packet_client": {"addr_key": "udp", "flow": "llp",
                 "sender": [{"unresponsive": {"wait": ["10ms"], "length": [64], "duration": "200ms", "echo": True}}]}}},
            ]
        }
    )  # fmt: skip
    assert ok, [i for i in items if isinstance(i, Error)]
    logs = [i.text for i in items if isinstance(i, LogEntry)]
    assert any(f"listening on [fe80::2%{server_if}]:" in t for t in logs), logs
    assert any("flow llp: sent 20 packets" in t and "20 of 20 echo requests answered" in t for t in logs), logs


def test_socket_errors_name_the_address_and_the_flow(netns: NetnsFactory) -> None:
    ns = netns.new("se")
    node = {"id": "n", "netns": {"name": ns.name}}
    # Issue 16: a bind that failed said "Cannot assign requested address" and nothing else.
    ok, items = _run({"child": {"node": node, "packet_server": {"listen_addr": "10.77.98.9:7778"}}})
    assert not ok
    (err,) = [i.message for i in items if isinstance(i, Error)]
    assert "10.77.98.9:7778" in err and "Cannot assign requested address" in err, err
    ok, items = _run(
        {"child": {"node": node, "stream_server": {"listen_addr": "10.77.98.9:0", "listen_addr_key": "k"}}}
    )
    (err,) = [i.message for i in items if isinstance(i, Error)]
    assert "10.77.98.9:0" in err and "Cannot assign requested address" in err, err
    # A link-local address fed to a node with no link-local interface names the flow and the address.
    tree = {"child": {"node": node, "packet_client": {"flow": "zz", "addr": "[fe80::9]:7778",
            "sender": [{"unresponsive": {"duration": "10ms"}}]}}}  # fmt: skip
    sh("ip", "-n", ns.name, "link", "set", "lo", "up")
    ok, items = _run(tree)
    (err,) = [i.message for i in items if isinstance(i, Error)]
    assert "flow zz" in err and "fe80::9" in err and "link-local" in err, err
