"""The node runtime: what executes run trees on a node, wherever it lives.

It lives in the driver for the root node, on a thread for a namespaced node
in a Ray actor, and in the node process of a local or SSH node. It holds the
node's recorder, the handles of the nodes its child runs name, and the
cancelers its runners registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os

from antler.node.context import Context
from antler.node.execution import execute
from antler.node.feedback import Feedback
from antler.node.items import RunnerError
from antler.node.nodespec import Node
from antler.node.recorder import Recorder, Sink
from antler.node.run import NodeHandle, Run, StopScope, current_scope, enter_scope, leave_scope
from antler.node.secrets import command_env

FLUSH_SECONDS = 0.5
"""FLUSH_SECONDS is how often a node ships its measurement buffers."""


class NodeRuntime:
    """Runs run trees for one node and holds its cleanup stack.

    ``children`` is the node table its child runs use: the launcher fills it
    (the driver's root gets every node of the test; a Ray node gets the others
    for nested child runs).
    """

    def __init__(
        self, node_id: str, sink: Sink, env: dict[str, str] | None = None, hmac_key: bytes | None = None
    ) -> None:
        self.rec = Recorder(node_id, sink)
        # Commands never get the HMAC key, whatever environment the node was given.
        self.ctx = Context(node_id, self.rec, command_env(os.environ if env is None else env), hmac_key=hmac_key)
        self.children: dict[Node, NodeHandle] = {}
        self.stop = StopScope()
        """Stop says why this node's runs are being canceled; whoever cancels them from outside sets it first."""
        self._flusher: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str:
        """The node's ID."""
        return self.ctx.node_id

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on this node, raising RunnerError when it fails."""
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_loop())
        # A node run in its caller's task (in-process) keeps its caller's reasons; others start from the node's.
        token = enter_scope(StopScope(parent=current_scope() or self.stop))
        try:
            return await execute(run, self.ctx, feedback, self.children)
        finally:
            leave_scope(token)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.rec.flush()

    async def cleanup(self) -> None:
        """Run the cancelers in reverse order, then ship all data.

        A canceler that fails is recorded as an Error under the tag of the
        runner that registered it; the rest still run.
        """
        cancelers = self.ctx.cancelers
        while cancelers:
            tag, canceler = cancelers.pop()
            try:
                await canceler()
            except asyncio.CancelledError:
                raise
            except RunnerError:
                pass  # recorded already
            except Exception as e:
                self.rec.error(f"cleanup: {e}", tag)
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.rec.close()
