"""Node specs (what to launch) and the node runtime (what runs on it).

A :class:`Node` is a value: the same spec used twice in a tree is the same
node, launched once. The runtime executes run trees on it, keeps the cancelers
its runners registered, and flushes its recorder.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field

from antler.node.context import Canceler, Context, NodeHandle
from antler.node.feedback import Feedback
from antler.node.recorder import Recorder, Sink

NODE_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
FLUSH_SECONDS = 0.5
"""FLUSH_SECONDS is how often a node ships its measurement buffers."""


@dataclass(frozen=True)
class Netns:
    """Netns is the Linux network namespace a node runs in (man ip-netns(8)).

    With ``create`` the namespace is created at launch (named after the node ID
    unless ``name`` is set) and deleted when the test ends; otherwise the
    existing namespace ``name`` is joined and left in place.
    """

    name: str = ""
    create: bool = False

    def validate(self, path: str) -> None:
        """Validate checks the name."""
        if self.name and not NODE_ID.fullmatch(self.name):
            raise ValueError(f"invalid namespace name {self.name!r}")

    @property
    def enabled(self) -> bool:
        """Enabled reports whether the node uses a namespace at all."""
        return bool(self.name) or self.create


@dataclass(frozen=True)
class Env:
    """Env is the environment of a node's commands: ``vars`` as KEY=value, over the inherited one."""

    vars: tuple[str, ...] = ()
    inherit: bool = True

    def validate(self, path: str) -> None:
        """Validate checks each variable is KEY=value."""
        for v in self.vars:
            if "=" not in v or v.startswith("="):
                raise ValueError(f"env var {v!r} is not KEY=value")

    def build(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Build returns the environment, starting from base (or os.environ) if inherited."""
        env = dict(base if base is not None else os.environ) if self.inherit else {}
        for v in self.vars:
            key, _, value = v.partition("=")
            env[key] = value
        return env


@dataclass(frozen=True)
class RayLauncher:
    """RayLauncher starts the node as a Ray actor, on the cluster host named ``host``."""

    host: str = ""


@dataclass(frozen=True)
class Local:
    """Local starts the node as a local child process speaking over stdio."""


@dataclass(frozen=True)
class SSH:
    """SSH starts the node on a remote host over ssh (``destination`` as in ssh(1))."""

    destination: str = ""


@dataclass(frozen=True)
class Launcher:
    """Launcher is the union of available launchers; at most one may be set."""

    ray: RayLauncher | None = None
    local: Local | None = None
    ssh: SSH | None = None

    def validate(self, path: str) -> None:
        """Validate checks that at most one launcher is set."""
        set_ = [n for n in ("ray", "local", "ssh") if getattr(self, n) is not None]
        if len(set_) > 1:
            raise ValueError(f"only one launcher may be set, found {', '.join(set_)}")

    @property
    def name(self) -> str:
        """Name is the chosen launcher's name; Ray is the default."""
        for n in ("local", "ssh"):
            if getattr(self, n) is not None:
                return n
        return "ray"


@dataclass(frozen=True)
class Node:
    """Node is the information needed to launch a node; a hashable value."""

    id: str = ""
    platform: str = ""
    launcher: Launcher = field(default_factory=Launcher)
    netns: Netns = field(default_factory=Netns)
    env: Env = field(default_factory=Env)

    def validate(self, path: str) -> None:
        """Validate checks the node ID."""
        if not NODE_ID.fullmatch(self.id):
            raise ValueError(f"node id {self.id!r} must match {NODE_ID.pattern}")


class NodeRuntime:
    """NodeRuntime runs run trees for one node and holds its cleanup stack.

    It lives wherever the node lives: in the driver for the root, in a Ray
    actor, in a local or remote process.
    """

    def __init__(
        self,
        node_id: str,
        sink: Sink,
        env: dict[str, str] | None = None,
        nodes: dict[Node, NodeHandle] | None = None,
        hmac_key: bytes | None = None,
    ) -> None:
        self.rec = Recorder(node_id, sink)
        self.ctx = Context(
            node_id, self.rec, env if env is not None else dict(os.environ), nodes or {}, hmac_key=hmac_key
        )
        self._flusher: asyncio.Task[None] | None = None

    @property
    def node_id(self) -> str:
        """Node_id is the node's ID."""
        return self.ctx.node_id

    async def run(self, run: object, feedback: Feedback) -> Feedback:
        """Run executes a run tree on this node."""
        from antler.node.run import Run, execute

        assert isinstance(run, Run)
        if self._flusher is None:
            self._flusher = asyncio.ensure_future(self._flush_loop())
        return await execute(run, self.ctx, feedback)

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.rec.flush()

    async def cleanup(self) -> None:
        """Cleanup runs the cancelers in reverse order, then ships all data.

        A canceler that fails is recorded as an Error; the rest still run.
        """
        cancelers: list[Canceler] = self.ctx.cancelers
        while cancelers:
            canceler = cancelers.pop()
            try:
                await canceler()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                from antler.node.recorder import RunnerError

                if not isinstance(e, RunnerError):
                    self.rec.error(f"cleanup: {e}", "node")
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.rec.close()


class InprocHandle:
    """InprocHandle is a node run in the caller's process and event loop.

    Tests use it to exercise child runs without launching anything.
    """

    def __init__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle], hmac_key: bytes | None = None) -> None:
        self.node = node
        self.runtime = NodeRuntime(node.id, sink, node.env.build(), nodes, hmac_key)

    async def run(self, run: object, feedback: Feedback) -> Feedback:
        """Run executes a run tree on the node."""
        return await self.runtime.run(run, feedback)

    async def set_hmac_key(self, key: bytes) -> None:
        """Set_hmac_key gives the node the test's HMAC key."""
        self.runtime.ctx.hmac_key = key

    async def cleanup(self) -> None:
        """Cleanup runs the node's cancelers."""
        await self.runtime.cleanup()

    async def close(self) -> None:
        """Close does nothing: an in-process node has nothing to stop."""
