"""Launchers: how a node named in a child run is started.

``launch`` picks the launcher the node's spec names.
"""

from __future__ import annotations

from antler.node.context import NodeHandle
from antler.node.node import Node
from antler.node.recorder import Sink


async def launch(node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
    """Launch starts the node with the launcher its spec names."""
    from antler.node.launch.netns import launch_thread

    return await launch_thread(node, sink, nodes)
