"""DualPI2 (RFC 9332): the DualQ Coupled AQM, an L4S queue beside a Classic PI2 queue with coupled probabilities.

Follows RFC 9332 Appendix A (the DualPI2 pseudocode) as the Linux kernel's
sch_dualpi2 implements it, and takes the kernel's defaults:

- Classification at enqueue (Appendix A.1, ``dualpi2_enqueue``): a packet
  whose ECN field is ECT(1) or CE (``ecn & 1``) joins the L4S queue (L),
  the rest the Classic queue (C); ``any_ect`` sends ECT(0) to L too.
- The base probability p' every ``tupdate`` (Appendix A.1,
  ``dualpi2_update``, a PI controller):
  ``p' += alpha * (curq - target) + beta * (curq - prevq)``, the delays in
  seconds, p' kept within [0, 1]. ``curq`` is the larger of the two queues'
  head sojourns, as the kernel's ``calculate_probability`` takes it.
- The Classic queue drops (not-ECT) or marks (ECT(0)) with p_C = (p')^2,
  rolled as two independent draws below p' (Appendix A.1: "p' > max(rand,
  rand)"). The L queue marks with p_L = max(p_CL, step): the coupled
  p_CL = k * p' (k = ``coupling_factor``, 2), and the native step AQM, which
  marks every L packet whose sojourn exceeds ``step_thresh`` (1 ms; or
  whose queue is longer than N packets with ``step_thresh Np``).
- Overload (Appendix A.2): once k * p' exceeds 1 (``drop_on_overload``, the
  default), an L packet the Classic (squared) roll picks is dropped and every
  other one marked, and Classic ECT packets are dropped rather than marked.
  With ``overflow`` p' stops at 1 / k: L is never dropped, only marked, and
  the queue grows to its limit instead.
- No drop or mark from the PI probabilities while fewer than two MTU-sized
  packets are queued in all (the kernel's ``must_drop``); a full queue
  (``limit`` packets in all) tail-drops.
- The scheduler between the queues: RFC 9332 asks for a conditional
  priority scheduler that lets neither queue starve the other; this is the
  kernel's weighted round robin, a credit in bytes that an L packet raises
  by ``classic_protection`` % of its size and a C packet lowers by the rest,
  so that under load C gets ``classic_protection`` % (10 %) of the link.

Drops and marks happen at dequeue (``drop_dequeue``, the default) or the
probability drop at enqueue (``drop_enqueue``); the step always at dequeue.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from antler.rig.aqm.base import ECT1, NOT_ECT, DropSink, Packet, ignore_drop, mark_ce
from antler.rig.aqm.fifo import ETH_OVERHEAD_BYTES

DUALPI2_LIMIT = 10000
"""DUALPI2_LIMIT is the default limit in packets over both queues (the kernel's)."""
DUALPI2_TARGET_NS = 15_000_000
"""DUALPI2_TARGET_NS is the PI2 target queueing delay: 15 ms (RFC 9332 Appendix A.1)."""
DUALPI2_TUPDATE_NS = 16_000_000
"""DUALPI2_TUPDATE_NS is the PI2 update period: 16 ms (the kernel's default; RFC 9332 Appendix A.1's Tupdate)."""
DUALPI2_ALPHA = 0.16
"""DUALPI2_ALPHA is the integral gain: 0.16 Hz, the kernel's default (41/256 Hz in its units).

RFC 9332 Appendix A.1 derives it as 0.1 * Tupdate / RTT_max^2: 0.16 Hz for Tupdate 16 ms and RTT_max 100 ms.
"""
DUALPI2_BETA = 3.2
"""DUALPI2_BETA is the proportional gain: 3.2 Hz, the kernel's default (819/256 Hz; Appendix A.1's 0.3 / RTT_max)."""
DUALPI2_STEP_NS = 1_000_000
"""DUALPI2_STEP_NS is the L queue's step marking threshold: 1 ms of sojourn (the kernel's default)."""
DUALPI2_COUPLING = 2
"""DUALPI2_COUPLING is k, the coupling factor: p_CL = k * p' (RFC 9332 section 2.4, Appendix A.1)."""
DUALPI2_C_PROTECTION_PCT = 10
"""DUALPI2_C_PROTECTION_PCT is the Classic queue's share of the scheduler under load, in % (the kernel's)."""
MTU_BYTES = 1500
"""MTU_BYTES is the packet size below two of which in the queues no PI2 drop or mark happens (IP bytes)."""
NS_PER_S = 1e9


class DualPi2:
    """DualPI2 over an L4S and a Classic FIFO holding at most ``limit`` packets in all (RFC 9332; sch_dualpi2).

    Times are ns, ``alpha`` and ``beta`` Hz; ``step_thresh`` is (ns, False)
    or (packets, True). ``uniform`` returns a uniform random number in [0, 1)
    for each roll (a seeded generator by default; a test passes its own).
    ``p_prime`` is the base probability p'; counters: ``drops`` (PI2 and
    step drops), ``ecn_marks`` (PI2 marks), ``step_marks``, ``overlimit``.
    Raises ValueError naming a parameter out of range.
    """

    def __init__(
        self,
        limit: int = DUALPI2_LIMIT,
        target: int = DUALPI2_TARGET_NS,
        tupdate: int = DUALPI2_TUPDATE_NS,
        alpha: float = DUALPI2_ALPHA,
        beta: float = DUALPI2_BETA,
        coupling_factor: int = DUALPI2_COUPLING,
        step_thresh: tuple[int, bool] = (DUALPI2_STEP_NS, False),
        min_qlen_step: int = 0,
        classic_protection: int = DUALPI2_C_PROTECTION_PCT,
        drop_overload: bool = True,
        drop_early: bool = False,
        any_ect: bool = False,
        split_gso: bool = True,
        *,
        overhead_bytes: int = ETH_OVERHEAD_BYTES,
        uniform: Callable[[], float] | None = None,
        drop: DropSink = ignore_drop,
    ) -> None:
        for name, value in (("limit", limit), ("tupdate", tupdate), ("coupling_factor", coupling_factor)):
            if value < 1:
                raise ValueError(f"{name} {value} must be at least 1")
        for name, gain in (("alpha", alpha), ("beta", beta)):
            if not gain > 0:
                raise ValueError(f"{name} {gain} must be above 0 Hz")
        if not 0 <= classic_protection <= 100:
            raise ValueError(f"classic_protection {classic_protection} must be a percentage from 0 to 100")
        self.limit = limit
        self.target_ns = target
        self.tupdate_ns = tupdate
        self.alpha = alpha
        self.beta = beta
        self.k = coupling_factor
        self.step_thresh, self.step_in_packets = step_thresh
        self.min_qlen_step = min_qlen_step
        self.drop_overload = drop_overload
        self.drop_early = drop_early
        self.ecn_mask = 3 if any_ect else ECT1
        self.split_gso = split_gso  # a TUN device hands over single packets: nothing to split
        self.overhead_bytes = overhead_bytes
        self.uniform = uniform if uniform is not None else random.Random(9332).random
        self.drop = drop
        self._wc = classic_protection
        self._wl = 100 - classic_protection
        self._credit_init = (MTU_BYTES + overhead_bytes) * (self._wc - self._wl)
        self.credit = self._credit_init
        self._l: deque[tuple[Packet, bool]] = deque()  # (packet, whether the step applies to it)
        self._c: deque[Packet] = deque()
        self._bytes = 0
        self._next_update_ns: int | None = None
        self.p_prime = 0.0
        self.prevq_ns = 0
        self.drops = 0
        self.ecn_marks = 0
        self.step_marks = 0
        self.overlimit = 0

    # --- the PI2 controller ------------------------------------------------------------------------------------

    def head_sojourns_ns(self, now_ns: int) -> tuple[int, int]:
        """Return the sojourn at now_ns of the L queue's and the C queue's head packets (0 for an empty queue)."""
        ql = now_ns - self._l[0][0].t_enqueue_ns if self._l else 0
        qc = now_ns - self._c[0].t_enqueue_ns if self._c else 0
        return ql, qc

    def update(self, now_ns: int) -> None:
        """Run one Tupdate step of the PI controller at now_ns: RFC 9332 Appendix A.1's ``dualpi2_update``."""
        curq = max(self.head_sojourns_ns(now_ns))
        p = self.p_prime
        p += self.alpha * (curq - self.target_ns) / NS_PER_S + self.beta * (curq - self.prevq_ns) / NS_PER_S
        p = min(max(p, 0.0), 1.0)
        if not self.drop_overload:
            p = min(p, 1.0 / self.k)  # overflow: keep p_CL at most 1, so L stays loss-free until the limit
        self.p_prime = p
        self.prevq_ns = curq

    def _catch_up(self, now_ns: int) -> None:
        """Run the updates due by now_ns, at t0 + k * tupdate (t0 the first call's time)."""
        if self._next_update_ns is None:
            self._next_update_ns = now_ns + self.tupdate_ns
        while now_ns >= self._next_update_ns:
            self.update(self._next_update_ns)
            self._next_update_ns += self.tupdate_ns

    @property
    def p_c(self) -> float:
        """The Classic queue's drop or mark probability, (p')^2."""
        return self.p_prime**2

    @property
    def p_cl(self) -> float:
        """The coupled L4S marking probability k * p' (above 1 means overload)."""
        return self.k * self.p_prime

    def _roll(self, p: float) -> bool:
        return self.uniform() < p

    def _must_drop(self, pkt: Packet, in_l: bool) -> bool:
        """Return whether the PI2 probabilities drop pkt, marking it where they mark (the kernel's must_drop)."""
        if self._bytes < 2 * MTU_BYTES:
            return False
        p = self.p_prime
        overload = self.p_cl > 1.0
        if in_l:
            if overload:  # Appendix A.2: the Classic (squared) drop applies to L too, or overflow marks all
                if self.drop_overload and self._roll(p) and self._roll(p):
                    return True
                self._mark(pkt)
            elif self._roll(self.p_cl):
                self._mark(pkt)
            return False
        if self._roll(p) and self._roll(p):  # p' > max(rand, rand): probability (p')^2
            if overload or pkt.ecn == NOT_ECT:
                return True
            self._mark(pkt)
        return False

    def _mark(self, pkt: Packet) -> None:
        if mark_ce(pkt):
            self.ecn_marks += 1

    # --- the queue ---------------------------------------------------------------------------------------------

    def enqueue(self, pkt: Packet, now_ns: int) -> bool:
        """Take pkt into the L queue (ECT(1), CE) or the C queue; return False at the limit (or a drop_enqueue drop)."""
        self._catch_up(now_ns)
        if len(self._l) + len(self._c) >= self.limit:
            self.overlimit += 1
            return False
        in_l = bool(pkt.ecn & self.ecn_mask)
        if self.drop_early and self._must_drop(pkt, in_l):
            self.drops += 1
            return False
        if in_l:
            self._l.append((pkt, len(self._l) >= self.min_qlen_step))
        else:
            self._c.append(pkt)
        self._bytes += pkt.length
        return True

    def dequeue(self, now_ns: int) -> Packet | None:
        """Return the packet to send at now_ns after the drops (to ``drop``) and marks, or None when both are empty."""
        self._catch_up(now_ns)
        while self._l or self._c:
            if self._l and (not self._c or self.credit <= 0):
                pkt, apply_step = self._l.popleft()
                in_l = True
                change = self._wc * (pkt.length + self.overhead_bytes) if self._c else 0
            else:
                pkt, apply_step = self._c.popleft(), False
                in_l = False
                change = -self._wl * (pkt.length + self.overhead_bytes) if self._l else 0
            self._bytes -= pkt.length
            pi2_drop = not self.drop_early and self._must_drop(pkt, in_l)
            if pi2_drop or (in_l and self._step_drops(pkt, apply_step, now_ns)):
                self.drops += 1
                self.drop(pkt, now_ns)
                continue
            self.credit += change
            return pkt
        self.credit = self._credit_init
        return None

    def _step_drops(self, pkt: Packet, apply_step: bool, now_ns: int) -> bool:
        """Mark an L packet above the step threshold; return True for one that cannot be marked (not-ECT)."""
        qdelay = len(self._l) if self.step_in_packets else pkt.sojourn_ns(now_ns)
        if apply_step and qdelay > self.step_thresh:
            if pkt.ecn == NOT_ECT:
                return True
            if mark_ce(pkt):
                self.step_marks += 1
        return False

    @property
    def queue_lengths(self) -> tuple[int, int]:
        """The packets held now in the L4S queue and in the Classic queue."""
        return len(self._l), len(self._c)

    @property
    def backlog_packets(self) -> int:
        """The packets held now in both queues."""
        return len(self._l) + len(self._c)

    @property
    def backlog_bytes(self) -> int:
        """The bytes held now in both queues (IP lengths)."""
        return self._bytes
