"""The Ray launcher: each node is a Ray actor on the cluster host its spec names.

Pinning (DESIGN "Nodes and launchers"): every cluster host carries a custom
resource ``host:NAME``, declared when its raylet starts
(``ray start ... --resources '{"host:NAME": 1}'``, as cluster.yaml does). A
node with ``launcher: {ray: {host: NAME}}`` asks for a sliver of that resource
(:data:`HOST_SHARE`), so any number of nodes fit on one host and the scheduler
can only place them there. A node without a host is pinned to the driver's own
raylet by node affinity. A host name the cluster does not have fails at launch,
listing the hosts it has, before any run starts.

An actor hosts the node's :class:`NodeRuntime` on a :class:`LoopThread` that
has entered the node's network namespace, so the node's sockets and commands
live there while the actor's own Ray connection (Ray's threads, the actor's
event loop) stays in the host namespace. Child runs are actor method calls;
the feedback a child run gets is passed as an object ref (``ray.put``), so a
server's address found on one node reaches a client on another through the
object store. Nodes can call nodes: each actor gets the handles of every
node of the test, and its calls go out from its host-namespace loop.

Data items leave an actor in batches: the actor buffers them and the driver
drains every :data:`POLL_SECONDS` (measurements are already Arrow batches, see
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
import atexit
import contextlib
import functools
import hashlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import antler
from antler.node import lease
from antler.node.feedback import Feedback
from antler.node.items import DIAGNOSTICS_TAG, Error, Item, LogEntry, RunnerError, now
from antler.node.launch.clock import boot_id, clock_offset, relative_to
from antler.node.launch.errors import LaunchError
from antler.node.launch.launchers import ProcessLaunchers
from antler.node.launch.netns import LoopThread, call_on, kill_processes_in, prepare, remove
from antler.node.launch.reclaim import reclaim_left
from antler.node.launch.tree import launch_nodes
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import Losable, NodeHandle, NodeTree, Run, cancel_reason
from antler.node.runtime import NodeRuntime

log = logging.getLogger(__name__)

HOST_RESOURCE = "host:"
"""HOST_RESOURCE prefixes the custom resource that names a cluster host (``host:NAME``)."""
HOST_SHARE = 0.001
"""HOST_SHARE is how much of its host's resource a node takes: up to 1000 nodes per host."""
POLL_SECONDS = 0.2
"""POLL_SECONDS is how often the driver drains each node's data items."""
DEAD_AFTER_SECONDS = 6.0
"""DEAD_AFTER_SECONDS is how long a node may not answer a drain before it is declared lost."""
LAUNCH_TIMEOUT_SECONDS = 120.0
"""LAUNCH_TIMEOUT_SECONDS bounds an actor's start (scheduling, shipping code, worker start)."""
CLOSE_TIMEOUT_SECONDS = 20.0
"""CLOSE_TIMEOUT_SECONDS bounds a node's cleanup and close calls."""
MAX_IDLE_PER_HOST = 32
"""MAX_IDLE_PER_HOST bounds the idle actors kept for reuse on one host (each is a worker process)."""
TAG = "node"


def package_dir() -> Path:
    """Package_dir is the folder of the antler package this process runs."""
    return Path(antler.__file__).resolve().parent


@functools.cache
def code_version() -> str:
    """Code_version is the package version plus a digest of its sources.

    Two copies with the same version number but different code differ here, so
    a host running a stale copy is caught even between releases. A process's
    code does not change under it, so an actor that hosts node after node
    digests it once (40 ms here).
    """
    root = package_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{antler.__version__}+{h.hexdigest()[:12]}"


