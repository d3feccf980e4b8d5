"""Context: what a runner gets from the node it runs on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from antler.node.recorder import ErrorFactory, Recorder

if TYPE_CHECKING:
    from antler.node.feedback import Feedback
    from antler.node.node import Node
    from antler.node.run import Run

Canceler = Callable[[], Awaitable[None]]
"""Canceler stops something a runner left running (a server, a background command)."""


class NodeHandle(Protocol):
    """NodeHandle is a launched node, whatever launched it."""

    node: Node

    async def run(self, run: Run, feedback: Feedback) -> Feedback:
        """Run executes a run tree on the node and returns its feedback."""
        ...

    async def cleanup(self) -> None:
        """Cleanup runs the node's cancelers in reverse order and flushes its data."""
        ...

    async def close(self) -> None:
        """Close stops the node and removes what launching it created."""
        ...


@dataclass
class Context:
    """Context gives a runner its node's recorder, environment and cleanup stack."""

    node_id: str
    rec: Recorder
    env: dict[str, str]
    nodes: dict[Node, NodeHandle] = field(default_factory=dict)
    cancelers: list[Canceler] = field(default_factory=list)
    hmac_key: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def errors(self, tag: str) -> ErrorFactory:
        """Errors returns an ErrorFactory for the runner type tag."""
        return ErrorFactory(self.rec, tag)

    def on_cancel(self, canceler: Canceler) -> None:
        """On_cancel registers a canceler, run in reverse order when the test's tree completes."""
        self.cancelers.append(canceler)
