"""The node process: a node serving its parent over a byte stream (antler's ``Serve``).

``python -m antler.node ID`` (or the zipapp an SSH launch uploads) runs
:func:`main`, which serves the parent on stdin and stdout. The parent calls
(see :mod:`antler.node.wire`): ``setup`` with the node's spec, ``clock`` a
few times, ``launch_nodes`` with the nodes of its own child runs,
``set_hmac_key``, then ``run`` for each sub-tree that runs here (several at
once when the tree has them in parallel), ``cleanup`` at the end of the test,
and SHUTDOWN.

The node's runtime runs on a :class:`LoopThread` (inside the node's namespace
when it manages one), while the frames are read and written on the process's
main loop and the channel's threads, outside it. Data items leave as the
recorder emits them: logs and errors at once, measurements as Arrow batches.

If the parent goes away without a SHUTDOWN (its process or host died, the
stream broke), the node cancels its runs, runs its cleanup, stops the nodes
it launched and deletes the namespace it created, then exits: nothing it
started outlives it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import pwd
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import antler
import antler.node.compat as compat
from antler.node import lease
from antler.node.conn import Channel, Conn, stdio_conn
from antler.node.feedback import Feedback
from antler.node.items import RunnerError
from antler.node.launch.clock import boot_id
from antler.node.launch.netns import LoopThread, prepare, remove_with_processes
from antler.node.launch.process_launchers import ProcessLaunchers
from antler.node.launch.reclaim import reclaim_left
from antler.node.launch.tree import launch_nodes
from antler.node.nodespec import Node
from antler.node.root import Control
from antler.node.run import Losable, NodeHandle, NodeTree, Run, TakesKey
from antler.node.runtime import NodeRuntime
from antler.node.wire import (
    HEARTBEAT_SECONDS,
    Kind,
    Status,
    WireError,
    decode_call,
    decode_cancel,
    encode_reply,
    frame,
)

TAG = "node"
CLOSE_SECONDS = 20.0
"""CLOSE_SECONDS bounds the node's own cleanup of what it launched, and the flush of its last frames."""


class ServeError(Exception):
    """A node that ended without its parent shutting it down: a broken stream, a lost parent, a cancel."""


def serve(node_id: str, control: Control, conn: Conn) -> None:
    """Run a node whose parent is connected through conn, until the parent shuts it down.

    Blocks; closes conn when done. Raises ServeError if the stream failed,
    the parent went away first, or ``control`` canceled the node.
    """
    asyncio.run(_Served(node_id, conn).serve(control))


