"""Context: what a runner gets from the node it runs on."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from antler.node.recorder import Recorder

Canceler = Callable[[], Awaitable[None]]
"""Canceler stops something a runner left running (a server, a background command)."""


@dataclass
class Context:
    """Gives a runner its node's recorder (tagged with the runner's type), environment and cleanup stack.

    ``cancelers`` is shared by every context of the node: each entry is the
    tag of the runner that registered it and the canceler, run in reverse
    order when the test's tree completes.
    """

    node_id: str
    rec: Recorder
    env: dict[str, str]
    cancelers: list[tuple[str, Canceler]] = field(default_factory=list)
    hmac_key: bytes | None = None

    def for_runner(self, tag: str) -> Context:
        """Return the context a runner of type tag runs with: its recorder tagged, the rest shared."""
        return replace(self, rec=self.rec.tagged(tag))

    def on_cancel(self, canceler: Canceler) -> None:
        """Register a canceler, run in reverse order when the test's tree completes.

        A canceler that fails is recorded as an Error under this context's tag.
        """
        self.cancelers.append((self.rec.tag, canceler))
