"""The sleep runner: waits for a duration, or until canceled."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from antler.node.feedback import Feedback
from antler.node.metric import Duration

if TYPE_CHECKING:
    from antler.node.context import Context


@dataclass(frozen=True)
class Sleep:
    """A runner that sleeps for the given Duration, or until canceled."""

    duration: Duration

    @classmethod
    def from_scalar(cls, value: Any) -> Sleep:
        """Accept ``sleep: 100ms``."""
        return cls(Duration.parse(value))

    def expected_seconds(self) -> float:
        """Return how long this runner should take."""
        return self.duration.seconds

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Sleep for the duration, or until cancelled."""
        await asyncio.sleep(self.duration.seconds)
        return {}
