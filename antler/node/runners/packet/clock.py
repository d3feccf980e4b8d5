"""Flow clocks: a flow's base time and its relative times in ns.

Relative times are in the CLOCK_REALTIME domain so that the kernel's receive
timestamps (SO_TIMESTAMPNS) and our own send times share one clock, and so
that absolute times (``tinit + t_ns``) of the two ends of a flow compare for
one-way delay when their clocks agree. Send times are read from the
monotonic clock plus a fixed offset taken at the start, because the wall
clock's reading is slower and may step.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from antler.node.compat import UTC

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class FlowClock:
    """Gives times relative to a base time taken at construction."""

    def __init__(self) -> None:
        # The offset with the least gap between its two reads is the most accurate.
        best = None
        for _ in range(5):
            a = time.monotonic_ns()
            w = time.time_ns()
            b = time.monotonic_ns()
            if best is None or b - a < best[0]:
                best = (b - a, w - (a + b) // 2)
        assert best is not None
        self.mono_to_wall = best[1]
        # tinit is whole µs so that a datetime holds it exactly.
        self.tinit_ns = (time.time_ns() // 1000) * 1000
        self.tinit = _EPOCH + timedelta(microseconds=self.tinit_ns // 1000)
        self._mono_base = self.tinit_ns - self.mono_to_wall

    def from_mono(self, mono_ns: int) -> int:
        """Return the relative time of a time.monotonic_ns() reading."""
        return mono_ns - self._mono_base

    def from_wall(self, wall_ns: int) -> int:
        """Return the relative time of a CLOCK_REALTIME reading (e.g. a kernel timestamp)."""
        return wall_ns - self.tinit_ns

    def now(self) -> int:
        """Return the current relative time."""
        return time.monotonic_ns() - self._mono_base