class _Served:
    """_Served is the state of a node process: its runtime, what it launched, the calls in progress."""

    def __init__(self, node_id: str, conn: Conn) -> None:
        self.node_id = node_id
        self.channel = Channel(conn, f"node-{node_id}")
        self.frames: asyncio.Queue[tuple[Kind | None, Any]] | None = None  # made on the loop (3.9 binds it then)
        self.runtime: NodeRuntime | None = None
        self.thread: LoopThread | None = None
        self.netns: str | None = None
        self.created = False
        self.nodes: dict[Node, NodeHandle] = {}
        self.launchers: Any = None
        self.calls: dict[int, asyncio.Task[None]] = {}

    async def serve(self, control: Control) -> None:
        loop = asyncio.get_running_loop()
        frames = self.frames = asyncio.Queue()

        def post(kind: Kind | None, payload: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: we are done anyway
                loop.call_soon_threadsafe(frames.put_nowait, (kind, payload))

        self.channel.start(post, lambda why: post(None, why))
        heartbeat = asyncio.ensure_future(self._heartbeat())
        task = asyncio.ensure_future(self._dispatch())
        control._attach(task)  # type: ignore[arg-type]
        why: str | None = None
        try:
            why = await task
        except asyncio.CancelledError:
            why = "canceled"
        except WireError as e:
            why = f"from the parent: {e}"
        except Exception as e:
            why = f"{type(e).__name__}: {e}"
        finally:
            heartbeat.cancel()
            await self._end(clean=why is None)
        if why is not None:
            raise ServeError(why)

    async def _dispatch(self) -> str | None:
        """_Dispatch handles frames until SHUTDOWN (None) or the end of the stream (why)."""
        frames = self.frames
        assert frames is not None, "serve makes the queue before it dispatches"
        while True:
            kind, payload = await frames.get()
            if kind is None:
                if payload is None:
                    return "the parent closed the connection without shutting the node down"
                if isinstance(payload, WireError):
                    raise payload
                return f"the connection to the parent failed: {type(payload).__name__}: {payload}"
            if kind == Kind.CALL:
                try:
                    call_id, method, args = decode_call(payload)
                except Exception as e:  # a run tree this code cannot unpickle: another release
                    raise WireError(f"a call this node cannot read ({type(e).__name__}: {e})") from None
                self.calls[call_id] = asyncio.ensure_future(self._call(call_id, method, args))
            elif kind == Kind.CANCEL:
                call_id, reason = decode_cancel(payload)
                task = self.calls.get(call_id)
                if task is not None:
                    if reason and self.runtime is not None:
                        self.runtime.stop.stop(reason)  # its runners log it as they unwind
                    task.cancel()
            elif kind == Kind.SHUTDOWN:
                return None
            else:
                raise WireError(f"a {kind.name} frame from the parent")

    async def _call(self, call_id: int, method: str, args: tuple[Any, ...]) -> None:
        try:
            fn = _METHODS[method]
        except KeyError:
            self._reply(call_id, Status.ERROR, f"unknown call {method!r}")
            return
        try:
            value = await fn(self, *args)
            self._reply(call_id, Status.OK, value)
        except asyncio.CancelledError:
            self._reply(call_id, Status.CANCELED, None)
        except RunnerError as e:
            self._reply(call_id, Status.ERROR, str(e))
        except compat.BaseExceptionGroup as eg:
            self._reply(call_id, Status.ERROR, "; ".join(str(e) for e in eg.exceptions))
        except Exception as e:
            message = f"{type(e).__name__}: {e}" if method == "run" else str(e) or type(e).__name__
            if method == "run" and self.runtime is not None:
                self.runtime.rec.error(message, TAG)
            self._reply(call_id, Status.ERROR, message)
        finally:
            self.calls.pop(call_id, None)

    def _reply(self, call_id: int, status: Status, value: Any) -> None:
        try:
            chunks = encode_reply(call_id, status, value)
        except (TypeError, ValueError) as e:
            chunks = encode_reply(call_id, Status.ERROR, f"the reply is not plain data (JSON): {e}")
        self.channel.send(chunks)

    async def _heartbeat(self) -> None:
        while True:
            self.channel.send(frame(Kind.HEARTBEAT))
            await asyncio.sleep(HEARTBEAT_SECONDS)

    # --- calls

    async def setup(self, node: Node, netns: bool) -> dict[str, Any]:
        """Enter (or create) the node's namespace if asked and start its runtime; it returns its facts."""
        if node.id != self.node_id:
            raise ValueError(f"this process serves node {self.node_id!r}, not {node.id!r}")
        # What killed runs left on this host goes first (antler.node.launch.reclaim).
        notes = await asyncio.to_thread(reclaim_left)
        if netns and node.netns.enabled:
            self.netns, self.created = await asyncio.to_thread(prepare, node.netns, node.id, notes)
        self.thread = await asyncio.to_thread(LoopThread, f"node-{node.id}", self.netns)
        self.runtime = NodeRuntime(node.id, self.channel.send_item, node.env.build())
        self.runtime.children = self.nodes
        for note in notes:
            self.runtime.rec.log(note, lease.TAG)
        return {
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "user": _user(),
            "boot_id": boot_id(),
            "python": platform.python_version(),
            "code": os.path.dirname(antler.__file__),
            "netns": self.netns,
            "netns_created": self.created,
        }

    async def clock(self) -> int:
        """Return the node's wall clock, in ns since the epoch."""
        return time.time_ns()

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node, and the nodes it launched, the test's HMAC key."""
        assert self.runtime is not None
        self.runtime.ctx.hmac_key = key
        for handle in self.nodes.values():
            if isinstance(handle, TakesKey):
                await handle.set_hmac_key(key)

    async def launch_nodes(self, tree: NodeTree) -> list[dict[str, Any]]:
        """Launch the nodes of this node's child runs; it returns their facts for meta.json."""

        assert self.runtime is not None
        if self.launchers is None:
            self.launchers = ProcessLaunchers()
        ok = await launch_nodes(tree, self.launchers, self.channel.send_item, self.nodes, self.runtime.rec)
        facts: list[dict[str, Any]] = self.launchers.take_facts()
        if not ok:
            raise RunnerError(f"node {self.node_id!r} could not launch its nodes")
        for handle in self.nodes.values():
            if isinstance(handle, Losable) and handle.lost is not None:
                handle.lost.add_done_callback(self._tell_lost)
        return facts

    def _tell_lost(self, lost: asyncio.Future[str]) -> None:
        # The Error is on its way up already; this ends the test even while no run is on that node.
        if not lost.cancelled():
            self.channel.send(frame(Kind.LOST, lost.result().encode()))

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node's thread."""
        assert self.thread is not None and self.runtime is not None
        result: Feedback = await self.thread.call(self.runtime.run(run, feedback))
        return result

    async def cleanup(self) -> None:
        """Run the node's cancelers, then the cleanup of the nodes it launched, and ship all data."""
        if self.thread is not None and self.runtime is not None:
            await self.thread.call(self.runtime.cleanup())
        for handle in reversed(list(self.nodes.values())):
            try:
                await handle.cleanup()
            except Exception as e:
                self._record(f"cleanup of node {handle.node.id!r}: {e}")

    # --- the end

    async def _end(self, clean: bool) -> None:
        """_End stops what the node started; without a clean shutdown it cancels and cleans up first."""
        calls = list(self.calls.values())
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if not clean:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.cleanup(), CLOSE_SECONDS)
        for handle in reversed(list(self.nodes.values())):
            try:
                await handle.close()
            except Exception as e:
                self._record(f"closing node {handle.node.id!r}: {e}")
        if self.thread is not None:
            await asyncio.to_thread(self.thread.stop)
        if self.created and self.netns:
            await asyncio.to_thread(remove_with_processes, self.netns)
        self.channel.close()
        await asyncio.to_thread(self.channel.join, CLOSE_SECONDS)

    def _record(self, message: str) -> None:
        if self.runtime is not None:
            self.runtime.rec.error(message, TAG)


_METHODS: dict[str, Callable[..., Awaitable[Any]]] = {
    "setup": _Served.setup,
    "clock": _Served.clock,
    "set_hmac_key": _Served.set_hmac_key,
    "launch_nodes": _Served.launch_nodes,
    "run": _Served.run,
    "cleanup": _Served.cleanup,
}
"""_METHODS are the calls a parent may make, by name."""


def _user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def main(argv: list[str] | None = None) -> int:
    """Return ``python -m antler.node NODE_ID``: serve the parent on stdin and stdout; it returns the exit status.

    SIGTERM and SIGINT cancel the node (its runs stop, its cleanup runs). The
    node is normally started in a session of its own, so a Ctrl-C at the
    parent's terminal reaches the parent, which cancels it over the stream.
    """
    p = argparse.ArgumentParser(prog="antler-node", description="An antler node, serving its parent on stdin/stdout.")
    p.add_argument("node_id", help="the node's ID, as in the test's config")
    a = p.parse_args(argv)
    control = Control()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: control.cancel())
    try:
        serve(a.node_id, control, stdio_conn())
    except ServeError as e:
        print(f"antler node {a.node_id!r}: {e}", file=sys.stderr)
        return 1
    return 0
