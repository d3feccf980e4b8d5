"""The root node: runs a whole test tree in-process, as antler's ``node.Do``.

Every child node in the tree is launched before any run starts, so start-up
time never lands inside a measurement. When the tree completes (or fails, or
is canceled, or times out) every node's cancelers run, in reverse order of
launch with the root's own first, and then the nodes are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable
from typing import Any

from antler.node.feedback import Feedback
from antler.node.items import ROOT_NODE_ID, RunnerError
from antler.node.launch.inproc import launch_inproc
from antler.node.launch.tree import Launch, launch_nodes
from antler.node.metric import Duration
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import Losable, NodeHandle, Run, TakesKey, node_tree
from antler.node.runtime import NodeRuntime


class Control:
    """Control sends control signals to a running test; ``cancel`` is thread-safe."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._canceled = threading.Event()

    def _attach(self, task: asyncio.Task[object]) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = task
        if self._canceled.is_set():
            task.cancel()

    def cancel(self) -> None:
        """Cancel stops the test: every running runner is canceled, then cleanup runs."""
        self._canceled.set()
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)

    @property
    def canceled(self) -> bool:
        """Canceled reports whether cancel was called."""
        return self._canceled.is_set()


class TestTimeout(Exception):
    """TestTimeout is a test that ran past its timeout."""


async def do(
    run: Run,
    sink: Sink,
    *,
    control: Control | None = None,
    timeout: Duration | None = None,
    launch: Launch = launch_inproc,
    feedback: Feedback | None = None,
    hmac_key: bytes | None = None,
) -> bool:
    """Do runs a tree on an in-process root node, sending its data items to sink.

    It returns True if the test completed without an error. Errors are data:
    each is sent to the sink as an Error item. Cancellation through ``control``
    ends the test (returning False) after cleanup.
    """
    root = NodeRuntime(ROOT_NODE_ID, sink, hmac_key=hmac_key)
    nodes = root.children
    ok = True
    try:
        if not await launch_nodes(node_tree(run), launch, sink, nodes, root.rec):
            return False
        if hmac_key is not None:
            await _give_hmac_key(nodes, hmac_key)
        task = asyncio.ensure_future(_watched(_run_tree(root, run, feedback or {}, timeout), nodes))
        if control is not None:
            control._attach(task)
        try:
            await task
        except asyncio.CancelledError:
            ok = False
            if not task.cancelled() or (control is None or not control.canceled):
                raise
            root.rec.log("test canceled", "node")
        except (RunnerError, BaseExceptionGroup):
            ok = False
        except TestTimeout as e:
            ok = False
            root.rec.error(str(e), "node")
        return ok
    finally:
        await _cleanup(root, nodes)


async def _give_hmac_key(nodes: dict[Node, NodeHandle], key: bytes) -> None:
    # Packets and stream headers are signed on every node of an HMAC test.
    for handle in nodes.values():
        if isinstance(handle, TakesKey):
            await handle.set_hmac_key(key)


async def _run_tree(root: NodeRuntime, run: Run, feedback: Feedback, timeout: Duration | None) -> Feedback:
    if timeout is None or timeout.ns == 0:
        return await root.run(run, feedback)
    try:
        async with asyncio.timeout(timeout.seconds):
            return await root.run(run, feedback)
    except TimeoutError:
        raise TestTimeout(f"test timed out after {timeout}") from None


async def _watched(tree: Awaitable[Feedback], nodes: dict[Node, NodeHandle]) -> Feedback:
    """_Watched runs the tree, ending it when a node is lost even while no run is on it."""
    losses: list[asyncio.Future[str]] = [h.lost for h in nodes.values() if isinstance(h, Losable) and h.lost]
    task = asyncio.ensure_future(tree)
    if not losses:
        return await task
    waits: list[asyncio.Future[Any]] = [task, *losses]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    lost = next(f for f in losses if f.done())
    raise RunnerError(str(lost.result()))


async def _cleanup(root: NodeRuntime, nodes: dict[Node, NodeHandle]) -> None:
    # Shielded so a second Ctrl-C cannot leave servers or namespaces behind.
    async def all_() -> None:
        await root.cleanup()
        for handle in reversed(list(nodes.values())):
            try:
                await handle.cleanup()
            except Exception as e:
                root.rec.error(f"cleanup of node {handle.node.id!r}: {e}", "node")
        for handle in reversed(list(nodes.values())):
            try:
                await handle.close()
            except Exception as e:
                root.rec.error(f"closing node {handle.node.id!r}: {e}", "node")
        root.rec.close()

    # A cancel that lands meanwhile (a second Ctrl-C) waits for the cleanup,
    # then is raised again: it is never swallowed (trio's rule).
    task = asyncio.ensure_future(all_())
    canceled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            canceled = True
    if canceled:
        raise asyncio.CancelledError()
