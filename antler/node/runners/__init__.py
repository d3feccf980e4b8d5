"""Runners: one module per runner type, each a small ``run(ctx, feedback)`` protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from antler.node.context import Context
    from antler.node.feedback import Feedback


class Runner(Protocol):
    """Runner is one unit of work in a run tree; it returns feedback for later runs."""

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Run does the work, raising on failure."""
        ...
