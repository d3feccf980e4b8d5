"""The run tree: Serial, Parallel, Schedule, Child and runners, its nodes, and the stop scopes of its runs.

This module is the tree as data and what launchers implement to run it on
a node: :class:`Run` and its parts, the :class:`NodeHandle` protocol and its
optional capabilities, :func:`node_tree` (which node launches which), and the
:class:`StopScope` that says why runs are being canceled, which launchers read
(:func:`cancel_reason`) to pass a cancel on to another node. How the tree
executes is :mod:`antler.node.execution`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

from antler.node.feedback import Feedback
from antler.node.metric import Duration
from antler.node.nodespec import Node
from antler.node.runners import DrivesFlow, Estimates, Runner
from antler.node.runners.packet.client import PacketClient
from antler.node.runners.packet.server import PacketServer
from antler.node.runners.result_stream import ResultStreamRunner
from antler.node.runners.sleep import Sleep
from antler.node.runners.stream import StreamClient, StreamServer
from antler.node.runners.sysinfo import SysInfoRunner
from antler.node.runners.system import System
from antler.node.spec import set_fields

COMBINATORS = ("serial", "parallel", "schedule", "child")


@dataclass(frozen=True)
class Run:
    """A node of the run tree: exactly one of its fields set, or none (does nothing)."""

    serial: tuple[Run, ...] | None = None
    parallel: tuple[Run, ...] | None = None
    schedule: Schedule | None = None
    child: Child | None = None
    # Runners: the field name is the runner type, its tag in logs and errors.
    sleep: Sleep | None = None
    system: System | None = None
    result_stream: ResultStreamRunner | None = None
    stream_server: StreamServer | None = None
    stream_client: StreamClient | None = None
    packet_server: PacketServer | None = None
    packet_client: PacketClient | None = None
    sysinfo: SysInfoRunner | None = None

    def validate(self) -> None:
        """Raise ValueError when more than one field is set."""
        set_ = set_fields(self)
        if len(set_) > 1:
            choices = ", ".join(f.name for f in fields(Run))
            raise ValueError(f"a run has exactly one of {choices}; found {', '.join(set_)}")

    def runner(self) -> tuple[str, Runner] | None:
        """Return the runner type (its tag) and the runner, if this run is a runner."""
        for name in set_fields(self):
            if name not in COMBINATORS:
                return name, getattr(self, name)
        return None

    def walk(self, path: str = "run") -> Iterator[tuple[str, Run]]:
        """Yield every run in the tree with its path, depth first."""
        yield path, self
        for name, sub in (("serial", self.serial), ("parallel", self.parallel)):
            for i, r in enumerate(sub or ()):
                yield from r.walk(f"{path}.{name}[{i}]")
        if self.schedule is not None:
            for i, r in enumerate(self.schedule.run):
                yield from r.walk(f"{path}.schedule.run[{i}]")
        if self.child is not None:
            yield from self.child.as_run().walk(f"{path}.child")

    def nodes(self) -> list[Node]:
        """List the distinct child nodes in the tree, in order of appearance."""
        seen: dict[Node, None] = {}
        for _, r in self.walk():
            if r.child is not None and r.child.node is not None:
                seen.setdefault(r.child.node, None)
        return list(seen)

    def flows(self, kind: str = "") -> dict[str, str]:
        """Map the ID of every flow the tree drives (its stream and packet clients') to its kind, sorted by ID.

        The kind is ``stream`` or ``packet``, as flows.parquet's ``kind``
        column says it; with ``kind``, only the flows of that kind. This is
        the one list of a test's flows: the config checks the flows its
        reports name against it, the analysis gives each a row, and the
        executor records those of runs that never start as cancelled.
        """
        found: dict[str, str] = {}
        for _, r in self.walk():
            runner = r.runner()
            if runner is not None and isinstance(runner[1], DrivesFlow) and kind in ("", runner[1].flow_kind):
                found.setdefault(runner[1].flow, runner[1].flow_kind)
        return dict(sorted(found.items()))

    def children(self) -> Iterator[Child]:
        """Yield the child runs this run reaches without passing through another child run."""
        if self.child is not None:
            yield self.child
            return
        for sub in (*(self.serial or ()), *(self.parallel or ()), *(self.schedule.run if self.schedule else ())):
            yield from sub.children()

    def expected_seconds(self) -> float:
        """Estimate how long the tree runs, for progress display."""
        if self.serial is not None:
            return sum(r.expected_seconds() for r in self.serial)
        if self.parallel is not None:
            return max((r.expected_seconds() for r in self.parallel), default=0.0)
        if self.schedule is not None:
            return self.schedule.expected_seconds()
        if self.child is not None:
            return self.child.as_run().expected_seconds()
        found = self.runner()
        if found is not None and isinstance(found[1], Estimates):
            return float(found[1].expected_seconds())
        return 0.0


@dataclass(frozen=True)
class Schedule:
    """Lists runs to execute with waits between them.

    Waits cycle through ``wait`` (or are drawn from it at random); with
    ``wait_first`` the first run waits too; with ``sequential`` each run
    finishes before the next wait starts, otherwise runs overlap.
    """

    run: tuple[Run, ...] = ()
    wait: tuple[Duration, ...] = ()
    wait_first: bool = False
    random: bool = False
    sequential: bool = False
    seed: int | None = None

    def waits(self) -> Iterator[float]:
        """Yield the wait before each run, in seconds."""
        rng = random.Random(self.seed)
        for i in range(len(self.run)):
            if (i == 0 and not self.wait_first) or not self.wait:
                yield 0.0
            elif self.random:
                yield rng.choice(self.wait).seconds
            else:
                yield self.wait[(i - (0 if self.wait_first else 1)) % len(self.wait)].seconds

    def expected_seconds(self) -> float:
        """Estimate the schedule's run time."""
        if self.random and self.wait:
            mean = sum(w.seconds for w in self.wait) / len(self.wait)
            waits = [mean if i or self.wait_first else 0.0 for i in range(len(self.run))]
        else:
            waits = list(self.waits())
        if self.sequential:
            return sum(waits) + sum(r.expected_seconds() for r in self.run)
        start, end = 0.0, 0.0
        for w, r in zip(waits, self.run):
            start += w
            end = max(end, start + r.expected_seconds())
        return end


@dataclass(frozen=True)
class Child(Run):
    """A run to execute on another node (``node``), beside its own run keys."""

    node: Node | None = None

    def validate(self) -> None:
        """Raise ValueError when the node is missing or more than one run key is set.

        A node launched by a local or SSH node cannot be a Ray node: the node
        process is not in the Ray cluster (and does not import Ray).
        """
        if self.node is None:
            raise ValueError("child needs a node")
        set_ = [f for f in set_fields(self) if f != "node"]
        if len(set_) > 1:
            raise ValueError(f"a child run has exactly one of its run keys; found {', '.join(set_)}")
        if self.node.launcher.name in PROCESS_LAUNCHERS:
            for _, r in self.as_run().walk("run"):
                if r.child is not None and r.child.node is not None and r.child.node.launcher.name == "ray":
                    raise ValueError(
                        f"node {r.child.node.id!r} runs under {self.node.launcher.name} node {self.node.id!r}, "
                        "so it cannot be a ray node: give it a local or ssh launcher, or move it out"
                    )

    def as_run(self) -> Run:
        """Return the run to execute on the child node."""
        return Run(**{f.name: getattr(self, f.name) for f in fields(Run)})


class NodeHandle(Protocol):
    """A launched node, whatever launched it (Ray, a thread, a local or remote process)."""

    node: Node

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Execute a run tree on the node and return its feedback, raising RunnerError if it failed."""
        ...

    async def cleanup(self) -> None:
        """Run the node's cancelers in reverse order and flush its data."""
        ...

    async def close(self) -> None:
        """Stop the node and remove what launching it created."""
        ...


@runtime_checkable
class TakesKey(Protocol):
    """A node handle that accepts the test's HMAC key (antler's ``SetKeyer``)."""

    async def set_hmac_key(self, key: bytes) -> None:
        """Give the node the key before any run starts."""
        ...


@runtime_checkable
class Losable(Protocol):
    """A node handle that can tell when its node is lost (its process or host died).

    ``lost`` is None until the handle watches its node, then a future that
    completes with a message naming the node when it is lost (the Error is
    already recorded by then).
    """

    lost: asyncio.Future[str] | None


@runtime_checkable
class LaunchesNodes(Protocol):
    """A node handle whose node launches the nodes of its own child runs (local and SSH nodes).

    The root calls it after launching the node, before any run starts.
    """

    async def launch_nodes(self, tree: NodeTree) -> None:
        """Have the node launch the tree's nodes, raising RunnerError (already recorded) if any failed."""
        ...


PROCESS_LAUNCHERS = ("local", "ssh")
"""PROCESS_LAUNCHERS name the launchers whose node is a process of its own that launches its children itself."""

NodeTree = dict[Node, "NodeTree"]
"""NodeTree maps each node a node launches to the tree that node launches in turn (antler's node tree)."""


def node_tree(run: Run) -> NodeTree:
    """Return the nodes a tree's root launches, each with the nodes it launches itself.

    As in antler, a local or SSH node launches the nodes of the child runs
    under it: a local node under an SSH node runs on the SSH node's host. Ray
    nodes are all launched by the root, wherever they are nested (an actor
    reaches every other), and a Ray node launches the local and SSH nodes
    under it, on its host.
    """
    top: NodeTree = {}

    def visit(r: Run, here: NodeTree) -> None:
        for child in r.children():
            node = child.node
            assert node is not None
            sub = (top if node.launcher.name == "ray" else here).setdefault(node, {})
            visit(child.as_run(), sub)

    visit(run, top)
    return top


Children = Mapping[Node, NodeHandle]
"""Children is the node table of a test: the handle of every node its child runs name."""


TIMED_OUT = "the test timed out after"
"""TIMED_OUT begins the reason a test's runs stop at its timeout (a text: it crosses to other nodes as one)."""


def timed_out(reason: str) -> bool:
    """Report whether a cancel reason is the test's timeout: what was still running then was stuck."""
    return reason.startswith(TIMED_OUT)


@dataclass
class StopScope:
    """Says why the runs under it are stopping: the first failure among siblings, or why the test ends.

    Each parallel run and each node's run has one; the nearest with a reason
    wins (:func:`cancel_reason`).
    """

    reason: str = ""
    parent: StopScope | None = None

    def stop(self, reason: str) -> None:
        """Record why the runs under the scope stop, unless a reason was recorded first."""
        if not self.reason:
            self.reason = reason


_SCOPE: ContextVar[StopScope | None] = ContextVar("antler_stop_scope", default=None)


def cancel_reason() -> str:
    """Return why the calling task's runs are being canceled, from the nearest scope that knows."""
    scope = _SCOPE.get()
    while scope is not None:
        if scope.reason:
            return scope.reason
        scope = scope.parent
    return "the run was canceled"


def enter_scope(scope: StopScope) -> object:
    """Make scope the calling task's stop scope; pass the token to :func:`leave_scope`."""
    return _SCOPE.set(scope)


def leave_scope(token: object) -> None:
    """Restore the stop scope before :func:`enter_scope`."""
    _SCOPE.reset(token)  # type: ignore[arg-type]


def current_scope() -> StopScope | None:
    """Return the calling task's stop scope, if any."""
    return _SCOPE.get()
