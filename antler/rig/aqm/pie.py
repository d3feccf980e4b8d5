"""PIE (RFC 8033): drop or mark at enqueue with a probability a PI controller of the queueing delay sets.

Follows RFC 8033's basic pseudocode (Appendix A) and sections:

- Random dropping at enqueue (section 4.1): an arriving packet is dropped
  with probability ``drop_prob``, except while the burst allowance lasts,
  while the queue is short (``qdelay_old < target / 2`` and
  ``drop_prob < 0.2``) or holds at most two mean-sized packets.
- The drop probability (section 4.2), every ``tupdate``:
  ``p = alpha * (qdelay - target) + beta * (qdelay - qdelay_old)``
  with the delays in seconds, scaled down by section 4.2's auto-tuning table
  while ``drop_prob`` is small (``/2048`` below 0.000001 ... ``/2`` below
  0.1); the step is capped at 0.02 once ``drop_prob`` is 0.1 or more (the cap
  drop adjustment, section 5.5); ``drop_prob`` decays by 0.98 when both the
  delay and the previous one are 0, and stays within [0, 1].
- The queueing delay (section 4.3): the **timestamp variant** -- the sojourn
  of the packet last dequeued, 0 once the queue is empty (as the kernel's
  sch_pie without ``dq_rate_estimator``, its default); not the departure-rate
  estimate with Little's law.
- Burst tolerance (section 4.4): no early drop until ``max_burst`` (150 ms)
  of updates have passed since the allowance was last full; it is refilled
  while ``drop_prob`` is 0 and both delays are below ``target / 2``.
- ECN (section 5.1): with ``ecn`` an ECN-capable packet the drop picked is
  marked CE and queued instead while ``drop_prob`` is below 10 %.

Updates run at ``t0 + k * tupdate``, t0 being the first call's time; each
enqueue and dequeue first runs the updates due by its time, so an idle
queue's probability decays as the kernel's timer would decay it.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from antler.rig.aqm.base import DropSink, Packet, ignore_drop, mark_ce
from antler.rig.aqm.fifo import PacketFifo

PIE_TARGET_NS = 15_000_000
"""PIE_TARGET_NS is QDELAY_REF, the target queueing delay: 15 ms (RFC 8033 section 4.2, the kernel's default)."""
PIE_TUPDATE_NS = 15_000_000
"""PIE_TUPDATE_NS is T_UPDATE, the drop probability's update period: 15 ms (RFC 8033 section 4.2)."""
PIE_ALPHA = 0.125
"""PIE_ALPHA is the integral gain in 1/s (RFC 8033 section 4.2; tc writes it in sixteenths: ``alpha 2``)."""
PIE_BETA = 1.25
"""PIE_BETA is the proportional gain in 1/s (RFC 8033 section 4.2; tc writes it in sixteenths: ``beta 20``)."""
PIE_LIMIT = 1000
"""PIE_LIMIT is pie's default limit in packets (the kernel's)."""
PIE_MAX_BURST_NS = 150_000_000
"""PIE_MAX_BURST_NS is MAX_BURST, the burst allowance: 150 ms (RFC 8033 section 4.4)."""
MAX_ECNTH = 0.1
"""MAX_ECNTH is the drop probability below which an ECN-capable packet is marked, not dropped (RFC 8033 section 5.1)."""
MEAN_PKTSIZE_BYTES = 1500
"""MEAN_PKTSIZE_BYTES is MEAN_PKTSIZE: with at most two of these queued PIE never drops early (RFC 8033 section 4.1)."""
AUTO_TUNING = ((0.000001, 2048), (0.00001, 512), (0.0001, 128), (0.001, 32), (0.01, 8), (0.1, 2))
"""AUTO_TUNING is section 4.2's table: below each drop probability, the step p is divided by the factor."""
NS_PER_S = 1e9


class Pie(PacketFifo):
    """PIE on one FIFO of at most ``limit`` packets (RFC 8033; the kernel's sch_pie with its defaults).

    Times are ns; ``alpha`` and ``beta`` in 1/s (0.125 and 1.25; tc's
    ``alpha 2 beta 20`` in sixteenths); ``uniform`` returns a uniform random
    number in [0, 1) for each drop decision (a seeded generator by default; a
    test passes its own). ``drop_prob``, ``qdelay_ns``, ``qdelay_old_ns`` and
    ``burst_allowance_ns`` are the RFC's state variables; ``early_drops``
    counts packets dropped by the probability, ``overlimit`` those refused at
    a full queue, ``marks`` those marked CE instead of an early drop. Raises
    ValueError naming a parameter out of range.
    """

    def __init__(
        self,
        limit: int = PIE_LIMIT,
        target: int = PIE_TARGET_NS,
        tupdate: int = PIE_TUPDATE_NS,
        alpha: float = PIE_ALPHA,
        beta: float = PIE_BETA,
        ecn: bool = False,
        *,
        max_burst_ns: int = PIE_MAX_BURST_NS,
        uniform: Callable[[], float] | None = None,
        drop: DropSink = ignore_drop,
    ) -> None:
        for name, value in (("limit", limit), ("target", target), ("tupdate", tupdate)):
            if value < 1:
                raise ValueError(f"{name} {value} must be above 0")
        for name, gain in (("alpha", alpha), ("beta", beta)):
            if not 0 <= gain <= 2:
                raise ValueError(f"{name} {gain} must be within 0 and 2 (tc: 0 to 32 sixteenths)")
        self.limit = limit
        self.target_ns = target
        self.tupdate_ns = tupdate
        self.alpha = alpha
        self.beta = beta
        self.ecn = ecn
        self.max_burst_ns = max_burst_ns
        self.uniform = uniform if uniform is not None else random.Random(8033).random
        self.drop = drop
        super().__init__()
        self._next_update_ns: int | None = None
        self.drop_prob = 0.0
        self.qdelay_ns = 0
        self.qdelay_old_ns = 0
        self.burst_allowance_ns = max_burst_ns
        self.early_drops = 0
        self.overlimit = 0
        self.marks = 0

    def update_drop_prob(self) -> None:
        """Run one T_UPDATE step: RFC 8033 section 4.2's ``calculate_drop_prob`` (Appendix A), with 5.5's cap."""
        qdelay_s = self.qdelay_ns / NS_PER_S
        old_s = self.qdelay_old_ns / NS_PER_S
        p = self.alpha * (qdelay_s - self.target_ns / NS_PER_S) + self.beta * (qdelay_s - old_s)
        for below, factor in AUTO_TUNING:
            if self.drop_prob < below:
                p /= factor
                break
        if self.drop_prob >= 0.1 and p > 0.02:
            p = 0.02  # section 5.5: at most 2 % more per update once the probability is 10 % or more
        self.drop_prob += p
        if self.qdelay_ns == 0 and self.qdelay_old_ns == 0:
            self.drop_prob *= 0.98  # congestion gone: decay
        self.drop_prob = min(max(self.drop_prob, 0.0), 1.0)
        self.qdelay_old_ns = self.qdelay_ns
        self.burst_allowance_ns = max(0, self.burst_allowance_ns - self.tupdate_ns)

    def _catch_up(self, now_ns: int) -> None:
        """Run the T_UPDATE steps due by now_ns."""
        if self._next_update_ns is None:
            self._next_update_ns = now_ns + self.tupdate_ns
        while now_ns >= self._next_update_ns:
            self.update_drop_prob()
            self._next_update_ns += self.tupdate_ns

    def _drop_early(self) -> bool:
        """Return whether an arriving packet is to be dropped: RFC 8033 section 4.1's ``drop_early``."""
        if self.burst_allowance_ns > 0:
            return False
        if (self.qdelay_old_ns < self.target_ns // 2 and self.drop_prob < 0.2) or (
            self._bytes <= 2 * MEAN_PKTSIZE_BYTES
        ):
            return False  # safeguard: stay work conserving with a short queue
        return self.uniform() < self.drop_prob

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt at now_ns, or return False: a full queue (tail drop) or PIE's random early drop.

        With ``ecn``, a packet PIE picks to drop while ``drop_prob`` is below
        10 % is marked CE and taken if it is ECN-capable (RFC 8033 section 5.1).
        """
        self._catch_up(now_ns)
        half_target = self.target_ns // 2
        if self.drop_prob == 0 and self.qdelay_ns < half_target and self.qdelay_old_ns < half_target:
            self.burst_allowance_ns = self.max_burst_ns  # section 4.4: refill while uncongested
        if len(self._q) >= self.limit:
            self.overlimit += 1
            return False
        if self._drop_early():
            if not (self.ecn and self.drop_prob < MAX_ECNTH and mark_ce(pkt)):
                self.early_drops += 1
                return False
            self.marks += 1
        self._push(pkt)
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the oldest packet at now_ns, or None when empty; its sojourn is PIE's queueing delay (section 4.3)."""
        self._catch_up(now_ns)
        pkt = self._pop()
        self.qdelay_ns = now_ns - pkt.t_enqueue_ns if pkt is not None and self._q else 0
        return pkt