class NodeActor:
    """NodeActor is the Ray actor that hosts one node.

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
        """Start checks the code version, becomes node (entering its namespace) and returns the node's facts.

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
        """Set_nodes gives the node the actors of the test's nodes, for nested child runs."""
        assert self.runtime is not None and self._home is not None
        nodes = self.runtime.children
        for node, actor in actors.items():
            if node not in nodes and node != self.node:
                nodes[node] = RayHandle(node, actor, self._sink, home=self._home)

    async def set_hmac_key(self, key: bytes) -> None:
        """Set_hmac_key gives the node the test's HMAC key (before any run starts)."""
        assert self.runtime is not None
        self.runtime.ctx.hmac_key = key

    async def clock(self) -> int:
        """Clock returns the node's wall clock, in ns since the epoch."""
        return time.time_ns()

    async def drain(self) -> tuple[list[Item], str | None]:
        """Drain returns and forgets the data items recorded since the last drain.

        The second value is the message of a node this node launched that was
        lost (its Error is among the items), or None.
        """
        with self._lock:
            items, self._items = self._items, []
        return items, self._lost_below

    async def launch_nodes(self, tree: NodeTree) -> tuple[str, Any]:
        """Launch_nodes launches the local and SSH nodes under this node, on its host, from the host namespace.

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
        """Run executes a run tree on the node's thread: ("ok", feedback), ("error", msg) or ("canceled", None).

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
        except BaseExceptionGroup as eg:
            return "error", "; ".join(str(e) for e in eg.exceptions)
        except Exception as e:
            message = f"{type(e).__name__}: {e}"
            self.runtime.rec.error(message, TAG)
            return "error", message
        finally:
            self._tasks.pop(run_id, None)

    async def cancel_run(self, run_id: int, reason: str = "") -> None:
        """Cancel_run cancels a running run tree, saying why; its run call returns once it has unwound."""
        task = self._tasks.get(run_id)
        if task is not None:
            if reason and self.runtime is not None:
                self.runtime.stop.stop(reason)  # its runners log it as they unwind
            task.cancel()

    async def cleanup(self) -> None:
        """Cleanup runs the node's cancelers in reverse order, then those of the nodes it launched."""
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
        """Close stops the nodes it launched and the node's thread, and deletes a namespace it created.

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


_actor_class: Any = None


_by_pid: dict[int, RayHandle] = {}
"""_by_pid maps each launched node's worker PID to its handle, to route Ray's account of its death."""
_by_pid_lock = threading.Lock()
_WORKER_PID = re.compile(r"Worker PID: (\d+)")


def divert_raylet_errors() -> None:
    """Divert_raylet_errors sends the raylet's messages about a node's worker to that node's log, not the terminal.

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


def _remote_actor() -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(NodeActor)
    return _actor_class


class RayHandle:
    """RayHandle is a node that runs in a Ray actor, as seen by its caller.

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
        """Set_hmac_key gives the node the test's HMAC key (the root calls it before any run)."""
        await self._await(self.actor.set_hmac_key.remote(key))

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Run executes a run tree on the node; its feedback travels as an object ref."""
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
        """Launch_nodes has the actor launch the local and SSH nodes under it; RunnerError if any failed."""
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
        fut = asyncio.ensure_future(_wait_ref(ref))
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
                    raise RunnerError(self._lose(f"{self._named()} died: {_first_line(e)}{_SEE_LOG}")) from None
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
        """Start_polling starts draining the node's data items into the sink."""
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
                self._lose(f"{self._named()} died: {_first_line(e)}{_SEE_LOG}")
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _drain_now(self, timeout: float | None = None) -> None:
        if self.home is not None:
            return  # only the driver drains; a nested caller's items flow through it
        items, lost_below = await asyncio.wait_for(_wait_ref(self.actor.drain.remote()), timeout)
        for item in items:
            self.sink(item)
        if lost_below and self.lost is not None and not self.lost.done():
            self.lost.set_result(lost_below)  # recorded below; ends the test now (node.root)

    # --- end of test

    async def cleanup(self) -> None:
        """Cleanup runs the node's cancelers and ships its remaining data."""
        if self._dead:
            return
        with contextlib.suppress(RayError, TimeoutError):
            await asyncio.wait_for(_wait_ref(self.actor.cleanup.remote()), CLOSE_TIMEOUT_SECONDS)
        with contextlib.suppress(RayError, TimeoutError):
            await self._drain_now(CLOSE_TIMEOUT_SECONDS)

    async def close(self) -> None:
        """Close stops the node, kills its actor and removes what it left on this host."""
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
                await asyncio.wait_for(_wait_ref(self.actor.close.remote()), CLOSE_TIMEOUT_SECONDS)
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
            await asyncio.to_thread(_remove_left_namespace, ns)


def _remove_left_namespace(name: str) -> None:
    kill_processes_in(name)
    with contextlib.suppress(Exception):
        remove(name)


async def _wait_ref(ref: Any) -> Any:
    return await ref


_SEE_LOG = " (Ray's account, if it gave one, is in the test's log under this node)"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def runtime_env() -> dict[str, Any]:
    """Runtime_env ships the driver's own package to every worker of the Ray job.

    Ray uploads a local folder only at the job level (``ray.init``), so a
    process that connects to Ray itself should pass this too; the version
    check at launch catches one that did not.
    """
    env = {lease.INVOCATION_ENV: os.environ[lease.INVOCATION_ENV]} if lease.INVOCATION_ENV in os.environ else {}
    # The invocation's identity too, which the nodes' leases record (antler.node.lease).
    return {"py_modules": [str(package_dir())], **({"env_vars": env} if env else {})}


