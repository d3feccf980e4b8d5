"""The root node: runs a whole test tree in-process, as antler's ``node.Do``.

Every child node in the tree is launched before any run starts, so start-up
time never lands inside a measurement. When the tree completes (or fails, or
is canceled, or times out) every node's cancelers run, in reverse order of
launch with the root's own first, and then the nodes are closed.

The rule for errors (antler's): every :class:`~antler.node.items.Error` ends
the test. The first one recorded on any node, raised by a runner or recorded
by something running in the background, cancels the tree; all are kept.
Bad input from the network is not an error of the test: a server drops it,
counts it by reason and logs the counts when it stops (both servers do).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable
from typing import Any

import antler.node.compat as compat
from antler.node.feedback import Feedback
from antler.node.hmac import env_key
from antler.node.items import ROOT_NODE_ID, Error, Item, RunnerError
from antler.node.launch.inproc import launch_inproc
from antler.node.launch.tree import Launch, launch_nodes
from antler.node.metric import Duration
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import TIMED_OUT, Losable, NodeHandle, Run, StopScope, TakesKey, node_tree
from antler.node.runtime import NodeRuntime
from antler.node.secrets import Redactor, redacting
from antler.node.shield import shielded


class Control:
    """Sends control signals to a running test; ``cancel`` is thread-safe."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[object] | None = None
        self._scope: StopScope | None = None
        self._canceled = threading.Event()

    def _attach(self, task: asyncio.Task[object], scope: StopScope | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = task
        self._scope = scope
        if self._canceled.is_set():
            self._stop()

    def _stop(self) -> None:
        if self._scope is not None:
            self._scope.stop("the test was interrupted")
        if self._task is not None:
            self._task.cancel()

    def cancel(self) -> None:
        """Stop the test: every running runner is canceled, then cleanup runs."""
        self._canceled.set()
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._stop)

    @property
    def canceled(self) -> bool:
        """Whether cancel was called."""
        return self._canceled.is_set()


class TestTimeout(Exception):
    """A test that ran past its timeout."""


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
    """Run a tree on an in-process root node, sending its data items to sink.

    It returns True if the test completed without an Error on any node (its
    cleanup included). Errors are data: each is sent to the sink as an Error
    item, and the first ends the test. Cancellation through ``control`` ends
    the test (returning False) after cleanup; any other cancellation is
    raised after cleanup.
    """
    # The last line of defence: the key's text never reaches a result (antler.node.secrets).
    sink = redacting(sink, Redactor([hmac_key, env_key()]))
    first_error = _FirstError(sink)
    sink = first_error
    root = NodeRuntime(ROOT_NODE_ID, sink, hmac_key=hmac_key)
    nodes = root.children
    completed = False
    try:
        if await _launch_all(run, sink, nodes, launch, root):
            if hmac_key is not None:
                await _give_hmac_key(nodes, hmac_key)
            completed = await _run_watched(root, run, feedback or {}, timeout, control, nodes, first_error.watch())
    finally:
        await _cleanup(root, nodes)
    return completed and first_error.first is None


async def _launch_all(run: Run, sink: Sink, nodes: dict[Node, NodeHandle], launch: Launch, root: NodeRuntime) -> bool:
    """_Launch_all launches every node of the tree, at every depth (launch.tree); False (recorded) if any failed."""
    return await launch_nodes(node_tree(run), launch, sink, nodes, root.rec)


async def _run_watched(
    root: NodeRuntime,
    run: Run,
    feedback: Feedback,
    timeout: Duration | None,
    control: Control | None,
    nodes: dict[Node, NodeHandle],
    first_error: asyncio.Future[str],
) -> bool:
    """_Run_watched runs the tree until it completes (True), fails, is lost, times out or is canceled by control."""
    task = asyncio.ensure_future(_watched(_run_tree(root, run, feedback, timeout), nodes, first_error, root.stop))
    if control is not None:
        control._attach(task, root.stop)
    try:
        await task
        return True
    except asyncio.CancelledError:
        if not task.cancelled() or (control is None or not control.canceled):
            raise
        root.rec.log("test canceled", "node")
    except (RunnerError, compat.BaseExceptionGroup):
        pass  # recorded as an Error already
    except TestTimeout as e:
        root.rec.error(str(e), "node")
    return False


