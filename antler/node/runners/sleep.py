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
    """Sleep is a runner that sleeps for the given Duration, or until canceled."""

    duration: Duration

    @classmethod
    def from_scalar(cls, value: Any) -> Sleep:
        """From_scalar accepts ``sleep: 100ms``."""
        return cls(Duration.parse(value))

    def expected_seconds(self) -> float:
        """Expected_seconds is how long this runner should take."""
        return self.duration.seconds

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Run sleeps."""
        await asyncio.sleep(self.duration.seconds)
        return {}
