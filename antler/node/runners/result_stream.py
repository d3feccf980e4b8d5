"""The result_stream runner: chooses which items stream live and which wait for the end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from antler.node.feedback import Feedback
from antler.node.filter import MessageFilter, ResultStream

if TYPE_CHECKING:
    from antler.node.context import Context


@dataclass(frozen=True)
class ResultStreamRunner:
    """Sets the node's ResultStream for the items recorded after it."""

    include: MessageFilter | None = None
    exclude: MessageFilter | None = None

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Set the filters."""
        ctx.rec.result_stream = ResultStream(self.include, self.exclude)
        return {}
