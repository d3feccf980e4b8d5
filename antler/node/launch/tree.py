"""Launching a tree of nodes: each node, then the nodes it launches itself, before any run starts.

The root (node.root) launches the nodes of its tree through this, and so do
a node process (node.process) and a Ray node (launch.ray.actor) for the local and SSH
nodes under them (run.node_tree says which node launches which).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from antler.node.items import RunnerError
from antler.node.nodespec import Node
from antler.node.recorder import Recorder, Sink
from antler.node.run import LaunchesNodes, NodeHandle, NodeTree

Launch = Callable[[Node, Sink, dict[Node, NodeHandle]], Awaitable[NodeHandle]]
"""Launch starts a node and returns its handle; the dict is the test's node table, filled as nodes launch."""


async def launch_nodes(
    tree: NodeTree, launch: Launch, sink: Sink, nodes: dict[Node, NodeHandle], rec: Recorder
) -> bool:
    """Launch a node tree into the node table, each node's own nodes through it.

    It returns False, with each failure recorded as an Error, if any node
    could not be launched; the nodes that were are in ``nodes`` (to be closed).
    """
    # All nodes start at once: a Ray actor's worker takes a second or two to
    # start, and those seconds would add up node by node.
    # Nodes that create a namespace go first, so a node joining one that
    # another node of the test creates finds it.
    order = list(tree)
    failed = False
    for wave in ([n for n in order if n.netns.create], [n for n in order if not n.netns.create]):
        launched = await asyncio.gather(*(launch(node, sink, nodes) for node in wave), return_exceptions=True)
        for node, handle in zip(wave, launched):
            if isinstance(handle, asyncio.CancelledError):
                raise handle
            if isinstance(handle, BaseException):
                # A launcher's message names the node already: once is enough.
                why = str(handle).removeprefix(f"node {node.id!r}: ")
                rec.error(f"launching node {node.id!r}: {why}", "launch")
                failed = True
            else:
                nodes[node] = handle
        if failed:
            return False
    # Then each node's own nodes: a local or SSH node launches them itself (on
    # its host); a node that cannot shares this table, and they launch here.
    below = [(nodes[n], sub) for n, sub in tree.items() if sub]
    here: NodeTree = {}
    for handle, sub in below:
        if not isinstance(handle, LaunchesNodes):
            _merge_tree(here, {n: t for n, t in sub.items() if n not in nodes})
    outcomes = await asyncio.gather(
        *(h.launch_nodes(sub) for h, sub in below if isinstance(h, LaunchesNodes)), return_exceptions=True
    )
    for (handle, _), outcome in zip([b for b in below if isinstance(b[0], LaunchesNodes)], outcomes):
        if isinstance(outcome, asyncio.CancelledError):
            raise outcome
        if isinstance(outcome, RunnerError):
            failed = True  # recorded on the node that launched
        elif isinstance(outcome, BaseException):
            rec.error(f"launching the nodes of {handle.node.id!r}: {outcome}", "launch")
            failed = True
    if failed:
        return False
    return await launch_nodes(here, launch, sink, nodes, rec) if here else True


def _merge_tree(into: NodeTree, tree: NodeTree) -> None:
    for node, sub in tree.items():
        _merge_tree(into.setdefault(node, {}), sub)
