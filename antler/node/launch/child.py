"""A node process at the other end of a byte stream, as its parent sees it (local and SSH nodes).

:class:`ChildHandle` is the :class:`NodeHandle` of a node that runs
``python -m antler.node`` (:mod:`antler.node.process`) somewhere and talks the
wire protocol (:mod:`antler.node.wire`) over a :class:`Conn`: a child
process's stdio for the local launcher, an SSH channel for the SSH launcher.
What differs between the two is only how the process starts and stops, the
:class:`NodeProcess` each gives the handle.

Data items arrive as the node sends them and go straight to the sink from the
channel's reader thread (it is thread-safe), so a run's items reach the sink
before its result does. Liveness: the node sends a heartbeat every second; a
node whose stream ends, carries a corrupt frame or another protocol version,
or stays silent for :data:`DEAD_AFTER_SECONDS`, is lost: an Error naming it
and the cause is recorded, its calls fail, and ``lost`` completes, which ends
the test at once (node.root).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
from typing import Any, Protocol

import antler.node.compat as compat
from antler.node.conn import Channel, Conn
from antler.node.feedback import Feedback
from antler.node.items import Error, LogEntry, RunnerError, now
from antler.node.launch.clock import clock_offset, relative_to
from antler.node.launch.errors import LaunchError
from antler.node.launch.netns import call_on
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeTree, Run, cancel_reason
from antler.node.wire import (
    HEARTBEAT_SECONDS,
    CorruptFrame,
    Kind,
    Status,
    VersionMismatch,
    WireError,
    decode_item,
    decode_reply,
    encode_call,
    encode_cancel,
    frame,
)

TAG = "node"
START_TIMEOUT_SECONDS = 20.0
"""START_TIMEOUT_SECONDS bounds a node process's start: from its launch to its answer to ``setup``."""
LAUNCH_NODES_TIMEOUT_SECONDS = 120.0
"""LAUNCH_NODES_TIMEOUT_SECONDS bounds the launch of a node's own nodes (SSH hosts of its own, say)."""
DEAD_AFTER_SECONDS = 6.0
"""DEAD_AFTER_SECONDS is how long a node may stay silent (no byte, not even a heartbeat's) before it is lost."""
CLOSE_TIMEOUT_SECONDS = 20.0
"""CLOSE_TIMEOUT_SECONDS bounds a node's cleanup, and its shutdown before it is killed."""
EXIT_WAIT_SECONDS = 2.0
"""EXIT_WAIT_SECONDS is how long a node whose stream ended may take to report its exit status."""
STDERR_LINES = 5
"""STDERR_LINES is how many of a node's last stderr lines an Error about its death quotes."""


class NodeProcess(Protocol):
    """What runs a node for a ChildHandle: a child process, an SSH session."""

    def wait(self, timeout: float) -> str | None:
        """Block until the node's process ends, at most timeout seconds: how it ended, or None if it runs."""
        ...

    def kill(self) -> None:
        """End the node's process now (and what it runs)."""
        ...

    def release(self, facts: dict[str, Any], clean: bool) -> None:
        """Free what launching the node set up (a namespace, a connection), once the process ended.

        ``facts`` are the node's (its namespace); without a ``clean`` end, the
        node may have left its namespace and what runs in it: release removes them.
        """
        ...


