"""Network namespaces for nodes, and a node runtime on a thread inside one.

``setns`` is per thread: a thread that enters a namespace keeps the rest of the
process (Ray's own threads included) outside, and passes the namespace to the
threads and processes it starts. So a namespaced node runs its event loop on a
dedicated thread that enters the namespace first; its sockets and commands
live there, while the process that hosts it keeps its connections outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from antler.node import lease
from antler.node.feedback import Feedback
from antler.node.lease import NETNS, Lease
from antler.node.nodespec import Netns, Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle, Run, cancel_reason
from antler.node.runtime import NodeRuntime

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(Exception):
    """A namespace that could not be created, found or entered."""


def _ip(*args: str) -> None:
    # iproute2 rather than pyroute2 here: pyroute2 forks a helper process to
    # create a namespace, and a fork from a Ray worker's many threads hangs.
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or f'status {done.returncode}'}")


def list_names() -> list[str]:
    """Return the names of the host's named network namespaces."""
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def create(name: str) -> None:
    """Make a new named namespace and leases it (antler.node.lease), raising NetnsError if it exists already."""
    if name in list_names():
        raise NetnsError(f"network namespace {name!r} already exists")
    _ip("netns", "add", name)
    ino = inode(name)
    if ino is not None:
        lease.take(NETNS, name, ino)


def remove(name: str) -> None:
    """Delete a named namespace, if it exists, and its lease."""
    if name in list_names():
        _ip("netns", "del", name)
    lease.give_back(NETNS, name)


def inode(name: str) -> int | None:
    """Identify the named namespace (the nsfs inode /proc/PID/ns/net shows), or None if there is none."""
    try:
        return os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except OSError:
        return None


def reclaim_existing(name: str) -> str:
    """Delete an existing namespace left by a run that is gone, and say so in a log line.

    Raises NetnsError when the namespace is not one antler-ray made on this
    host (no lease, or a lease for another namespace of that name), or when
    the process that made it still runs: what a live run owns is never touched.
    """
    held = lease.find(NETNS, name)
    if held is None or held.ident != inode(name):
        raise NetnsError(
            f"network namespace {name!r} already exists and was not made by antler-ray on this host "
            f"(if it is left over: ip netns del {name})"
        )
    if not held.dead():
        raise NetnsError(f"network namespace {name!r} already exists: {held.whose()} made it and still runs")
    return reclaim(held)


def reclaim(held: Lease, dead: bool = True) -> str:
    """Kill what runs in a lease's namespace and delete it; it returns the log line saying so.

    ``dead`` says the lease is dead (the usual case); else its owner is being
    stopped at once (a second Ctrl-C), and the line says that.
    """
    killed = kill_processes_in(held.name)
    with contextlib.suppress(NetnsError):  # deleted meanwhile (by its owner's last cleanup, say)
        remove(held.name)
    what = f"; killed {len(killed)} processes in it" if killed else ""
    if not dead:
        return f"deleted network namespace {held.name!r} of {held.whose()}{what}"
    return f"reclaimed network namespace {held.name!r} left by {held.whose()}, {held.why_dead()}{what}"


def enter(name: str) -> None:
    """Move the calling thread into the named namespace (never creating it), raising NetnsError if it cannot."""
    path = os.path.join(NETNS_DIR, name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetnsError(f"network namespace {name!r} does not exist") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(f"setns {name!r}: {os.strerror(err)}")
    finally:
        os.close(fd)


def prepare(spec: Netns, node_id: str, notes: list[str] | None = None) -> tuple[str, bool]:
    """Create the node's namespace if asked; it returns the name and whether it was created.

    A namespace of that name left by a run that is gone is reclaimed first,
    with a line added to notes saying so (see :func:`reclaim_existing`).
    Raises NetnsError when a namespace to create exists already and is not
    such a one, or one to join does not exist.
    """
    name = spec.name_for(node_id)
    if spec.create:
        if name in list_names():
            note = reclaim_existing(name)
            if notes is not None:
                notes.append(note)
        create(name)
        try:
            up_loopback(name)
        except BaseException:
            remove(name)
            raise
        return name, True
    if name not in list_names():
        raise NetnsError(f"network namespace {name!r} does not exist (set create: true to create it)")
    return name, False


def up_loopback(name: str) -> None:
    """Bring up loopback in a new namespace, as ip-netns users expect."""
    _ip("-n", name, "link", "set", "lo", "up")


async def call_on(loop: asyncio.AbstractEventLoop, coro: Any, before_cancel: Callable[[], None] | None = None) -> Any:
    """Run a coroutine on another thread's loop and await it from this one.

    Unlike ``wrap_future(run_coroutine_threadsafe(...))``, canceling the caller
    cancels the coroutine and then waits until it has finished, so cleanup in
    the coroutine never outlives the caller's cancellation. ``before_cancel``
    runs in the caller, first: it tells the other side why (a StopScope).
    Raises what the coroutine raised, and CancelledError if it was canceled.
    """
    started: Future[asyncio.Task[Any]] = Future()

    async def guard() -> tuple[str, Any]:
        task = asyncio.current_task()
        assert task is not None
        started.set_result(task)
        try:
            return "ok", await coro
        except asyncio.CancelledError:
            return "canceled", None
        except BaseException as e:
            return "raised", e

    done = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(guard(), loop))
    try:
        kind, value = await asyncio.shield(done)
    except asyncio.CancelledError:
        if before_cancel is not None:
            before_cancel()
        task = await asyncio.wrap_future(started)
        loop.call_soon_threadsafe(task.cancel)
        with contextlib.suppress(BaseException):
            await done
        raise
    if kind == "raised":
        raise value
    if kind == "canceled":
        raise asyncio.CancelledError()
    return value


