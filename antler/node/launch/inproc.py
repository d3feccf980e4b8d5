"""The in-process launcher: a node run in the caller's process and event loop, without isolation.

Tests use it to exercise child runs without launching anything.
"""

from __future__ import annotations

from antler.node.feedback import Feedback
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle, Run
from antler.node.runtime import NodeRuntime


class InprocHandle:
    """A node run in the caller's process and event loop."""

    def __init__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> None:
        self.node = node
        self.runtime = NodeRuntime(node.id, sink, node.env.build())
        self.runtime.children = nodes

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node."""
        return await self.runtime.run(run, feedback)

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node the test's HMAC key."""
        self.runtime.ctx.hmac_key = key

    async def cleanup(self) -> None:
        """Run the node's cancelers."""
        await self.runtime.cleanup()

    async def close(self) -> None:
        """Do nothing: an in-process node has nothing to stop."""


async def launch_inproc(node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
    """Run the node inside the calling process (no isolation)."""
    return InprocHandle(node, sink, nodes)