class ChildHandle:
    """A node process at the other end of a Conn, for the node that launched it.

    Its methods run on the loop that created it (``home``); a run started
    from another loop (a node's runtime on its namespace thread) is passed
    over to it.
    """

    _call_ids = itertools.count(1)

    def __init__(self, node: Node, sink: Sink, conn: Conn, process: NodeProcess, launcher: str) -> None:
        self.node = node
        self.sink = sink
        self.process = process
        self.home = asyncio.get_running_loop()
        self.channel = Channel(conn, f"node-{node.id}")
        self.facts: dict[str, Any] = {"id": node.id, "launcher": launcher}
        self.below_facts: list[dict[str, Any]] = []
        self.lost: asyncio.Future[str] | None = None
        self._dead: str | None = None
        self._calls: dict[int, asyncio.Future[tuple[Status, Any]]] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._ended: asyncio.Future[None] = self.home.create_future()
        self._closing = False
        self._closed = False
        self._watchdog: asyncio.Task[None] | None = None
        self.channel.start(self._on_frame, self._on_end)

    # --- start

    async def start(self, netns: bool) -> None:
        """Set the node up (in its namespace if ``netns``), read its clock and start watching it.

        Raises LaunchError naming the node and the cause; the process is then stopped.
        """
        try:
            facts = await asyncio.wait_for(self._expect("setup", self.node, netns), START_TIMEOUT_SECONDS)
            self.facts.update({k: v for k, v in facts.items() if v is not None or k not in self.facts})
            self.facts.update(await clock_offset(self._clock, str(facts["boot_id"])))
        except compat.AsyncTimeout:
            await self._abort()
            raise LaunchError(
                f"node {self.node.id!r} did not start within {START_TIMEOUT_SECONDS:.0f}s{self._last_words()}"
            ) from None
        except RunnerError as e:
            await self._abort()
            raise LaunchError(str(e)) from None
        except BaseException:
            await self._abort()
            raise
        self.lost = self.home.create_future()
        self._watchdog = asyncio.ensure_future(self._watch())

    async def _clock(self) -> int:
        value: int = await self._expect("clock")
        return value

    async def _abort(self) -> None:
        """_Abort stops a node that failed to start: a shutdown first, so it can clean up, then a kill."""
        self._closed = True
        self.channel.send(frame(Kind.SHUTDOWN))
        self.channel.close()
        if await asyncio.to_thread(self.process.wait, EXIT_WAIT_SECONDS) is None:
            await asyncio.to_thread(self.process.kill)
            await asyncio.to_thread(self.process.wait, EXIT_WAIT_SECONDS)
        await asyncio.to_thread(self.process.release, self.facts, False)

    def stderr_line(self, line: str) -> None:
        """Log a line the node's process wrote to stderr (a launcher's stderr thread calls it)."""
        self._stderr.append(line)
        self.sink(LogEntry(now(), self.node.id, TAG, f"stderr: {line}"))

    # --- running

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node and return its feedback, raising RunnerError if it failed."""
        if asyncio.get_running_loop() is not self.home:
            result: Feedback = await call_on(self.home, self._run(run, feedback))
            return result
        return await self._run(run, feedback)

    async def _run(self, run: Run, feedback: Feedback) -> Feedback:
        out: Feedback = await self._expect("run", run, feedback)
        return out

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node (and the nodes it launched) the test's HMAC key."""
        await self._expect("set_hmac_key", key)

    async def launch_nodes(self, tree: NodeTree) -> None:
        """Have the node launch the nodes of its child runs, on its host.

        Raises RunnerError when any failed (the node recorded each failure).
        """
        try:
            facts = await asyncio.wait_for(self._expect("launch_nodes", tree), LAUNCH_NODES_TIMEOUT_SECONDS)
        except compat.AsyncTimeout:
            raise LaunchError(
                f"node {self.node.id!r} did not launch its nodes within {LAUNCH_NODES_TIMEOUT_SECONDS:.0f}s"
            ) from None
        self.below_facts = [relative_to(f, self.facts) for f in facts]

    async def cleanup(self) -> None:
        """Run the node's cancelers (and those of the nodes it launched) and ship its remaining data."""
        if self._dead is not None:
            return
        with contextlib.suppress(compat.AsyncTimeout):
            await asyncio.wait_for(self._expect("cleanup"), CLOSE_TIMEOUT_SECONDS)

    async def close(self) -> None:
        """Shut the node down, wait for its process to end (killing it if it does not) and release it."""
        if self._closed:
            return
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._dead is None:
            self._closing = True
            self.channel.send(frame(Kind.SHUTDOWN))
            with contextlib.suppress(compat.AsyncTimeout):
                await asyncio.wait_for(asyncio.shield(self._ended), CLOSE_TIMEOUT_SECONDS)
        self.channel.close()
        clean = self._dead is None
        if await asyncio.to_thread(self.process.wait, EXIT_WAIT_SECONDS) is None:
            clean = False
            await asyncio.to_thread(self.process.kill)
            await asyncio.to_thread(self.process.wait, CLOSE_TIMEOUT_SECONDS)
        await asyncio.to_thread(self.process.release, self.facts, clean)

    # --- calls

    async def _expect(self, method: str, *args: Any) -> Any:
        """_Expect calls a method on the node and returns its value; an error is a RunnerError, a cancel a cancel."""
        status, value = await self._call(method, *args)
        if status == Status.OK:
            return value
        if status == Status.CANCELED:
            raise asyncio.CancelledError()
        raise RunnerError(str(value))

    async def _call(self, method: str, *args: Any) -> tuple[Status, Any]:
        if self._dead is not None:
            raise RunnerError(self._dead)
        call_id = next(self._call_ids)
        fut: asyncio.Future[tuple[Status, Any]] = self.home.create_future()
        self._calls[call_id] = fut
        try:
            self.channel.send(encode_call(call_id, method, args))
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            # The cancel reaches the node; wait until its run has unwound (its servers closed, its commands ended).
            if not fut.done() and self._dead is None:
                self.channel.send(encode_cancel(call_id, cancel_reason()))
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(asyncio.shield(fut), CLOSE_TIMEOUT_SECONDS)
            raise
        finally:
            self._calls.pop(call_id, None)

    # --- frames (reader thread) and the end of the stream

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        if kind in (Kind.ITEM, Kind.BATCH):
            self.sink(decode_item(kind, payload))
        elif kind == Kind.REPLY:
            call_id, status, value = decode_reply(payload)
            self.home.call_soon_threadsafe(self._resolve, call_id, status, value)
        elif kind == Kind.LOST:
            self.home.call_soon_threadsafe(self._lost_below, payload.decode(errors="replace"))
        elif kind != Kind.HEARTBEAT:
            raise CorruptFrame(f"a {kind.name} frame, which only a parent sends")

    def _on_end(self, why: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the home loop is closed: nobody is left to tell
            self.home.call_soon_threadsafe(lambda: asyncio.ensure_future(self._stream_ended(why)))

    def _resolve(self, call_id: int, status: Status, value: Any) -> None:
        fut = self._calls.get(call_id)
        if fut is not None and not fut.done():
            fut.set_result((status, value))

    def _lost_below(self, message: str) -> None:
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(message)

    async def _stream_ended(self, why: BaseException | None) -> None:
        if self._closing and why is None:
            self._ended.set_result(None)
            return
        n = repr(self.node.id)
        kill = True
        if isinstance(why, VersionMismatch):
            message = f"node {n}: {why} (the node runs another release of antler than this one)"
        elif isinstance(why, WireError):
            message = f"node {n}: {why}; its stream is unusable, so the node was stopped"
        elif why is None or isinstance(why, EOFError):
            kill = False
            how = await asyncio.to_thread(self.process.wait, EXIT_WAIT_SECONDS)
            message = f"node {n} ended unexpectedly ({how or 'its stream closed'}){self._last_words()}"
        else:
            message = f"node {n}: its connection failed: {type(why).__name__}: {why}"
        self._die(message)
        if kill:
            await asyncio.to_thread(self.process.kill)
        if not self._ended.done():
            self._ended.set_result(None)

    def _die(self, message: str) -> None:
        """_Die marks the node gone: its calls fail, and once it is watched an Error names it and ``lost`` completes."""
        if self._dead is not None:
            return
        self._dead = message
        for fut in self._calls.values():
            if not fut.done():
                fut.set_result((Status.ERROR, message))
        if self.lost is not None and not self._closed:
            self.sink(Error(now(), self.node.id, TAG, message))
            if not self.lost.done():
                self.lost.set_result(message)

    async def _watch(self) -> None:
        while self._dead is None:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            silent = time.monotonic() - self.channel.last_read
            if silent > DEAD_AFTER_SECONDS and self._dead is None:
                self._die(
                    f"node {self.node.id!r} lost: no answer for {silent:.0f}s (its process is stuck or its host is down)"
                )
                await asyncio.to_thread(self.process.kill)

    def _last_words(self) -> str:
        return f"; its stderr: {' | '.join(self._stderr)}" if self._stderr else ""


def conn_of(read: Any, write: Any, close: Any) -> Conn:
    """Make a Conn of three functions (read(n), write(data), close())."""
    return _FnConn(read, write, close)


class _FnConn:
    def __init__(self, read: Any, write: Any, close: Any) -> None:
        self.read, self.write, self.close = read, write, close
