"""The host's side of a Ray node: :class:`NodeActor`, the Ray actor that hosts one node.

An actor hosts the node's :class:`NodeRuntime` on a :class:`LoopThread` that
has entered the node's network namespace, so the node's sockets and commands
live there while the actor's own Ray connection (Ray's threads, the actor's
event loop) stays in the host namespace. Child runs are actor method calls;
the feedback a child run gets is passed as an object ref (``ray.put``), so a
server's address found on one node reaches a client on another through the
object store. Nodes can call nodes: each actor gets the handles of every
node of the test, and its calls go out from its host-namespace loop. Its
data items wait in the actor until the driver drains them
(antler.node.launch.ray.handle).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import socket
import threading
import time
from typing import Any

import ray

import antler.node.compat as compat
from antler.node import lease
from antler.node.feedback import Feedback
from antler.node.items import Item, RunnerError
from antler.node.launch.clock import boot_id
from antler.node.launch.errors import LaunchError
from antler.node.launch.netns import LoopThread, kill_processes_in, prepare, remove
from antler.node.launch.process_launchers import ProcessLaunchers
from antler.node.launch.ray.cluster import code_version
from antler.node.launch.ray.handle import TAG, RayHandle
from antler.node.launch.reclaim import reclaim_left
from antler.node.launch.tree import launch_nodes
from antler.node.nodespec import Node
from antler.node.run import Losable, NodeTree, Run
from antler.node.runtime import NodeRuntime


class NodeActor:
    """The Ray actor that hosts one node.

    Its methods run on the actor's event loop, in the host namespace; run
    trees run on the node's LoopThread, in the node's namespace. ``start``
    must be called first.
    """

    def __init__(self) -> None:
        self.node = Node()
        self._items: list[Item] = []
        self._lock = threading.Lock()
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self.netns: str | None = None
        self.created = False
        self.thread: LoopThread | None = None
        self.runtime: NodeRuntime | None = None
        self._home: asyncio.AbstractEventLoop | None = None
        self._launchers: Any = None
        self._lost_below: str | None = None
        # A worker that exits without close (ray.shutdown) still removes its namespace.
        atexit.register(self._remove_netns)

    def _sink(self, item: Item) -> None:
        with self._lock:
            self._items.append(item)

    def _remove_netns(self) -> None:
        if self.created and self.netns:
            kill_processes_in(self.netns)
            remove(self.netns)
            self.created = False

    async def start(self, driver_code: str, node: Node) -> dict[str, Any]:
        """Check the code version, become node (entering its namespace) and return the node's facts.

        An actor whose node was closed may start again as another node: the
        next test of a sweep then skips Ray's worker start (1-2 s here).
        Raises LaunchError when the node runs other code than the driver (or
        the actor still hosts a node), NetnsError for its namespace.
        """
        if self.thread is not None:
            raise LaunchError(f"node {node.id!r}: its actor still hosts node {self.node.id!r}")
        self.node = node
        self._items, self._tasks, self._launchers = [], {}, None
        mine = code_version()
        if mine != driver_code:
            raise LaunchError(
                f"node {self.node.id!r} runs antler {mine} on {socket.gethostname()}, the driver runs {driver_code}"
            )
        self._home = asyncio.get_running_loop()
        # What killed runs left on this host goes first (antler.node.launch.reclaim).
        notes = await asyncio.to_thread(reclaim_left)
        if self.node.netns.enabled:
            # pyroute2 runs its own event loop: keep it off the actor's.
            self.netns, self.created = await asyncio.to_thread(prepare, self.node.netns, self.node.id, notes)
        try:
            self.thread = await asyncio.to_thread(LoopThread, f"node-{self.node.id}", self.netns)
        except BaseException:
            self._remove_netns()
            raise
        self.runtime = NodeRuntime(self.node.id, self._sink, self.node.env.build())
        for note in notes:
            self.runtime.rec.log(note, lease.TAG)
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "ray_node_id": ray.get_runtime_context().get_node_id(),
            "boot_id": boot_id(),
            "code_version": mine,
            "netns": self.netns,
            "netns_created": self.created,
        }

    async def set_nodes(self, actors: dict[Node, Any]) -> None:
        """Give the node the actors of the test's nodes, for nested child runs."""
        assert self.runtime is not None and self._home is not None
        nodes = self.runtime.children
        for node, actor in actors.items():
            if node not in nodes and node != self.node:
                nodes[node] = RayHandle(node, actor, self._sink, home=self._home)

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node the test's HMAC key (before any run starts)."""
        assert self.runtime is not None
        self.runtime.ctx.hmac_key = key

    async def clock(self) -> int:
        """Return the node's wall clock, in ns since the epoch."""
        return time.time_ns()

    async def drain(self) -> tuple[list[Item], str | None]:
        """Return and forget the data items recorded since the last drain.

        The second value is the message of a node this node launched that was
        lost (its Error is among the items), or None.
        """
        with self._lock:
            items, self._items = self._items, []
        return items, self._lost_below

    async def launch_nodes(self, tree: NodeTree) -> tuple[str, Any]:
        """Launch the local and SSH nodes under this node, on its host, from the host namespace.

        It returns ("ok", their facts) or ("error", message) (each failure is recorded).
        """

        assert self.runtime is not None
        if self._launchers is None:
            self._launchers = ProcessLaunchers()
        nodes = self.runtime.children
        ok = await launch_nodes(tree, self._launchers, self._sink, nodes, self.runtime.rec)
        facts = self._launchers.take_facts()
        if not ok:
            return "error", f"node {self.node.id!r} could not launch its nodes"
        for handle in nodes.values():
            if isinstance(handle, Losable) and handle.lost is not None:
                handle.lost.add_done_callback(self._on_lost_below)
        return "ok", facts

    def _on_lost_below(self, lost: asyncio.Future[str]) -> None:
        if not lost.cancelled() and self._lost_below is None:
            self._lost_below = lost.result()

    async def run(self, run_id: int, run: Run, feedback: Feedback) -> tuple[str, Any]:
        """Execute a run tree on the node's thread: ("ok", feedback), ("error", msg) or ("canceled", None).

        ``feedback`` is sent as an object ref; Ray resolves it before the call.
        """
        assert self.thread is not None and self.runtime is not None
        task = asyncio.current_task()
        assert task is not None
        self._tasks[run_id] = task
        try:
            result = await self.thread.call(self.runtime.run(run, feedback))
            return "ok", result
        except asyncio.CancelledError:
            return "canceled", None
        except RunnerError as e:
            return "error", str(e)
        except compat.BaseExceptionGroup as eg:
            return "error", "; ".join(str(e) for e in eg.exceptions)
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            self.runtime.rec.error(message, TAG)
            return "error", message
        finally:
            self._tasks.pop(run_id, None)

    async def cancel_run(self, run_id: int, reason: str = "") -> None:
        """Cancel a running run tree, saying why; its run call returns once it has unwound."""
        task = self._tasks.get(run_id)
        if task is not None:
            if reason and self.runtime is not None:
                self.runtime.stop.stop(reason)  # its runners log it as they unwind
            task.cancel()

    async def cleanup(self) -> None:
        """Run the node's cancelers in reverse order, then those of the nodes it launched."""
        if self.thread is not None and self.runtime is not None:
            await self.thread.call(self.runtime.cleanup())
        if self._launchers is not None and self.runtime is not None:
            for handle in reversed(list(self.runtime.children.values())):
                if not isinstance(handle, RayHandle):
                    try:
                        await handle.cleanup()
                    except Exception as e:
                        self.runtime.rec.error(f"cleanup of node {handle.node.id!r}: {e}", TAG)

    async def close(self) -> None:
        """Stop the nodes it launched and the node's thread, and delete a namespace it created.

        The actor may then start again as another node (a sweep's next test).
        """
        if self._launchers is not None and self.runtime is not None:
            for handle in reversed(list(self.runtime.children.values())):
                if not isinstance(handle, RayHandle):
                    with contextlib.suppress(Exception):
                        await handle.close()
        if self.thread is not None:
            await asyncio.to_thread(self.thread.stop)
        self._remove_netns()
        self.thread, self.runtime, self.netns = None, None, None
