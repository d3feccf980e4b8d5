"""The Ray launcher: each node is a Ray actor on the cluster host its spec names.

Pinning (DESIGN "Nodes and launchers"): every cluster host carries a custom
resource ``host:NAME``, declared when its raylet starts
(``ray start ... --resources '{"host:NAME": 1}'``, as cluster.yaml does). A
node with ``launcher: {ray: {host: NAME}}`` asks for a sliver of that resource
(:data:`HOST_SHARE`), so any number of nodes fit on one host and the scheduler
can only place them there. A node without a host is pinned to the driver's own
raylet by node affinity. A host name the cluster does not have fails at launch,
listing the hosts it has, before any run starts.

The launcher's parts, one module each: joining the cluster
(:mod:`~antler.node.launch.ray.cluster`), the actor that hosts a node on its
host (:mod:`~antler.node.launch.ray.actor`) and the driver's handle that
calls it, drains its data and watches it (:mod:`~antler.node.launch.ray.handle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from antler.node.launch.clock import clock_offset
from antler.node.launch.errors import LaunchError
from antler.node.launch.ray.actor import NodeActor
from antler.node.launch.ray.cluster import HOST_RESOURCE, RaySession, cluster_hosts, code_version
from antler.node.launch.ray.handle import RayHandle, divert_raylet_errors, wait_ref, watch_worker
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle

HOST_SHARE = 0.001
"""HOST_SHARE is how much of its host's resource a node takes: up to 1000 nodes per host."""
LAUNCH_TIMEOUT_SECONDS = 120.0
"""LAUNCH_TIMEOUT_SECONDS bounds an actor's start (scheduling, shipping code, worker start)."""
MAX_IDLE_PER_HOST = 32
"""MAX_IDLE_PER_HOST bounds the idle actors kept for reuse on one host (each is a worker process)."""

_actor_class: Any = None


def _remote_actor() -> Any:
    global _actor_class
    if _actor_class is None:
        _actor_class = ray.remote(NodeActor)
    return _actor_class


class RayLaunch:
    """Launches nodes as Ray actors, one per node, for one command.

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
        """End the idle actors kept on a host (one that was lost)."""
        with self._lock:
            actors = self._idle.pop(host, [])
        for actor in actors:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)

    def close(self) -> None:
        """End every idle actor kept for reuse."""
        with self._lock:
            hosts = list(self._idle)
        for host in hosts:
            self.forget_host(host)

    async def launch(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> RayHandle:
        """Start the node's actor on its host and return its handle, polling already.

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
                info = await asyncio.wait_for(wait_ref(actor.start.remote(self._code, node)), LAUNCH_TIMEOUT_SECONDS)
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
        watch_worker(int(info["pid"]), handle)
        handle.nodes = nodes
        handle.start_polling()
        return handle

    async def _start(self, actor: Any, node: Node) -> dict[str, Any]:
        """_Start starts a new actor as node, killing it if that fails."""
        try:
            info: dict[str, Any] = await asyncio.wait_for(
                wait_ref(actor.start.remote(self._code, node)), LAUNCH_TIMEOUT_SECONDS
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
            value: int = await wait_ref(actor.clock.remote())
            return value

        return await clock_offset(read, info["boot_id"])
