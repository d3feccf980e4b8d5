"""Helpers for tests that run trees of nodes: node configs, a veth between namespaces, running a tree, reading its items."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psutil
import yaml

from antler.config.test import parse_run
from antler.node import Error, LogEntry, do
from antler.node.items import Item
from antler.node.launch import Launchers


def local(node_id: str, netns: str | None = None, **extra: Any) -> dict[str, Any]:
    """Return the config of a local node, in a namespace it creates if netns is given."""
    node: dict[str, Any] = {"id": node_id, "launcher": {"local": {}}, **extra}
    if netns:
        node["netns"] = {"name": netns, "create": True}
    return node


def veth(net: str, peer_ns: str, a: str, b: str) -> list[dict[str, Any]]:
    """Return a list of system runs, on the node of one namespace, that link it to peer_ns (net.1 and net.2, a /24)."""
    return [
        {"system": {"command": f"ip link add {a} type veth peer name {b} netns {peer_ns}"}},
        {"system": {"command": f"ip addr add {net}.1/24 dev {a}"}},
        {"system": {"command": f"ip link set {a} up"}},
        {"system": {"command": f"ip -n {peer_ns} addr add {net}.2/24 dev {b}"}},
        {"system": {"command": f"ip -n {peer_ns} link set {b} up"}},
    ]


def wait_for(*paths: Any) -> dict[str, Any]:
    """Return a run that waits (10 s at most) until every file in paths exists: a readiness signal."""
    test = " && ".join(f"[ -e {p} ]" for p in paths)
    return {"system": {"command": "timeout 10 sh -c", "args": [f"until {test}; do sleep 0.01; done"]}}


def run_tree(data: Any, **kw: Any) -> tuple[bool, list[Item], Launchers, float]:
    """Run a tree with the default launchers; ok, the items, the launchers and the seconds it took."""
    items: list[Item] = []
    launchers = Launchers()
    start = time.monotonic()
    ok = asyncio.run(do(parse_run(data), items.append, launch=launchers, **kw))
    return ok, items, launchers, time.monotonic() - start


def errors(items: list[Item]) -> list[Error]:
    """Return the Error items."""
    return [i for i in items if isinstance(i, Error)]


def logs(items: list[Item], node_id: str | None = None) -> list[str]:
    """Return the log texts, of one node or all."""
    return [i.text for i in items if isinstance(i, LogEntry) and (node_id is None or i.node_id == node_id)]


def processes_with(argv: list[str]) -> list[int]:
    """List PIDs whose command line is exactly argv."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == argv]


def write_experiment(folder: Path, name: str, run: Any, **test: Any) -> None:
    """Write folder/experiment/NAME.yaml with the run tree (and any other test keys)."""
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    exp = {"test": {"id": {"experiment": name}, "run": run, **test}}
    (folder / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(exp))
