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
import hashlib
import itertools
import logging
import os
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import antler
from antler.node.feedback import Feedback
from antler.node.items import DIAGNOSTICS_TAG, Error, Item, LogEntry, RunnerError, now
from antler.node.launch.netns import LoopThread, call_on, kill_processes_in, prepare, remove
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle, Run, cancel_reason
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
CLOCK_ROUNDS = 5
"""CLOCK_ROUNDS is how many round trips estimate a node's clock offset; the fastest one wins."""
TAG = "node"


class LaunchError(Exception):
    """LaunchError is a node that could not be launched (unknown host, version mismatch, ...)."""


def package_dir() -> Path:
    """Package_dir is the folder of the antler package this process runs."""
    return Path(antler.__file__).resolve().parent


def code_version() -> str:
    """Code_version is the package version plus a digest of its sources.

    Two copies with the same version number but different code differ here, so
    a host running a stale copy is caught even between releases.
    """
    root = package_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{antler.__version__}+{h.hexdigest()[:12]}"


def boot_id() -> str:
    """Boot_id identifies the running kernel: two processes with the same one share a clock."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


class NodeActor:
    """NodeActor is the Ray actor that hosts one node.

    Its methods run on the actor's event loop, in the host namespace; run
    trees run on the node's LoopThread, in the node's namespace. ``start``
    must be called first.
    """

    def __init__(self, node: Node) -> None:
        self.node = node
        self._items: list[Item] = []
        self._lock = threading.Lock()
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self.netns: str | None = None
        self.created = False
        self.thread: LoopThread | None = None
        self.runtime: NodeRuntime | None = None
        self._home: asyncio.AbstractEventLoop | None = None
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

    async def start(self, driver_code: str) -> dict[str, Any]:
        """Start checks the code version, enters the namespace and returns the node's facts.

        Raises LaunchError when the node runs other code than the driver, NetnsError for its namespace.
        """
        mine = code_version()
        if mine != driver_code:
            raise LaunchError(
                f"node {self.node.id!r} runs antler {mine} on {socket.gethostname()}, the driver runs {driver_code}"
            )
        self._home = asyncio.get_running_loop()
        if self.node.netns.enabled:
            # pyroute2 runs its own event loop: keep it off the actor's.
            self.netns, self.created = await asyncio.to_thread(prepare, self.node.netns, self.node.id)
        try:
            self.thread = await asyncio.to_thread(LoopThread, f"node-{self.node.id}", self.netns)
        except BaseException:
            self._remove_netns()
            raise
        self.runtime = NodeRuntime(self.node.id, self._sink, self.node.env.build())
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

    async def drain(self) -> list[Item]:
        """Drain returns and forgets the data items recorded since the last drain."""
        with self._lock:
            items, self._items = self._items, []
        return items

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
        """Cleanup runs the node's cancelers in reverse order and ships its remaining data."""
        if self.thread is not None and self.runtime is not None:
            await self.thread.call(self.runtime.cleanup())

    async def close(self) -> None:
        """Close stops the node's thread and deletes a namespace it created."""
        if self.thread is not None:
            await asyncio.to_thread(self.thread.stop)
        self._remove_netns()


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

    def __init__(self, node: Node, actor: Any, sink: Sink, home: asyncio.AbstractEventLoop | None = None) -> None:
        self.node = node
        self.actor = actor
        self.sink = sink
        self.home = home
        self.facts: dict[str, Any] = {"id": node.id}
        self.nodes: dict[Node, NodeHandle] | None = None
        self._nodes_sent = 0
        self._poller: asyncio.Task[None] | None = None
        self.lost: asyncio.Future[str] | None = None
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
            # Cancel reaches the node, with the reason; wait until its runs have unwound.
            with contextlib.suppress(RayError):
                self.actor.cancel_run.remote(run_id, cancel_reason())
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
        waits: set[asyncio.Future[Any]] = {fut}
        if self.lost is not None:
            waits.add(self.lost)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            fut.cancel()
            raise
        if fut.done():
            try:
                return fut.result()
            except RayActorError as e:
                raise RunnerError(self._lose(f"node {self.node.id!r} died: {_first_line(e)}{_SEE_LOG}")) from None
        fut.cancel()
        self._check_lost()
        raise AssertionError("unreachable")

    def _check_lost(self) -> None:
        if self.lost is not None and self.lost.done():
            raise RunnerError(self.lost.result())

    def _lose(self, message: str) -> str:
        """_Lose records, once, that the node is gone, as an Error naming it."""
        if self.lost is None:
            self.lost = asyncio.get_running_loop().create_future()
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
        while not self._closed and (not self.lost or not self.lost.done()):
            try:
                await self._drain_now(DEAD_AFTER_SECONDS)
            except (TimeoutError, GetTimeoutError):
                self._lose(
                    f"node {self.node.id!r} lost: no answer for {DEAD_AFTER_SECONDS:.0f}s (its host may be down)"
                )
                return
            except RayError as e:
                self._lose(f"node {self.node.id!r} died: {_first_line(e)}{_SEE_LOG}")
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _drain_now(self, timeout: float | None = None) -> None:
        if self.home is not None:
            return  # only the driver drains; a nested caller's items flow through it
        items = await asyncio.wait_for(_wait_ref(self.actor.drain.remote()), timeout)
        for item in items:
            self.sink(item)

    # --- end of test

    async def cleanup(self) -> None:
        """Cleanup runs the node's cancelers and ships its remaining data."""
        if self.lost is not None and self.lost.done():
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
        alive = self.lost is None or not self.lost.done()
        if alive:
            with contextlib.suppress(RayError, TimeoutError):
                await asyncio.wait_for(_wait_ref(self.actor.close.remote()), CLOSE_TIMEOUT_SECONDS)
            with contextlib.suppress(RayError, TimeoutError):
                await self._drain_now(CLOSE_TIMEOUT_SECONDS)
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
    return {"py_modules": [str(package_dir())]}


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
        """Ensure connects to Ray if this process is not connected yet (blocking)."""
        with self._lock:
            if ray.is_initialized():
                return
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            if address:
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
    """RayLaunch launches nodes as Ray actors, one per node, for one command."""

    def __init__(self, session: RaySession) -> None:
        self.session = session
        self._code: str | None = None

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
        actor = _remote_actor().options(**options).remote(node)
        handle = RayHandle(node, actor, sink)
        try:
            info = await asyncio.wait_for(_wait_ref(actor.start.remote(self._code)), LAUNCH_TIMEOUT_SECONDS)
        except BaseException as e:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)
            if isinstance(e, RayError) and isinstance(getattr(e, "cause", None), Exception):
                raise LaunchError(str(e.cause)) from None  # type: ignore[attr-defined]
            if isinstance(e, TimeoutError):
                raise LaunchError(f"node {node.id!r} did not start within {LAUNCH_TIMEOUT_SECONDS:.0f}s") from None
            raise
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

    async def _clock(self, actor: Any, info: dict[str, Any]) -> dict[str, Any]:
        """_Clock estimates the node's clock offset to the driver from the fastest round trip."""
        best_rtt, best_offset = None, 0
        for _ in range(CLOCK_ROUNDS):
            t0 = time.time_ns()
            remote = await _wait_ref(actor.clock.remote())
            t1 = time.time_ns()
            rtt = t1 - t0
            if best_rtt is None or rtt < best_rtt:
                best_rtt, best_offset = rtt, remote - (t0 + t1) // 2
        same_clock = info["boot_id"] == boot_id()
        return {
            # One kernel, one clock: a node on the driver's host has offset 0 by construction.
            "clock_offset_ns": 0 if same_clock else best_offset,
            "clock_offset_measured_ns": best_offset,
            "clock_rtt_ns": best_rtt,
            "same_clock": same_clock,
        }
