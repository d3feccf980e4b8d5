"""The driver's side of a Ray node: :class:`RayHandle`, which calls the node's actor and watches it.

A handle awaits each actor call while watching for the node's loss, so a
call on a node that died fails at once with an Error naming it. Data items
leave an actor in batches: the actor buffers them and the driver drains
every :data:`POLL_SECONDS` (measurements are already Arrow batches, see
recorder.py). The drain doubles as a heartbeat: an actor that dies, or whose
host stops answering for :data:`DEAD_AFTER_SECONDS`, is reported as an Error
naming the node and ends the test. Ray's own account of a dead worker (a
paragraph the raylet publishes, which guesses at memory pressure) would be
printed to the terminal before that one-line error: it is diverted into the
test's log instead, under the node whose worker it names
(:func:`divert_raylet_errors`), tagged DIAGNOSTICS_TAG.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from antler.node.feedback import Feedback
from antler.node.items import DIAGNOSTICS_TAG, Error, LogEntry, RunnerError, now
from antler.node.launch.clock import boot_id, relative_to
from antler.node.launch.netns import call_on, remove_with_processes
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle, NodeTree, Run, cancel_reason
from antler.node.spec import first_line

POLL_SECONDS = 0.2
"""POLL_SECONDS is how often the driver drains each node's data items."""
DEAD_AFTER_SECONDS = 6.0
"""DEAD_AFTER_SECONDS is how long a node may not answer a drain before it is declared lost."""
CLOSE_TIMEOUT_SECONDS = 20.0
"""CLOSE_TIMEOUT_SECONDS bounds a node's cleanup and close calls."""
TAG = "node"


_by_pid: dict[int, RayHandle] = {}
"""_by_pid maps each launched node's worker PID to its handle, to route Ray's account of its death."""
_by_pid_lock = threading.Lock()
_WORKER_PID = re.compile(r"Worker PID: (\d+)")