class RaySession:
    """RaySession connects this process to Ray: the configured cluster, or an embedded local one.

    With no address (neither ``ray.address`` in the config nor RAY_ADDRESS) it
    starts a local Ray itself, dashboard off and quiet, and shuts it down in
    ``shutdown``; a Ray this process is already connected to is used as is.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Ensure connects to Ray if this process is not connected yet (blocking).

        Raises JoinError, in one line saying what to do, when the cluster at
        the address does not answer or refuses this host's token.
        """
        with self._lock:
            if ray.is_initialized():
                return
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
                if address != "auto" and not address.startswith("ray://"):
                    use_token_if_any()
                    probe(address)
                # The driver's own package, so a cluster host never runs a stale copy.
                ray.init(address=address, runtime_env=runtime_env(), **quiet)
            else:
                # An embedded Ray runs on this machine, from this very package:
                # shipping it would only cost each actor 1-2 s of runtime-env set-up.
                ray.init(include_dashboard=False, **quiet)
                self.started = True

    def shutdown(self) -> None:
        """Shutdown stops Ray if this session started it."""
        with self._lock:
            if self.started and ray.is_initialized():
                ray.shutdown()
            self.started = False


class JoinError(Exception):
    """JoinError is a Ray cluster this process cannot join, said in one line with what to do."""


AUTH_MODE = "RAY_AUTH_MODE"
"""AUTH_MODE is Ray's environment variable for its authentication mode (``token`` or ``disabled``)."""
PROBE_TIMEOUT_SECONDS = 5.0
"""PROBE_TIMEOUT_SECONDS bounds the TCP connect that checks a cluster address answers at all."""