async def _give_hmac_key(nodes: dict[Node, NodeHandle], key: bytes) -> None:
    # Packets and stream headers are signed on every node of an HMAC test.
    for handle in nodes.values():
        if isinstance(handle, TakesKey):
            await handle.set_hmac_key(key)


async def _run_tree(root: NodeRuntime, run: Run, feedback: Feedback, timeout: Duration | None) -> Feedback:
    if timeout is None or timeout.ns == 0:
        return await root.run(run, feedback)
    # Scheduled before the timeout's own callback, so the runs it cancels can say why.
    why = asyncio.get_running_loop().call_later(timeout.seconds, root.stop.stop, f"{TIMED_OUT} {timeout}")
    try:
        async with compat.timeout(timeout.seconds):
            return await root.run(run, feedback)
    except compat.AsyncTimeout:
        raise TestTimeout(f"test timed out after {timeout}") from None
    finally:
        why.cancel()


class _FirstError:
    """_FirstError passes items on to the test's sink and notes the first Error, from any node or thread."""

    def __init__(self, sink: Sink) -> None:
        self._sink = sink
        self._future: asyncio.Future[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._first: str | None = None
        self._lock = threading.Lock()

    def __call__(self, item: Item) -> None:
        if isinstance(item, Error):
            with self._lock:
                first, self._first = self._first is None, self._first or item.message
            if first and self._loop is not None and self._future is not None:
                self._loop.call_soon_threadsafe(_settle, self._future, item.message)
        self._sink(item)

    def watch(self) -> asyncio.Future[str]:
        """Return a future that completes with the first Error's message (at once if one came already)."""
        self._loop = asyncio.get_running_loop()
        self._future = self._loop.create_future()
        with self._lock:
            if self._first is not None:
                self._future.set_result(self._first)
        return self._future

    @property
    def first(self) -> str | None:
        """The message of the first Error recorded, or None."""
        with self._lock:
            return self._first


def _settle(future: asyncio.Future[str], message: str) -> None:
    if not future.done():
        future.set_result(message)


async def _watched(
    tree: Awaitable[Feedback], nodes: dict[Node, NodeHandle], first_error: asyncio.Future[str], scope: StopScope
) -> Feedback:
    """_Watched runs the tree, ending it when any node records an Error or is lost, even while no run is on it."""
    losses: list[asyncio.Future[str]] = [h.lost for h in nodes.values() if isinstance(h, Losable) and h.lost]
    losses.append(first_error)
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
    if scope.reason:
        # Already stopping (the timeout): an Error its cancel made a run record
        # (what was still running) is not why the test ends.
        return await task
    lost = next(f for f in losses if f.done())
    scope.stop(f"the test is ending after an error: {lost.result()}")
    task.cancel()
    with contextlib.suppress(BaseException):
        await task
    raise RunnerError(str(lost.result()))


async def _cleanup(root: NodeRuntime, nodes: dict[Node, NodeHandle]) -> None:
    # Shielded so a second Ctrl-C cannot leave servers or namespaces behind.
    # Each step runs whatever the one before raised, even while recording
    # its error (a sink that fails must not leave namespaces behind).
    async def all_() -> None:
        await _step(root, root.cleanup(), "cleanup of the root node")
        for handle in reversed(list(nodes.values())):
            await _step(root, handle.cleanup(), f"cleanup of node {handle.node.id!r}")
        for handle in reversed(list(nodes.values())):
            await _step(root, handle.close(), f"closing node {handle.node.id!r}")
        with contextlib.suppress(Exception):
            root.rec.close()

    # A cancel that lands meanwhile (a second Ctrl-C) waits for the cleanup,
    # then is raised again: it is never swallowed (trio's rule).
    await shielded(all_())


async def _step(root: NodeRuntime, step: Awaitable[None], what: str) -> None:
    """_Step awaits one cleanup step, recording (never raising) what it raised."""
    try:
        await step
    except Exception as e:
        with contextlib.suppress(Exception):
            root.rec.error(f"{what}: {e}", "node")