def divert_raylet_errors() -> None:
    """Send the raylet's messages about a node's worker to that node's log, not the terminal.

    Ray prints every error the raylet publishes to the driver's stdout (the
    ``(raylet) A worker died ...`` paragraph); the tool reports a lost node
    itself, in one line. A message naming a node's worker PID becomes a log
    entry of that node (tag DIAGNOSTICS_TAG, kept in log.txt, not printed
    live); any other message is printed as Ray prints it. Idempotent; if this
    Ray has no such printer, nothing changes.
    """
    import ray._private.worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_antler_diverted", False):
        return

    def divert(data: dict[str, Any], ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet":
            rest = []
            for line in data.get("lines", []):
                m = _WORKER_PID.search(str(line))
                with _by_pid_lock:
                    handle = _by_pid.get(int(m.group(1))) if m else None
                # After its test is written, Ray prints it as it would have: the tool's error came first.
                if handle is not None and not handle._closed:
                    handle.sink(LogEntry(now(), handle.node.id, DIAGNOSTICS_TAG, f"Ray: {line}"))
                else:
                    rest.append(line)
            if not rest:
                return
            data = {**data, "lines": rest}
        original(data, ignore_prefix)

    divert._antler_diverted = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = divert


def watch_worker(pid: int, handle: RayHandle) -> None:
    """Route the raylet's messages about the worker with this PID to the handle's node (see above)."""
    with _by_pid_lock:
        _by_pid[pid] = handle


class RayHandle:
    """A node that runs in a Ray actor, as seen by its caller.

    The driver's handles drain their actor and watch it (``poll``); handles
    inside an actor (for nested child runs) make their Ray calls from the
    actor's host-namespace loop (``home``).
    """

    _run_ids = itertools.count(1)

    def __init__(
        self,
        node: Node,
        actor: Any,
        sink: Sink,
        home: asyncio.AbstractEventLoop | None = None,
        release: Callable[[Any], None] | None = None,
    ) -> None:
        self.node = node
        self.actor = actor
        self.sink = sink
        self.home = home
        self.release = release
        self.facts: dict[str, Any] = {"id": node.id}
        self.below_facts: list[dict[str, Any]] = []
        self.nodes: dict[Node, NodeHandle] | None = None
        self._nodes_sent = 0
        self._poller: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[str] | None = None
        self._dead = False
        self._closed = False

    # --- running

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node the test's HMAC key (the root calls it before any run)."""
        await self._await(self.actor.set_hmac_key.remote(key))

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node; its feedback travels as an object ref."""
        if self.home is not None and asyncio.get_running_loop() is not self.home:
            result: Feedback = await call_on(self.home, self._run(run, feedback))
            return result
        return await self._run(run, feedback)

    async def _run(self, run: Run, feedback: Feedback) -> Feedback:
        self._check_lost()
        await self._send_nodes()
        run_id = next(self._run_ids)
        # The feedback goes through the object store: a server's address found on
        # one node reaches a client on another without a copy through the caller.
        ref = self.actor.run.remote(run_id, run, ray.put(feedback))
        try:
            kind, value = await self._await(ref)
        except asyncio.CancelledError:
            # Cancel reaches the node, with the reason; wait until its runs have
            # unwound, unless the node was lost (a stopped host never answers:
            # that wait took 20 s more after a SIGSTOP, tests/test_hangs.py).
            with contextlib.suppress(RayError):
                self.actor.cancel_run.remote(run_id, cancel_reason())
            if not self._dead:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._await(ref), CLOSE_TIMEOUT_SECONDS)
            raise
        await self._drain_now()
        if kind == "ok":
            out: Feedback = value
            return out
        if kind == "canceled":
            raise asyncio.CancelledError()
        # The node recorded the Error itself; it reached the sink with the drain.
        raise RunnerError(str(value))

    async def launch_nodes(self, tree: NodeTree) -> None:
        """Have the actor launch the local and SSH nodes under it; RunnerError if any failed."""
        kind, value = await self._await(self.actor.launch_nodes.remote(tree))
        if kind != "ok":
            raise RunnerError(str(value))
        self.below_facts = [relative_to(f, self.facts) for f in value]

    async def _send_nodes(self) -> None:
        # Every node may run child runs on every other: send the handles once all are launched.
        if self.nodes is None or len(self.nodes) == self._nodes_sent:
            return
        actors = {n: h.actor for n, h in self.nodes.items() if isinstance(h, RayHandle)}
        await self._await(self.actor.set_nodes.remote(actors))
        self._nodes_sent = len(self.nodes)

    async def _await(self, ref: Any) -> Any:
        """_Await waits for an actor call, failing fast if the node is lost meanwhile."""
        fut = asyncio.ensure_future(wait_ref(ref))
        if self._dead:
            fut.cancel()
            self._check_lost()
        waits: set[asyncio.Future[Any]] = {fut}
        if self.lost is not None and not self.lost.done():
            waits.add(self.lost)
        while True:
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                fut.cancel()
                raise
            if fut.done():
                try:
                    return fut.result()
                except RayActorError as e:
                    raise RunnerError(self._lose(f"{self._named()} died: {first_line(e)}{_SEE_LOG}")) from None
            if self._dead:
                fut.cancel()
                self._check_lost()
            # A node this one launched was lost: the root cancels the tree, and this call with it.
            waits = {fut}

    def _check_lost(self) -> None:
        if self._dead and self.lost is not None and self.lost.done():
            raise RunnerError(self.lost.result())

    def _named(self) -> str:
        """_Named names the node, and its host when it has one: errors about it say where it ran."""
        host = self.facts.get("host")
        return f"node {self.node.id!r} on host {host!r}" if host else f"node {self.node.id!r}"

    def _lose(self, message: str) -> str:
        """_Lose records, once, that the node is gone, as an Error naming it."""
        if self.lost is None:
            self.lost = asyncio.get_running_loop().create_future()
        self._dead = True
        if not self.lost.done():
            self.sink(Error(now(), self.node.id, TAG, message))
            self.lost.set_result(message)
        return self.lost.result()

    # --- data and liveness

    def start_polling(self) -> None:
        """Start draining the node's data items into the sink."""
        self.lost = asyncio.get_running_loop().create_future()
        self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        # The loop also checks _closed: on Python 3.11, asyncio.wait_for can
        # swallow a cancel that arrives as its call completes, and a poller
        # that ignored close()'s cancel kept the test from ever ending.
        while not self._closed and not self._dead:
            try:
                await self._drain_now(DEAD_AFTER_SECONDS)
            except (TimeoutError, GetTimeoutError):
                self._lose(f"{self._named()} lost: no answer for {DEAD_AFTER_SECONDS:.0f}s (its host may be down)")
                return
            except RayError as e:
                self._lose(f"{self._named()} died: {first_line(e)}{_SEE_LOG}")
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _drain_now(self, timeout: float | None = None) -> None:
        if self.home is not None:
            return  # only the driver drains; a nested caller's items flow through it
        items, lost_below = await asyncio.wait_for(wait_ref(self.actor.drain.remote()), timeout)
        for item in items:
            self.sink(item)
        if lost_below and self.lost is not None and not self.lost.done():
            self.lost.set_result(lost_below)  # recorded below; ends the test now (node.root)

    # --- end of test

    async def cleanup(self) -> None:
        """Run the node's cancelers and ship its remaining data."""
        if self._dead:
            return
        with contextlib.suppress(RayError, TimeoutError):
            await asyncio.wait_for(wait_ref(self.actor.cleanup.remote()), CLOSE_TIMEOUT_SECONDS)
        with contextlib.suppress(RayError, TimeoutError):
            await self._drain_now(CLOSE_TIMEOUT_SECONDS)

    async def close(self) -> None:
        """Stop the node, kill its actor and remove what it left on this host."""
        if self._closed:
            return
        self._closed = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller  # ends at its next check of _closed if the cancel was swallowed
        clean = not self._dead
        if clean:
            try:
                await asyncio.wait_for(wait_ref(self.actor.close.remote()), CLOSE_TIMEOUT_SECONDS)
                await self._drain_now(CLOSE_TIMEOUT_SECONDS)
            except (RayError, TimeoutError):
                clean = False
        if clean and self.release is not None:
            self.release(self.actor)  # closed cleanly: the next test's node may use it
        else:
            with contextlib.suppress(RayError):
                ray.kill(self.actor, no_restart=True)
        # Backstop for an actor that died without cleaning up: on this host,
        # kill what still runs in its namespace and delete the namespace.
        ns = self.facts.get("netns")
        if ns and self.facts.get("netns_created") and self.facts.get("boot_id") == boot_id():
            await asyncio.to_thread(remove_with_processes, ns)


async def wait_ref(ref: Any) -> Any:
    """Await a Ray object ref (an actor call's result) as a coroutine."""
    return await ref


_SEE_LOG = " (Ray's account, if it gave one, is in the test's log under this node)"
