"""The sysinfo runner gathers a node's facts where the node runs: inside its namespace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from antler.config.test import parse_run
from antler.node.items import Item, SysInfo
from antler.node.launch.netns import launch_thread as launch
from antler.node.root import do
from antler.node.spec import ConfigError
from antler.report.sysinfo import sysinfo_html
from tests.lab.netns import NetnsFactory


def test_sysinfo_in_a_namespace_reads_its_sysctls_and_commands(netns: NetnsFactory) -> None:
    ns = netns.new("si")
    # A value the host does not have (its default is 64), so reading the
    # host's /proc/sys instead of the namespace's would show.
    ns.run("sysctl", "-q", "-w", "net.ipv4.ip_default_ttl=77")
    run = parse_run(
        {
            "child": {
                "node": {"id": "inner", "netns": {"name": ns.name}, "env": {"vars": ["ANTLER_SI=1"]}},
                "sysinfo": {
                    "command": ["ip -o link show", {"command": "sh", "args": ["-c", "exit 3"]}],
                    "file": ["/proc/sys/net/ipv4/ip_default_ttl", "/nonexistent/file"],
                    "env": ["ANTLER_S.*"],
                    "sysctl": [r"net\.ipv4\.ip_default_ttl", r"net\.ipv4\.tcp_congestion_control"],
                },
            }
        }
    )
    items: list[Item] = []
    assert asyncio.run(do(run, items.append, launch=launch))
    (info,) = [i for i in items if isinstance(i, SysInfo)]
    assert info.node_id == "inner"
    data: dict[str, Any] = info.data  # JSON: nested mappings of text
    assert data["sysctl"]["net.ipv4.ip_default_ttl"] == "77"
    assert data["sysctl"]["net.ipv4.tcp_congestion_control"] in ("cubic", "reno", "bbr")
    assert data["file"]["/proc/sys/net/ipv4/ip_default_ttl"].strip() == "77"
    assert data["file"]["/nonexistent/file"].startswith("(unreadable")
    # Only the namespace's interfaces: lo, none of the host's.
    links = data["command"]["ip -o link show"]
    assert "lo:" in links and len(links.strip().splitlines()) == 1
    assert data["command"]["sh -c exit 3"].endswith("(exited with status 3)")
    assert data["env"] == {"ANTLER_SI": "1"}
    assert data["kernel"].startswith("Linux ") and data["os"]
    page = sysinfo_html(info.node_id, data)
    assert "net.ipv4.ip_default_ttl" in page and "<td>77</td>" in page


@pytest.mark.no_netns
def test_sysinfo_rejects_a_bad_pattern() -> None:
    with pytest.raises(ConfigError, match=r"run\.sysinfo: pattern '\(': "):
        parse_run({"sysinfo": {"sysctl": ["("]}})
