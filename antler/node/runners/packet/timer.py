"""The hybrid packet timer: sleep until shortly before a deadline, then spin.

asyncio's sleeps round up to whole milliseconds on Python 3.11, so packets
are released on a dedicated thread. ``time.sleep`` there is an absolute
``clock_nanosleep`` from CPython 3.11 on (a ``select`` timeout on the 3.9
and 3.10 a host may have), whose wake-up is late by the timer slack
(50 µs by default, set to 1 ns for the sender thread) plus the scheduling
latency, tens of µs on an idle machine and more on a busy one. So the thread
sleeps until shortly before the deadline and spins the rest, as irtt's
``hybrid`` timer does.

How long to spin adapts to the wake-ups seen: the spin covers the largest
recent oversleep with a margin, between :data:`MIN_SPIN_NS` and
:data:`MAX_SPIN_NS`. A fixed 300 µs spin costs 30% of a core at 1,000
packets/s, which on a shared 2-core machine itself delays the other threads
and processes that the measurement depends on.
"""

from __future__ import annotations

import ctypes
import time

MAX_SPIN_NS = 300_000
"""MAX_SPIN_NS is the longest the timer spins before a deadline."""
MIN_SPIN_NS = 50_000
"""MIN_SPIN_NS is the shortest the timer spins before a deadline."""
SPIN_MARGIN_NS = 30_000
"""SPIN_MARGIN_NS is added to the largest recent oversleep to get the spin time."""
DECAY = 0.98
"""DECAY is how fast the remembered largest oversleep fades, per sleep."""

_PR_SET_TIMERSLACK = 29

try:
    _libc: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover - non-Linux
    _libc = None


def set_timer_slack(ns: int = 1) -> bool:
    """Set the calling thread's timer slack (prctl PR_SET_TIMERSLACK); it reports success."""
    if _libc is None:
        return False
    return bool(_libc.prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0)


class HybridTimer:
    """Waits for absolute monotonic deadlines: sleep, then spin for the last stretch.

    Deadlines are absolute, so a late wake-up never shifts later packets.
    Use one timer per thread, with that thread's timer slack at 1 ns
    (:func:`set_timer_slack`).
    """

    def __init__(self, max_spin_ns: int = MAX_SPIN_NS, min_spin_ns: int = MIN_SPIN_NS) -> None:
        self.max_spin_ns = max_spin_ns
        self.min_spin_ns = min(min_spin_ns, max_spin_ns)
        self.spin_ns = max_spin_ns
        self._oversleep_ns = float(max_spin_ns)

    def wait_until(self, deadline_ns: int, max_spin_ns: int | None = None) -> int:
        """Block until time.monotonic_ns() reaches deadline_ns, and return that reading.

        ``max_spin_ns`` caps the spin below the learnt one for this wait.
        """
        mono = time.monotonic_ns
        now = mono()
        spin = self.spin_ns if max_spin_ns is None else min(self.spin_ns, max_spin_ns)
        if deadline_ns - now > spin:
            target = deadline_ns - spin
            time.sleep((target - now) / 1e9)
            now = mono()
            self.learn(now - target)
        while now < deadline_ns:
            now = mono()
        return now

    def learn(self, oversleep_ns: int) -> None:
        """Adapt the spin time to an oversleep seen (how late a sleep or select woke)."""
        self._oversleep_ns = max(float(oversleep_ns), self._oversleep_ns * DECAY)
        spin = int(self._oversleep_ns) + SPIN_MARGIN_NS
        self.spin_ns = min(max(spin, self.min_spin_ns), self.max_spin_ns)