def kill_processes_in(name: str) -> list[int]:
    """Kill every process in the named namespace; it returns their PIDs.

    A backstop for a node that died without cleaning up: its commands ran in
    their own sessions and outlive it otherwise.
    """
    try:
        ns_ino = os.stat(os.path.join(NETNS_DIR, name)).st_ino
    except FileNotFoundError:
        return []
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != ns_ino:
                continue
            os.kill(int(entry), signal.SIGKILL)
            killed.append(int(entry))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return killed


def remove_with_processes(name: str) -> None:
    """Kill what still runs in the named namespace, then delete it, ignoring a failed delete.

    The backstop a node's closer runs when the node may have died without
    cleaning up (its commands ran in sessions of their own).
    """
    kill_processes_in(name)
    with contextlib.suppress(Exception):
        remove(name)


class LoopThread:
    """An asyncio loop on its own thread, optionally inside a namespace."""

    def __init__(self, name: str, netns: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        started: Future[None] = Future()

        def main() -> None:
            try:
                # Commands inherit the signal mask of the thread that starts
                # them, and Ray's workers block SIGINT: unblocked here, a
                # background command can be interrupted rather than killed
                # after the grace period (the delay link then prints its counts).
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
                if netns is not None:
                    enter(netns)
            except BaseException as e:
                started.set_exception(e)
                return
            asyncio.set_event_loop(self.loop)
            started.set_result(None)
            self.loop.run_forever()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

        self.thread = threading.Thread(target=main, name=name, daemon=True)
        self.thread.start()
        started.result()

    async def call(self, coro: Any, before_cancel: Callable[[], None] | None = None) -> Any:
        """Run a coroutine on the thread's loop; canceling the caller cancels it (after before_cancel).

        A canceled caller waits for the coroutine to finish unwinding (its
        commands interrupted, its sockets closed) before it sees CancelledError,
        so cancellation stays structured across the thread boundary.
        """
        return await call_on(self.loop, coro, before_cancel)

    def stop(self) -> None:
        """End the loop and join the thread."""
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


class ThreadHandle:
    """A node in this process, on its own thread, in its namespace if it has one.

    Tests and the in-process launch use it; a Ray actor hosts the same runtime.
    """

    def __init__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> None:
        self.node = node
        self.netns: str | None = None
        self.created = False
        notes: list[str] = []
        if node.netns.enabled:
            self.netns, self.created = prepare(node.netns, node.id, notes)
        try:
            self.thread = LoopThread(f"node-{node.id}", self.netns)
        except BaseException:
            if self.created and self.netns:
                remove(self.netns)
            raise
        self.runtime = NodeRuntime(node.id, sink, node.env.build())
        self.runtime.children = nodes
        for note in notes:
            self.runtime.rec.log(note, lease.TAG)

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node's thread."""
        stop = self.runtime.stop
        result: Feedback = await self.thread.call(
            self.runtime.run(run, feedback), before_cancel=lambda: stop.stop(cancel_reason())
        )
        return result

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node the test's HMAC key (before any run starts)."""
        self.runtime.ctx.hmac_key = key

    async def cleanup(self) -> None:
        """Run the node's cancelers on its thread."""
        await self.thread.call(self.runtime.cleanup())

    async def close(self) -> None:
        """Stop the thread and delete a namespace the node created."""
        self.thread.stop()
        if self.created and self.netns:
            remove(self.netns)


async def launch_thread(node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
    """Start the node on a thread of this process (in its namespace, if any)."""
    return await asyncio.to_thread(ThreadHandle, node, sink, nodes)