def token_file() -> Path:
    """Token_file is where Ray keeps this host's cluster token: RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def use_token_if_any() -> None:
    """Use_token_if_any turns on Ray's token auth for this process when a token is at hand and no mode is set.

    ``ray start --head`` (Ray 2.60) enables token auth when ~/.ray/auth_token
    exists, which any local ``ray.init`` creates; but a driver given an
    explicit address joins without the token unless RAY_AUTH_MODE=token, and
    then fails after 20 s with InvalidAuthToken. Ray does the same for
    ``address=auto``. A token sent to a cluster without auth is ignored, so
    turning it on is always safe.
    """
    if os.environ.get(AUTH_MODE) is not None:
        return  # the user chose
    if not (os.environ.get("RAY_AUTH_TOKEN") or token_file().is_file()):
        return
    os.environ[AUTH_MODE] = "token"
    # Ray caches its config when it is imported; it re-reads it like this in
    # its own ray._private.authentication.authentication_token_setup.
    config = getattr(ray._raylet, "Config", None)
    if config is not None:
        config.initialize("")


def probe(address: str) -> None:
    """Probe checks that a Ray cluster answers at address and accepts this host's token, raising JoinError.

    Ray's own failure would come after 20 s as a traceback under a line of
    C++ warnings a second; this takes well under a second (0.3 s here).
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # a form ray.init understands and we do not: it will say
    try:
        socket.create_connection((host, int(port)), PROBE_TIMEOUT_SECONDS).close()
    except OSError as e:
        raise JoinError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): check ray.address "
            "(the head's IP and port, 6379 unless `ray start --head --port` said otherwise)"
        ) from None
    gcs_client = getattr(ray._raylet, "GcsClient", None)  # Ray's own check, as `ray status` uses
    if gcs_client is None:
        return
    try:
        with _quiet_stderr():
            gcs_client(address=address)
    except ray.exceptions.AuthenticationError:
        mode = os.environ.get(AUTH_MODE, "")
        if mode.lower() == "token":
            source = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(token_file())
            what = f"refused this host's token ({source}): replace it with"
        elif mode:
            what = f"needs a token and {AUTH_MODE}={mode} sends none: unset {AUTH_MODE} and copy"
        else:
            what = f"needs a token and this host has none: copy to {token_file()}"
        raise JoinError(
            f"the Ray cluster at {address} {what} the head host's ~/.ray/auth_token "
            "(`ray get-auth-token` there prints it; RAY_AUTH_TOKEN=... works too)"
        ) from None
    except Exception:
        return  # anything else: ray.init says it in its own words


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """_Quiet_stderr silences file descriptor 2 (Ray's C++ logs a warning there for a refused token)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cluster_hosts() -> dict[str, str]:
    """Cluster_hosts maps each host name the live cluster declares to its Ray node ID."""
    hosts: dict[str, str] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        for res in n.get("Resources", {}):
            if res.startswith(HOST_RESOURCE):
                hosts[res.removeprefix(HOST_RESOURCE)] = n["NodeID"]
    return hosts


class RayLaunch:
    """RayLaunch launches nodes as Ray actors, one per node, for one command.

    With ``reuse``, the actor of a node that closed cleanly is kept, idle, and
    the next node launched on the same host starts in it instead of in a new
    actor: Ray starts a worker process per actor, 1-2 s on this 2-core machine
    (0.6 s with a pre-started worker), which every test of a sweep paid. A lost
    or failed actor is never kept; ``close`` ends the idle ones.
    """

    def __init__(self, session: RaySession, reuse: bool = False) -> None:
        self.session = session
        self.reuse = reuse
        self._code: str | None = None
        self._idle: dict[str, list[Any]] = {}
        self._lock = threading.Lock()

    def _take_idle(self, host: str) -> Any | None:
        with self._lock:
            pool = self._idle.get(host)
            return pool.pop() if pool else None

    def _release(self, host: str) -> Callable[[Any], None] | None:
        if not self.reuse:
            return None

        def release(actor: Any) -> None:
            with self._lock:
                pool = self._idle.setdefault(host, [])
                if len(pool) < MAX_IDLE_PER_HOST:
                    pool.append(actor)
                    return
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)

        return release

    def forget_host(self, host: str) -> None:
        """Forget_host ends the idle actors kept on a host (one that was lost)."""
        with self._lock:
            actors = self._idle.pop(host, [])
        for actor in actors:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)

    def close(self) -> None:
        """Close ends every idle actor kept for reuse."""
        with self._lock:
            hosts = list(self._idle)
        for host in hosts:
            self.forget_host(host)

    async def launch(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> RayHandle:
        """Launch starts the node's actor on its host and returns its handle, polling already.

        Raises LaunchError for a host the cluster lacks, an actor that failed
        to start or did not within LAUNCH_TIMEOUT_SECONDS.
        """
        # On the calling thread, never a pool thread: Ray's processes die with
        # the thread that started them (PR_SET_PDEATHSIG), and asyncio.run ends
        # its pool threads, which left `ray.shutdown` waiting 15 s on a dead GCS.
        self.session.ensure()
        divert_raylet_errors()
        if self._code is None:
            self._code = await asyncio.to_thread(code_version)
        options: dict[str, Any] = {
            "num_cpus": 0,
            "max_restarts": 0,
        }
        host = node.launcher.ray.host if node.launcher.ray is not None else ""
        hosts = await asyncio.to_thread(cluster_hosts)
        if host:
            if host not in hosts:
                have = ", ".join(sorted(hosts)) or f"none (no raylet declares a {HOST_RESOURCE}NAME resource)"
                raise LaunchError(f"node {node.id!r}: host {host!r} is not in the Ray cluster; its hosts: {have}")
            options["resources"] = {HOST_RESOURCE + host: HOST_SHARE}
        else:
            driver = ray.get_runtime_context().get_node_id()
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=driver, soft=False)
        actor = self._take_idle(host) if self.reuse else None
        if actor is not None:
            try:
                info = await asyncio.wait_for(_wait_ref(actor.start.remote(self._code, node)), LAUNCH_TIMEOUT_SECONDS)
            except (RayError, TimeoutError):
                # Died while idle (its host went down?): a new actor will do.
                with contextlib.suppress(RayError):
                    ray.kill(actor, no_restart=True)
                actor = None
        if actor is None:
            actor = _remote_actor().options(**options).remote()
            info = await self._start(actor, node)
        handle = RayHandle(node, actor, sink, release=self._release(host))
        by_id = {v: k for k, v in hosts.items()}
        handle.facts.update(
            host=host or by_id.get(info["ray_node_id"], info["hostname"]),
            launcher="ray",
            **info,
        )
        handle.facts.update(await self._clock(actor, info))
        with _by_pid_lock:
            _by_pid[int(info["pid"])] = handle
        handle.nodes = nodes
        handle.start_polling()
        return handle

    async def _start(self, actor: Any, node: Node) -> dict[str, Any]:
        """_Start starts a new actor as node, killing it if that fails."""
        try:
            info: dict[str, Any] = await asyncio.wait_for(
                _wait_ref(actor.start.remote(self._code, node)), LAUNCH_TIMEOUT_SECONDS
            )
            return info
        except BaseException as e:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)
            if isinstance(e, RayError) and isinstance(getattr(e, "cause", None), Exception):
                raise LaunchError(str(e.cause)) from None  # type: ignore[attr-defined]
            if isinstance(e, TimeoutError):
                raise LaunchError(f"node {node.id!r} did not start within {LAUNCH_TIMEOUT_SECONDS:.0f}s") from None
            raise

    async def _clock(self, actor: Any, info: dict[str, Any]) -> dict[str, Any]:
        """_Clock estimates the node's clock offset to the driver from the fastest round trip."""

        async def read() -> int:
            value: int = await _wait_ref(actor.clock.remote())
            return value

        return await clock_offset(read, info["boot_id"])
