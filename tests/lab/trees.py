"""Run trees of nodes for tests and benchmarks: node configs, a veth between namespaces, one run_tree and its Outcome."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
import psutil
import pyarrow as pa
import yaml

from antler.config.test import parse_run
from antler.node import Duration, Error, LogEntry, Run, StreamInfo, do
from antler.node.items import Batch, Item, PacketInfo, info_row
from antler.node.launch import Launchers
from antler.node.launch.tree import Launch
from antler.node.schemas import SCHEMAS
from antler.report.analyze import packet_flows, stream_flows


def local(node_id: str, netns: str | None = None, **extra: Any) -> dict[str, Any]:
    """Return the config of a local node, in a namespace it creates if netns is given."""
    node: dict[str, Any] = {"id": node_id, "launcher": {"local": {}}, **extra}
    if netns:
        node["netns"] = {"name": netns, "create": True}
    return node


def on(ns: str, run: dict[str, Any]) -> dict[str, Any]:
    """Return a child run on a node named ns in the existing namespace ns."""
    return {"child": {"node": {"id": ns, "netns": {"name": ns, "create": False}}, **run}}


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


def errors(items: list[Item]) -> list[Error]:
    """Return the Error items."""
    return [i for i in items if isinstance(i, Error)]


def logs(items: list[Item], node_id: str | None = None, *, tag: str | None = None) -> list[str]:
    """Return the log texts, of one node (or all) and one tag (or all)."""
    return [
        i.text
        for i in items
        if isinstance(i, LogEntry) and (node_id is None or i.node_id == node_id) and (tag is None or i.tag == tag)
    ]


class Outcome(NamedTuple):
    """What a tree produced: whether it passed, its items, the Launch it ran with, the seconds it took.

    It unpacks as ``ok, items, launch, seconds``; ``launch`` is the Launchers
    run_tree made unless the caller passed a Launch of its own.
    """

    ok: bool
    items: list[Item]
    launch: Any
    seconds: float

    def errors(self) -> list[Error]:
        """Return the Error items."""
        return errors(self.items)

    def logs(self, node_id: str | None = None, *, tag: str | None = None) -> list[str]:
        """Return the log texts, of one node (or all) and one tag (or all)."""
        return logs(self.items, node_id, tag=tag)

    def table(self, kind: str) -> pd.DataFrame:
        """Return the rows of one schema (``packet_io``, ``stream_io``, ``stream_info``, ...) as a frame."""
        if kind == "stream_info":
            rows = [info_row(i)[1] for i in self.items if isinstance(i, StreamInfo)]
            return pa.Table.from_pylist(rows, schema=SCHEMAS[kind]).to_pandas()
        batches = [i.batch for i in self.items if isinstance(i, Batch) and i.kind == kind]
        return pa.Table.from_batches(batches, schema=SCHEMAS[kind]).to_pandas()

    def packet_info(self) -> pd.DataFrame:
        """Return the PacketInfo items as a frame (tinit, flow, server, node_id)."""
        rows = [vars(i) for i in self.items if isinstance(i, PacketInfo)]
        return pd.DataFrame(rows, columns=["tinit", "flow", "server", "node_id"])

    def packet_flows(self) -> pd.DataFrame:
        """Return the per-flow table of the packet flows, indexed by flow."""
        return packet_flows(self.packet_info(), self.table("packet_io")).set_index("flow")

    def stream_flows(self) -> pd.DataFrame:
        """Return the per-flow table of the stream flows, indexed by flow."""
        return stream_flows(self.table("stream_info"), self.table("stream_io")).set_index("flow")


def run_tree(
    tree: dict[str, Any] | Run, launch: Launch | None = None, timeout: str | Duration | None = None, **kw: Any
) -> Outcome:
    """Run a tree (its config, or a parsed Run) on an in-process root node and return its Outcome.

    ``launch`` defaults to a fresh Launchers (every launcher, Ray included);
    ``timeout`` is a Duration or its text ("90s"), none by default; other keywords go to
    antler.node.do (control, hmac_key, feedback).
    """
    items: list[Item] = []
    used: Launch = Launchers() if launch is None else launch
    run = tree if isinstance(tree, Run) else parse_run(tree)
    start = time.monotonic()
    limit = Duration.parse(timeout) if isinstance(timeout, str) else timeout
    ok = asyncio.run(do(run, items.append, launch=used, timeout=limit, **kw))
    return Outcome(ok, items, used, time.monotonic() - start)


def processes_with(argv: list[str]) -> list[int]:
    """List PIDs whose command line is exactly argv."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == argv]


def write_experiment(folder: Path, name: str, run: Any, **test: Any) -> None:
    """Write folder/experiment/NAME.yaml with the run tree (and any other test keys)."""
    (folder / "experiment").mkdir(parents=True, exist_ok=True)
    exp = {"test": {"id": {"experiment": name}, "run": run, **test}}
    (folder / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(exp))
