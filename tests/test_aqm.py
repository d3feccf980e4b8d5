"""The userspace bottleneck's queue disciplines, driven packet by packet on a fake clock (no network)."""

from __future__ import annotations

import itertools
import math
import random
import shutil
import statistics
from pathlib import Path

import pytest

from antler.rig.aqm import (
    CE,
    ECT0,
    ECT1,
    NOT_ECT,
    Packet,
    QueueDiscipline,
    make_queue,
    parse_size_bytes,
    parse_time_ns,
    userspace_kinds,
)
from antler.rig.aqm.dualpi2 import DualPi2
from antler.rig.aqm.fifo import BFIFO_LIMIT, Bfifo, Pfifo
from antler.rig.aqm.pie import Pie

MS = 1_000_000
US = 1_000


def pkt(t_ns: int, length: int = 1500, ecn: int = NOT_ECT, flow: object = ("tcp", 1)) -> Packet:
    """Return a packet arriving at t_ns."""
    return Packet(b"", length, ecn, flow, t_ns)


class Drops:
    """A drop sink that keeps (time, packet) of each drop."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, Packet]] = []

    def __call__(self, p: Packet, now_ns: int) -> None:
        self.seen.append((now_ns, p))

    @property
    def times(self) -> list[int]:
        return [t for t, _ in self.seen]


# --- pfifo, bfifo ---------------------------------------------------------------------------------------------


def test_pfifo_tail_drops_above_its_limit_and_keeps_order() -> None:
    q = Pfifo(limit=3)
    taken = [q.enqueue(pkt(i, length=100 + i), i) for i in range(5)]
    assert taken == [True, True, True, False, False]
    assert (q.backlog_packets, q.backlog_bytes) == (3, 100 + 101 + 102)
    assert [p.length for p in iter(lambda: q.dequeue(10), None)] == [100, 101, 102]
    assert (q.backlog_packets, q.backlog_bytes) == (0, 0)
    assert q.dequeue(11) is None


def test_bfifo_counts_the_ethernet_header_against_its_byte_limit() -> None:
    # 3 * (1500 + 14) = 4542 fits in 4542; a fourth does not, nor would 3 * 1500 + 1514 = 6014 > 4542.
    q = Bfifo(limit=3 * 1514)
    assert [q.enqueue(pkt(i), i) for i in range(4)] == [True, True, True, False]
    assert q.backlog_bytes == 4500
    q.dequeue(5)
    assert q.enqueue(pkt(6, length=1400), 6)
    assert not q.enqueue(pkt(7, length=100), 7)  # 1514 * 2 + 1414 + 114 = 4556 > 4542


def test_fifos_satisfy_the_protocol() -> None:
    assert isinstance(Pfifo(), QueueDiscipline)
    assert isinstance(Bfifo(), QueueDiscipline)


# --- make_queue: tc's spelling ---------------------------------------------------------------------------------


def test_make_queue_reads_tc_spelling_and_kernel_defaults() -> None:
    q = make_queue("pfifo")
    assert isinstance(q, Pfifo) and q.limit == 1000
    q = make_queue("pfifo limit 50")
    assert isinstance(q, Pfifo) and q.limit == 50
    q = make_queue("pfifo", limit_default=200)  # rig.limit applies to a limit in packets
    assert isinstance(q, Pfifo) and q.limit == 200
    q = make_queue("pfifo limit 7", limit_default=200)  # the text's own limit wins
    assert isinstance(q, Pfifo) and q.limit == 7
    q = make_queue("bfifo", limit_default=200)  # ...but not to bfifo's limit in bytes
    assert isinstance(q, Bfifo) and q.limit == BFIFO_LIMIT == 1_514_000
    q = make_queue("bfifo limit 64k")
    assert isinstance(q, Bfifo) and q.limit == 65536  # tc's k is 1024


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", ["empty"]),
        ("sfq", ["'sfq'", "pfifo", "py:MODULE:CLASS"]),
        ("pfifo limt 5", ["'limt'", "pfifo [limit N]"]),
        ("pfifo limit", ["limit needs a value", "limit N"]),
        ("pfifo limit many", ["'many'", "whole number"]),
        ("pfifo limit 0", ["'0'", "at least 1"]),
        ("bfifo limit 2MB/s", ["'2MB/s'", "64k"]),
    ],
)
def test_make_queue_names_the_bad_word_and_what_is_accepted(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        make_queue(text)
    for w in words:
        assert w in str(e.value)


def test_tc_units() -> None:
    assert parse_time_ns("5ms") == 5 * MS
    assert parse_time_ns("5000us") == 5 * MS
    assert parse_time_ns("15msec") == 15 * MS
    assert parse_time_ns("1s") == parse_time_ns("1sec") == 1000 * MS
    with pytest.raises(ValueError, match="no unit"):
        parse_time_ns("5000")
    assert parse_size_bytes("1514") == 1514
    assert parse_size_bytes("32mb") == parse_size_bytes("32M") == 32 << 20
    assert parse_size_bytes("8kbit") == 1024
    with pytest.raises(ValueError):
        parse_size_bytes("5 parsecs")


def test_userspace_kinds_lists_each_grammar() -> None:
    kinds = userspace_kinds()
    assert kinds["pfifo"] == "pfifo [limit N]"
    assert kinds["bfifo"] == "bfifo [limit BYTES]"
    assert "py" in kinds


# --- the user's own discipline ----------------------------------------------------------------------------------

EXAMPLE = Path(__file__).parent.parent / "antler" / "rig" / "aqm" / "step_marker.py"


def test_a_users_step_marker_loads_from_the_config_dir(tmp_path: Path) -> None:
    shutil.copy(EXAMPLE, tmp_path / "mystep.py")
    assert len(EXAMPLE.read_text().splitlines()) < 40
    drops = Drops()
    q = make_queue("py:mystep:StepMarker threshold=2ms limit=3", drop=drops, config_dir=tmp_path)
    assert type(q).__module__ == "antler_user_aqm.mystep"
    a, b, c = pkt(0, ecn=ECT1), pkt(0, ecn=NOT_ECT), pkt(1 * MS, ecn=ECT0)
    assert [q.enqueue(p, p.t_enqueue_ns) for p in (a, b, c, pkt(1 * MS))] == [True, True, True, False]
    assert (q.backlog_packets, q.backlog_bytes) == (3, 4500)
    # At 2.5 ms a and b waited 2.5 ms > 2 ms: a is marked CE, b (not ECT) is dropped; c waited 1.5 ms.
    assert q.dequeue(2500 * US) is a and a.ecn == CE and a.marked
    assert q.dequeue(2500 * US) is c and c.ecn == ECT0 and not c.marked
    assert drops.seen == [(2500 * US, b)]
    assert q.dequeue(3 * MS) is None


def test_a_users_class_from_an_importable_module() -> None:
    q = make_queue("py:antler.rig.aqm.step_marker:StepMarker")
    assert isinstance(q, QueueDiscipline)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("py:nosuchmodule:X", ["nosuchmodule", "no nosuchmodule.py in", "not importable"]),
        ("py:mystep:Nope", ["has no class Nope"]),
        ("py:mystep:StepMarker thresh=1ms", ["unexpected keyword", "thresh"]),
        ("py:mystep:StepMarker threshold", ["'threshold' is not key=value"]),
        ("py:mystep", ["not py:MODULE:CLASS"]),
        ("py:mystep:NotAQueue", ["is not a queue discipline", "dequeue"]),
    ],
)
def test_a_bad_user_class_is_a_clear_error(tmp_path: Path, text: str, words: list[str]) -> None:
    shutil.copy(EXAMPLE, tmp_path / "mystep.py")
    with (tmp_path / "mystep.py").open("a") as f:
        f.write(
            "\n\nclass NotAQueue:\n    def __init__(self, drop):\n        pass\n\n    def enqueue(self, p, t):\n        pass\n"
        )
    with pytest.raises(ValueError) as e:
        make_queue(text, config_dir=tmp_path)
    for w in words:
        assert w in str(e.value)


# --- CoDel (RFC 8289) -------------------------------------------------------------------------------------------


def overload(q: QueueDiscipline, end_ms: int, ecn: int = NOT_ECT) -> list[tuple[int, Packet]]:
    """Drive q at twice its service rate: a 1500-byte arrival every 0.5 ms, a dequeue every 1 ms, to end_ms.

    Return (dequeue time in ns, packet) of each packet sent.
    """
    sent = []
    for step in range(2 * end_ms):
        t = step * 500 * US
        q.enqueue(pkt(t, ecn=ecn), t)
        if step % 2 == 0:
            p = q.dequeue(t)
            if p is not None:
                sent.append((t, p))
    return sent


def codel_drop_times_ms(first_drop_ms: int, interval_ms: float, end_ms: int, count: int = 1) -> list[int]:
    """Return the dequeue times (a 1 ms grid) CoDel drops at under constant overload, by RFC 8289 section 5.5.

    The first drop comes at first_drop_ms with count set to ``count`` (1 on a first entry); each next is due
    interval / sqrt(count) after the one before (the control law, section 5.6), count then growing by one,
    and happens at the first dequeue at or after it.
    """
    times, due = [first_drop_ms], float(first_drop_ms)
    while True:
        due += interval_ms / count**0.5
        count += 1
        t = math.ceil(due - 1e-9)
        if t >= end_ms:
            return times
        times.append(t)


def test_codel_drops_at_interval_over_sqrt_count_under_constant_overload() -> None:
    drops = Drops()
    q = make_queue("codel limit 10000", drop=drops)
    overload(q, 1000)
    # Sojourn (0.5 ms per ms of overload) reaches the 5 ms target at the dequeue at 10 ms; it stays above for an
    # interval (100 ms), so the first drop is at 110 ms; then at 210, 210 + 100/sqrt(2), ...
    expected = codel_drop_times_ms(110, 100, 1000)
    assert expected[:4] == [110, 210, 281, 339]
    assert [t // MS for t in drops.times] == expected
    gaps = [b - a for a, b in itertools.pairwise(expected)]
    assert gaps[:3] == [100, 71, 58]
    assert q.drops == len(expected) and q.marks == 0  # type: ignore[attr-defined]


def test_codel_honours_its_target_and_interval() -> None:
    drops = Drops()
    q = make_queue("codel target 2ms interval 50ms limit 10000", drop=drops)
    overload(q, 500)
    # Sojourn reaches 2 ms at the dequeue at 4 ms, so the first drop is at 54 ms.
    assert [t // MS for t in drops.times] == codel_drop_times_ms(54, 50, 500)


def test_codel_with_ecn_marks_ect_packets_where_it_would_drop() -> None:
    drops = Drops()
    q = make_queue("codel ecn limit 10000", drop=drops)
    sent = overload(q, 1000, ecn=ECT0)
    marked = [t // MS for t, p in sent if p.marked]
    assert all(p.ecn == CE for _, p in sent if p.marked)
    assert drops.seen == [] and marked == codel_drop_times_ms(110, 100, 1000)
    assert q.marks == len(marked)  # type: ignore[attr-defined]
    # ... and drops a not-ECT packet even with ecn on.
    drops2 = Drops()
    q2 = make_queue("codel ecn limit 10000", drop=drops2)
    sent2 = overload(q2, 300)
    assert [t // MS for t in drops2.times] == [110, 210, 281] and not any(p.marked for _, p in sent2)


def test_codel_does_not_drop_below_one_packet_of_backlog_or_below_target() -> None:
    drops = Drops()
    q = make_queue("codel", drop=drops)
    # One packet at a time waiting 50 ms each: sojourn above target, but the backlog is never above one MTU.
    for i in range(100):
        t = i * 100 * MS
        q.enqueue(pkt(t), t)
        assert q.dequeue(t + 50 * MS) is not None
    assert drops.seen == []


def test_codel_ce_threshold_marks_ect_packets_that_waited_longer() -> None:
    q = make_queue("codel ce_threshold 1ms")
    a, b, c = pkt(0, ecn=ECT0), pkt(0, ecn=NOT_ECT), pkt(0, ecn=ECT1)
    for p in (a, b, c):
        q.enqueue(p, 0)
    assert q.dequeue(1 * MS) is a and not a.marked  # sojourn 1 ms is not above the threshold
    assert q.dequeue(1500 * US) is b and b.ecn == NOT_ECT and not b.marked  # not ECN-capable: left alone
    assert q.dequeue(2 * MS) is c and c.ecn == CE and c.marked
    assert q.ce_marks == 1  # type: ignore[attr-defined]


def test_codel_reenters_dropping_with_the_last_drop_rate() -> None:
    # RFC 8289 section 5.5: re-entering the dropping state soon after leaving it starts from count - lastcount.
    drops = Drops()
    q = make_queue("codel limit 10000", drop=drops)
    overload(q, 700)
    n_first = len(drops.seen)
    assert n_first == len(codel_drop_times_ms(110, 100, 700))
    # Drain: sojourn falls below target and CoDel leaves the dropping state.
    t = 700 * MS
    while q.backlog_packets:
        q.dequeue(t)
        t += 10 * US
    assert len(drops.seen) == n_first  # the drain (7 ms) took under a control-law step: no drop in it
    start = t
    sent = overload_from(q, start, 400)
    assert sent
    second = [(x - start) // MS for x in drops.times[n_first:]]
    # The first episode ended with count = 14 drops and lastcount = 1. The second enters dropping at 110 ms again,
    # within 16 intervals of the last drop, so count restarts at delta = 14 - 1 = 13: the next drop is due
    # 100 / sqrt(13) = 27.7 ms later (138), then 100 / sqrt(14) = 26.7 (165), 100 / sqrt(15) = 25.8 (191), ...
    assert n_first == 14
    assert second[:4] == [110, 138, 165, 191]
    assert second == codel_drop_times_ms(110, 100, 400, count=13)


def overload_from(q: QueueDiscipline, start_ns: int, end_ms: int) -> list[int]:
    """Drive q at twice its service rate from start_ns for end_ms; return the dequeue times of packets sent."""
    sent = []
    for step in range(2 * end_ms):
        t = start_ns + step * 500 * US
        q.enqueue(pkt(t), t)
        if step % 2 == 0 and q.dequeue(t) is not None:
            sent.append(t)
    return sent


# --- FQ-CoDel (RFC 8290) ----------------------------------------------------------------------------------------


def test_fq_codel_serves_a_sparse_flows_packet_ahead_of_a_bulk_backlog() -> None:
    q = make_queue("fq_codel")
    for _ in range(50):
        q.enqueue(pkt(0, flow=1), 0)  # int keys hash to themselves: flow 1 is bucket 1
    assert q.dequeue(0) is not None  # bulk flow 1: new, spends its quantum (1514 of 1514)
    assert q.dequeue(0) is not None  # out of credit: it moves to old flows, gets a quantum, sends
    sparse = pkt(0, length=100, flow=2)
    q.enqueue(sparse, 1 * MS)  # a new flow: it goes to the new-flow list, served before old flows
    assert q.dequeue(1 * MS) is sparse
    assert q.dequeue(1 * MS).flow_key == 1  # type: ignore[union-attr]
    assert q.backlog_packets == 47


def test_fq_codel_round_robins_by_quantum_in_bytes() -> None:
    # Quantum 1514: flow 1 (1500-byte packets, 1514 with the Ethernet header) sends one per round; flow 2
    # (500-byte packets, 514) sends while its credit is above 0: 1514 -> 1000 -> 486 -> -28, three per round.
    q = make_queue("fq_codel quantum 1514")
    for _ in range(20):
        q.enqueue(pkt(0, 1500, flow=1), 0)
        q.enqueue(pkt(0, 500, flow=2), 0)
    order = [q.dequeue(0).flow_key for _ in range(16)]  # type: ignore[union-attr]
    # Round 1 (both new): 1, then 2 2 2; every later round: flow 1 gets 1514 more (sends 1), flow 2 gets 1514
    # more on -28 (1486: sends 3, -56), ... the same pattern while credit stays above -514.
    assert order == [1, 2, 2, 2] * 4
    q2 = make_queue("fq_codel quantum 3028")  # two full packets per round for flow 1, six small for flow 2
    for _ in range(20):
        q2.enqueue(pkt(0, 1500, flow=1), 0)
        q2.enqueue(pkt(0, 500, flow=2), 0)
    assert [q2.dequeue(0).flow_key for _ in range(8)] == [1, 1, 2, 2, 2, 2, 2, 2]  # type: ignore[union-attr]


def test_fq_codel_over_its_limit_drops_half_the_fattest_flow_from_its_head() -> None:
    drops = Drops()
    q = make_queue("fq_codel limit 20", drop=drops)
    bulk = [pkt(0, flow=1) for _ in range(16)]
    for p in bulk:
        q.enqueue(p, 0)
    for _ in range(4):
        q.enqueue(pkt(0, flow=2), 0)
    assert drops.seen == []
    assert q.enqueue(pkt(1, flow=2), 1)  # the 21st packet: flow 1 (16 * 1500 bytes) is the fattest
    # Half its bytes (12000) is 8 packets, from its head.
    assert [p for _, p in drops.seen] == bulk[:8]
    assert q.backlog_packets == 13 and q.drop_overlimit == 8  # type: ignore[attr-defined]


def test_fq_codel_has_ecn_on_by_default_and_runs_codel_per_flow() -> None:
    drops = Drops()
    q = make_queue("fq_codel", drop=drops)
    sent = overload(q, 400, ecn=ECT0)
    assert drops.seen == [] and [t // MS for t, p in sent if p.marked] == codel_drop_times_ms(110, 100, 400)
    drops2 = Drops()
    q2 = make_queue("fq_codel noecn", drop=drops2)
    overload(q2, 400, ecn=ECT0)
    assert [t // MS for t in drops2.times] == codel_drop_times_ms(110, 100, 400)


def test_fq_codel_a_sparse_flow_beside_an_overloading_one_waits_little_and_is_not_dropped() -> None:
    drops = Drops()
    q = make_queue("fq_codel", drop=drops)
    sparse_sojourn = []
    for step in range(2 * 1000):
        t = step * 500 * US
        q.enqueue(pkt(t, flow=1), t)
        if step % 40 == 0:
            q.enqueue(pkt(t, 100, flow=2), t)  # a small packet every 20 ms
        if step % 2 == 0:
            p = q.dequeue(t)
            if p is not None and p.flow_key == 2:
                sparse_sojourn.append(p.sojourn_ns(t))
    assert len(sparse_sojourn) == 50 and max(sparse_sojourn) <= 1 * MS
    assert drops.seen and all(p.flow_key == 1 for _, p in drops.seen)


# --- PIE (RFC 8033) ---------------------------------------------------------------------------------------------


def pie_after_step(drop_prob: float, qdelay_ms: float, qdelay_old_ms: float) -> Pie:
    """Return a default PIE that ran one T_UPDATE step from the given state (delays in ms)."""
    q = Pie()
    q.drop_prob, q.qdelay_ns, q.qdelay_old_ns = drop_prob, round(qdelay_ms * MS), round(qdelay_old_ms * MS)
    q.update_drop_prob()
    return q


@pytest.mark.parametrize(
    ("drop_prob", "expected"),
    [
        # qdelay = qdelay_old = 25 ms: p = 0.125 * (0.025 - 0.015) + 1.25 * 0 = 0.00125, then section 4.2's table:
        (0.0, 0.00125 / 2048),  # below 0.000001
        (5e-6, 5e-6 + 0.00125 / 512),  # below 0.00001
        (5e-5, 5e-5 + 0.00125 / 128),  # below 0.0001
        (5e-4, 5e-4 + 0.00125 / 32),  # below 0.001
        (5e-3, 5e-3 + 0.00125 / 8),  # below 0.01
        (0.05, 0.05 + 0.00125 / 2),  # below 0.1
        (0.5, 0.5 + 0.00125),  # 0.1 and above: p as it is
    ],
)
def test_pie_scales_its_step_by_the_auto_tuning_table(drop_prob: float, expected: float) -> None:
    q = pie_after_step(drop_prob, 25, 25)
    assert q.drop_prob == pytest.approx(expected, rel=1e-9)
    assert q.qdelay_old_ns == 25 * MS and q.burst_allowance_ns == 135 * MS  # 150 ms less one T_UPDATE


def test_pie_caps_its_step_decays_and_bounds_its_probability() -> None:
    # qdelay 100 ms after 25 ms: p = 0.125 * 0.085 + 1.25 * 0.075 = 0.104375.
    assert pie_after_step(0.5, 100, 25).drop_prob == pytest.approx(0.52)  # capped at +0.02 (section 5.5)
    assert pie_after_step(0.05, 100, 25).drop_prob == pytest.approx(0.05 + 0.104375 / 2)  # no cap below 0.1
    assert pie_after_step(0.99, 100, 25).drop_prob == 1.0  # bounded above
    # Both delays 0: p = 0.125 * -0.015 = -0.001875, then the decay by 0.98.
    assert pie_after_step(0.5, 0, 0).drop_prob == pytest.approx((0.5 - 0.001875) * 0.98)
    # 0 ms after 200 ms: p = -0.001875 - 0.25 = -0.251875, / 8 below 0.01: below 0, bounded at 0.
    assert pie_after_step(0.001, 0, 200).drop_prob == 0.0


def drive_pie(q: Pie, end_ms: int) -> tuple[list[float], list[int]]:
    """Drive q with one 1500-byte packet a ms, dequeued 25 ms after it came; return probabilities and drops.

    The probabilities are one per ms (after the updates due then); the drops the ms of each arrival PIE refused.
    """
    probs, dropped = [], []
    for t_ms in range(end_ms):
        t = t_ms * MS
        if not q.enqueue(pkt(t), t):
            dropped.append(t_ms)
        probs.append(q.drop_prob)
        if t_ms >= 25:
            q.dequeue(t)
    return probs, dropped


def test_pie_raises_its_probability_every_tupdate_from_the_measured_sojourn() -> None:
    q = Pie(uniform=lambda: 1.0)  # never drops: the probability alone
    probs, dropped = drive_pie(q, 200)
    assert dropped == []
    # Updates at 15, 30, 45 ... ms (the first call at 0). At 15 both delays are 0: p < 0, bounded at 0. At 30 the
    # sojourn is 25 ms (dequeues since 25 ms): p = 0.125 * 0.010 + 1.25 * 0.025 = 0.0325, / 2048 below 0.000001.
    # From 45 on the delay holds at 25 ms: p = 0.00125, / 128 while below 0.0001, / 32 once above.
    p30 = 0.0325 / 2048
    steps = [p30 + k * 0.00125 / 128 for k in range(11)]  # 30, 45, ..., 180 ms
    assert steps[9] > 1e-4 > steps[8]  # at 165 ms the probability passes 0.0001 ...
    steps[10] = steps[9] + 0.00125 / 32  # ... so at 180 ms the step is / 32
    assert probs[14] == probs[29] == 0.0
    assert [probs[30 + 15 * k] for k in range(11)] == pytest.approx(steps, rel=1e-9)
    assert probs[44] == probs[30] and probs[45] > probs[44]  # constant between updates
    assert q.qdelay_ns == 25 * MS and q.early_drops == 0


def test_pie_drops_nothing_until_the_150_ms_burst_allowance_is_spent() -> None:
    q = Pie(uniform=lambda: 0.0)  # drops whenever it may
    _, dropped = drive_pie(q, 200)
    # The allowance is refilled while drop_prob is 0 and both delays are below target / 2: last at the arrival at
    # 25 ms (the first 25 ms sojourn is measured just after it). The updates at 30, 45, ..., 165 ms spend
    # 10 * 15 ms = 150 ms: the arrival at 165 ms is the first PIE drops, and (uniform 0) every one after it
    # while more than two packets are queued: the queue (25 packets before the arrival at 165 ms) loses one a ms,
    # so the arrivals at 165 ... 187 are dropped and from 188 ms on, with 2 queued, each is taken.
    assert dropped == list(range(165, 188))
    assert q.early_drops == 23 and q.overlimit == 0 and q.backlog_packets == 2


def test_pie_marks_ect_packets_below_ten_percent_and_drops_above() -> None:
    q = Pie(ecn=True, uniform=lambda: 0.0)
    q.drop_prob, q.qdelay_ns, q.qdelay_old_ns, q.burst_allowance_ns = 0.05, 20 * MS, 20 * MS, 0
    # Up to two mean-sized packets (3000 bytes) queued PIE never drops (section 4.1's safeguard).
    assert [q.enqueue(pkt(0), 0) for _ in range(3)] == [True, True, True]
    assert not q.enqueue(pkt(0), 0)  # not ECN-capable: dropped
    ect = pkt(0, ecn=ECT0)
    assert q.enqueue(ect, 0) and ect.ecn == CE and ect.marked  # drop_prob 5 % < 10 %: marked and queued
    q.drop_prob = 0.15
    ect2 = pkt(0, ecn=ECT1)
    assert not q.enqueue(ect2, 0) and not ect2.marked  # 15 %: dropped even though ECN-capable
    assert (q.marks, q.early_drops, q.backlog_packets) == (1, 2, 4)
    # The safeguard: a short queue (qdelay_old below target / 2) and drop_prob below 0.2 drop nothing.
    q.qdelay_old_ns = 5 * MS
    assert q.enqueue(pkt(0), 0)
    q.drop_prob = 0.25
    assert not q.enqueue(pkt(0), 0)
    # noecn (the default) drops an ECT packet too.
    q2 = Pie(uniform=lambda: 0.0)
    q2.drop_prob, q2.qdelay_old_ns, q2.burst_allowance_ns = 0.05, 20 * MS, 0
    for _ in range(3):
        q2.enqueue(pkt(0), 0)
    assert not q2.enqueue(pkt(0, ecn=ECT0), 0)


def test_pie_tail_drops_at_its_limit_and_empties_to_zero_delay() -> None:
    q = make_queue("pie limit 2")
    assert [q.enqueue(pkt(0), 0) for _ in range(3)] == [True, True, False]
    assert q.overlimit == 1  # type: ignore[attr-defined]
    q.dequeue(10 * MS)
    assert q.qdelay_ns == 10 * MS  # type: ignore[attr-defined]
    q.dequeue(12 * MS)
    assert q.qdelay_ns == 0  # type: ignore[attr-defined]  # the queue emptied (the kernel's timestamp mode)


def test_pie_reads_tc_spelling() -> None:
    q = make_queue("pie target 20ms tupdate 30ms alpha 4 beta 30 limit 500 ecn")
    assert isinstance(q, Pie)
    assert (q.target_ns, q.tupdate_ns, q.alpha, q.beta, q.limit, q.ecn) == (20 * MS, 30 * MS, 0.25, 1.875, 500, True)
    d = make_queue("pie")
    assert isinstance(d, Pie)
    assert (d.target_ns, d.tupdate_ns, d.alpha, d.beta, d.limit, d.ecn) == (15 * MS, 15 * MS, 0.125, 1.25, 1000, False)
    assert make_queue("pie", limit_default=300).limit == 300  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("codel target 5", ["codel: target '5'", "no unit", "target TIME"]),
        ("codel interval 0ms", ["codel: interval 0 ns must be above 0"]),
        ("codel ecn noecn limit x", ["limit 'x'", "whole number"]),
        ("fq_codel quantum 0", ["fq_codel: quantum 0 must be at least 1"]),
        ("fq_codel flows many", ["flows 'many'"]),
        ("pie alpha 0.125", ["pie: alpha '0.125'", "sixteenths", "alpha 2 is 0.125"]),
        ("pie beta 33", ["pie: beta '33'", "above 32"]),
        ("pie tupdate 0ms", ["pie: tupdate 0 must be above 0"]),
        ("pie dq_rate_estimator", ["pie: unknown word 'dq_rate_estimator'", "pie [limit N]"]),
        ("dualpi2 classic_protection 101", ["dualpi2: classic_protection 101", "0 to 100"]),
        ("dualpi2 alpha 0", ["dualpi2: alpha 0.0 must be above 0 Hz"]),
        ("dualpi2 step_thresh 1", ["dualpi2: step_thresh '1'", "no unit"]),
        ("dualpi2 coupling_factor 0", ["coupling_factor '0'", "at least 1"]),
    ],
)
def test_aqm_parameters_out_of_range_name_the_parameter_and_value(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        make_queue(text)
    for w in words:
        assert w in str(e.value)


# --- DualPI2 (RFC 9332) -----------------------------------------------------------------------------------------


class Rolls:
    """A uniform source that returns the given values in turn, then 0.99 (no event)."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0) if self.values else 0.99


def test_dualpi2_classifies_ect1_and_ce_into_the_l4s_queue() -> None:
    q = DualPi2()
    for ecn in (ECT1, CE, ECT0, NOT_ECT):
        q.enqueue(pkt(0, ecn=ecn), 0)
    assert q.queue_lengths == (2, 2)
    q2 = make_queue("dualpi2 any_ect")
    for ecn in (ECT1, CE, ECT0, NOT_ECT):
        q2.enqueue(pkt(0, ecn=ecn), 0)
    assert q2.queue_lengths == (3, 1)  # type: ignore[attr-defined]


def test_dualpi2_pi_controller_follows_the_appendix_update_every_tupdate() -> None:
    q = DualPi2(uniform=lambda: 0.99)  # no roll succeeds: the probability alone
    q.enqueue(pkt(0), 0)  # a Classic packet that waits: the head sojourn is the time since 0
    # Updates at 16, 32, 48 ms: p' += 0.16 * (curq - 0.015) + 3.2 * (curq - prevq), curq = 16, 32, 48 ms.
    expected = [0.16 * 0.001 + 3.2 * 0.016]  # 0.05136
    expected.append(expected[-1] + 0.16 * 0.017 + 3.2 * 0.016)  # 0.10528
    expected.append(expected[-1] + 0.16 * 0.033 + 3.2 * 0.016)  # 0.16176
    seen = []
    for t_ms in (16, 32, 48):
        q.enqueue(pkt(t_ms * MS), t_ms * MS)
        seen.append(q.p_prime)
    assert seen == pytest.approx(expected, rel=1e-9)
    assert q.p_c == pytest.approx(0.16176**2) and q.p_cl == pytest.approx(2 * 0.16176)
    while q.dequeue(50 * MS) is not None:
        pass
    # Empty from 50 ms: at 64 ms p' += 0.16 * -0.015 + 3.2 * (0 - 0.048) = -0.156, then -0.0024 a step, floored at 0.
    q.enqueue(pkt(64 * MS), 64 * MS)
    assert q.p_prime == pytest.approx(0.16176 - 0.156)
    q.dequeue(64 * MS)
    q.dequeue(112 * MS)
    assert q.p_prime == 0.0


def test_dualpi2_pi_controller_reads_the_larger_head_sojourn_and_caps_with_overflow() -> None:
    q = DualPi2(uniform=lambda: 0.99)
    q.enqueue(pkt(0, ecn=ECT1), 0)  # an L4S packet waiting since 0
    q.enqueue(pkt(10 * MS), 10 * MS)  # a Classic one since 10 ms
    q.enqueue(pkt(16 * MS), 16 * MS)
    assert q.p_prime == pytest.approx(0.16 * 0.001 + 3.2 * 0.016)  # curq 16 ms (L), not 6 ms (C)
    o = make_queue("dualpi2 overflow")
    assert isinstance(o, DualPi2)
    o.p_prime = 0.45
    o.enqueue(pkt(0), 0)
    o.update(100 * MS)  # a large step up: p' stops at 1 / k = 0.5 so that p_CL stays at most 1
    assert o.p_prime == 0.5


def test_dualpi2_marks_l4s_packets_above_the_step_threshold() -> None:
    q = DualPi2(uniform=lambda: 0.99)
    a, b, c = pkt(0, ecn=ECT1), pkt(500 * US, ecn=ECT1), pkt(1 * MS, ecn=ECT1)
    for p in (a, b, c):
        q.enqueue(p, p.t_enqueue_ns)
    sent = [q.dequeue(1500 * US) for _ in range(3)]
    assert sent == [a, b, c]
    # Sojourns 1.5, 1.0 and 0.5 ms against the 1 ms step: only a's is above it.
    assert [p.ecn for p in (a, b, c)] == [CE, ECT1, ECT1] and q.step_marks == 1
    # In packets: marked while more than 2 are left in the L queue.
    q2 = make_queue("dualpi2 step_thresh 2p")
    burst = [pkt(0, ecn=ECT1) for _ in range(5)]
    for p in burst:
        q2.enqueue(p, 0)
    assert [q2.dequeue(0).marked for _ in range(5)] == [True, True, False, False, False]  # type: ignore[union-attr]
    # min_qlen_step 2: the step applies to a packet that found at least 2 in the L queue.
    q3 = make_queue("dualpi2 min_qlen_step 2")
    for _ in range(4):
        q3.enqueue(pkt(0, ecn=ECT1), 0)
    assert [q3.dequeue(5 * MS).marked for _ in range(4)] == [False, False, True, True]  # type: ignore[union-attr]


def test_dualpi2_couples_l4s_marking_k_times_p_and_classic_p_squared() -> None:
    rolls = Rolls(0.15, 0.25, 0.05, 0.05, 0.05, 0.5, 0.09, 0.09)
    drops = Drops()
    q = DualPi2(uniform=rolls, drop=drops)
    q.p_prime = 0.1  # p_CL = 0.2, p_C = 0.01
    a, b = pkt(0, ecn=ECT1), pkt(0, ecn=ECT1)
    c, d, e, f, g = pkt(0, ecn=ECT0), pkt(0), pkt(0), pkt(0), pkt(0)
    for p in (a, b, c, d, e, f, g):
        q.enqueue(p, 0)
    # The scheduler serves L first (its credit starts negative); then C.
    assert q.dequeue(0) is a and a.ecn == CE  # roll 0.15 < p_CL 0.2: marked
    assert q.dequeue(0) is b and b.ecn == ECT1  # roll 0.25: not
    assert q.dequeue(0) is c and c.ecn == CE  # rolls 0.05, 0.05 both < p' 0.1: (p')^2 marks ECT(0)
    assert q.dequeue(0) is d and not d.marked  # 0.05, 0.5: one roll under p' is not enough
    assert q.dequeue(0) is f  # 0.09, 0.09: e (not-ECT) dropped; f leaves 1 packet (< 2 MTU): no roll
    assert drops.seen == [(0, e)] and (q.ecn_marks, q.drops) == (2, 1)
    assert q.dequeue(0) is g and q.dequeue(0) is None


def test_dualpi2_in_overload_drops_from_both_queues() -> None:
    drops = Drops()
    q = DualPi2(uniform=Rolls(0.5, 0.5, 0.5, 0.7, 0.5, 0.5), drop=drops)
    q.p_prime = 0.6  # k * p' = 1.2 > 1: overload
    l1, l2, c1, f1, f2 = pkt(0, ecn=ECT1), pkt(0, ecn=ECT1), pkt(0, ecn=ECT0), pkt(0), pkt(0)
    for p in (l1, l2, c1, f1, f2):
        q.enqueue(p, 0)
    assert q.dequeue(0) is l2 and l2.ecn == CE  # l1: 0.5, 0.5 < 0.6: the squared drop; l2: 0.5, 0.7: marked
    assert q.dequeue(0) is f1  # c1, ECT(0): 0.5, 0.5: dropped, not marked, in overload
    assert drops.seen == [(0, l1), (0, c1)]


def test_dualpi2_scheduler_gives_the_classic_queue_ten_percent_under_load() -> None:
    q = DualPi2(uniform=lambda: 0.99)
    for _ in range(30):
        q.enqueue(pkt(0, ecn=ECT1), 0)
        q.enqueue(pkt(0), 0)
    order = "".join("L" if q.dequeue(0).ecn == ECT1 else "C" for _ in range(20))  # type: ignore[union-attr]
    # Credit starts at 1514 * (10 - 90) = -121120; an L packet adds 10 * 1514, a C packet takes 90 * 1514:
    # nine L packets bring it to +15140, then one C packet back to -121120.
    assert order == "LLLLLLLLLC" * 2


def test_dualpi2_reads_tc_spelling_with_the_kernels_defaults() -> None:
    d = make_queue("dualpi2")
    assert isinstance(d, DualPi2)
    assert (d.limit, d.target_ns, d.tupdate_ns, d.alpha, d.beta, d.k) == (10000, 15 * MS, 16 * MS, 0.16, 3.2, 2)
    assert (d.step_thresh, d.step_in_packets, d.drop_overload, d.drop_early, d.ecn_mask) == (MS, False, True, False, 1)
    q = make_queue(
        "dualpi2 limit 500 target 20ms tupdate 10ms alpha 0.3 beta 4 coupling_factor 3 step_thresh 2ms "
        "classic_protection 30 drop_enqueue"
    )
    assert isinstance(q, DualPi2)
    assert (q.limit, q.target_ns, q.tupdate_ns, q.alpha, q.beta, q.k) == (500, 20 * MS, 10 * MS, 0.3, 4.0, 3)
    assert (q.step_thresh, q.drop_early, q.credit) == (2 * MS, True, 1514 * (30 - 70))
    assert [q.enqueue(pkt(0), 0) for _ in range(3)] and q.backlog_packets == 3


# --- the PI controllers settle: 2x unresponsive overload ----------------------------------------------------------


def settle(q: QueueDiscipline, seconds: int) -> list[float]:
    """Offer q twice its service rate of unresponsive 1500-byte packets; return the last third's sojourns (ms)."""
    sojourns_ms = []
    end_ms = seconds * 1000
    for step in range(2 * end_ms):
        t = step * 500 * US
        q.enqueue(pkt(t), t)
        if step % 2 == 0:
            p = q.dequeue(t)
            if p is not None and t >= end_ms * 2 // 3 * MS:
                sojourns_ms.append(p.sojourn_ns(t) / MS)
    return sojourns_ms


def test_pie_and_dualpi2_hold_an_unresponsive_overload_at_their_target_delay() -> None:
    # Twice the service rate can only be held by dropping half the arrivals: a PI controller settles where its
    # probability is 0.5 and the queueing delay is its target (15 ms for both), whatever the queue's limit.
    pie = Pie()
    sojourns = settle(pie, 30)
    assert 10 <= statistics.median(sojourns) <= 20
    assert pie.drop_prob == pytest.approx(0.5, abs=0.05)
    assert pie.early_drops == pytest.approx(30_000, rel=0.02) and pie.overlimit == 0  # half of 60,000 arrivals
    dual = DualPi2()
    sojourns = settle(dual, 30)
    assert 10 <= statistics.median(sojourns) <= 20
    assert dual.p_c == pytest.approx(0.5, abs=0.05)  # the Classic queue's (p')^2, p' near 0.71
    assert dual.drops == pytest.approx(30_000, rel=0.02) and dual.overlimit == 0


# --- every discipline: the protocol's bookkeeping -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "pfifo limit 50",
        "bfifo limit 60000",
        "codel limit 50",
        "codel ecn ce_threshold 1ms",
        "fq_codel limit 50 flows 4",
        "fq_codel noecn quantum 300",
        "pie limit 50 ecn",
        "dualpi2 limit 50",
        "dualpi2 drop_enqueue overflow any_ect step_thresh 3p",
    ],
)
def test_every_discipline_accounts_for_each_packet(text: str) -> None:
    # Random arrivals (lengths; 6 flows, each with its ECN codepoint) above the service rate, then a drain: every
    # packet offered is refused, dropped through the sink once, or sent once, in its flow's order, and the backlog
    # says what is held.
    rng = random.Random(23)
    drops = Drops()
    q = make_queue(text, drop=drops)
    assert isinstance(q, QueueDiscipline)
    offered: list[Packet] = []
    refused: list[Packet] = []
    sent: list[Packet] = []
    t = held = held_bytes = n_drops = 0
    for _ in range(4000):
        t += rng.randrange(0, 400 * US)
        flow = rng.randrange(6)
        p = pkt(t, rng.choice((60, 576, 1500)), (NOT_ECT, NOT_ECT, ECT0, ECT0, ECT1, CE)[flow], flow)
        offered.append(p)
        held, held_bytes = held + 1, held_bytes + p.length
        if not q.enqueue(p, t):
            refused.append(p)
            held, held_bytes = held - 1, held_bytes - p.length
        if rng.random() < 0.4:
            out = q.dequeue(t)
            if out is not None:
                sent.append(out)
                held, held_bytes = held - 1, held_bytes - out.length
        for _, x in drops.seen[n_drops:]:
            held, held_bytes = held - 1, held_bytes - x.length
        n_drops = len(drops.seen)
        assert (q.backlog_packets, q.backlog_bytes) == (held, held_bytes)
    while (out := q.dequeue(t)) is not None:
        sent.append(out)
        t += 100 * US
    dropped = [x for _, x in drops.seen]
    assert len(offered) == len(refused) + len(dropped) + len(sent)
    assert len({id(x) for x in (*refused, *dropped, *sent)}) == len(offered)
    assert refused or dropped  # the overload was felt
    for flow in range(6):
        order = [x.t_enqueue_ns for x in sent if x.flow_key == flow]
        assert order == sorted(order)
    assert all(x.ecn == CE for x in sent if x.marked)
    assert not any(x.marked and x.ecn_in == NOT_ECT for x in sent)


def test_fq_codel_over_its_memory_limit_drops_from_the_fattest_flow() -> None:
    drops = Drops()
    q = make_queue("fq_codel memory_limit 6000", drop=drops)
    burst = [pkt(0, flow=1) for _ in range(5)]
    for p in burst:
        q.enqueue(p, 0)
    # The fifth takes the bytes held to 7500 > 6000: half of the fat flow's 7500 bytes (3750) is 3 packets.
    assert [p for _, p in drops.seen] == burst[:3] and q.backlog_bytes == 3000


def test_dualpi2_drop_enqueue_refuses_at_arrival() -> None:
    drops = Drops()
    q = DualPi2(drop_early=True, uniform=Rolls(0.05, 0.05), drop=drops)
    q.p_prime = 0.1
    assert [q.enqueue(pkt(0), 0) for _ in range(2)] == [True, True]  # under 2 MTU queued: no roll
    assert not q.enqueue(pkt(0), 0)  # rolls 0.05, 0.05 < p' 0.1: dropped at enqueue, never taken
    assert q.enqueue(pkt(0), 0)  # rolls 0.99: taken
    assert drops.seen == [] and q.drops == 1 and q.backlog_packets == 3


def test_userspace_kinds_show_the_grammar_of_the_aqms() -> None:
    kinds = userspace_kinds()
    assert kinds["codel"] == "codel [limit N] [target TIME] [interval TIME] [ce_threshold TIME] [ecn|noecn]"
    assert kinds["pie"] == "pie [limit N] [target TIME] [tupdate TIME] [alpha N/16] [beta N/16] [ecn|noecn]"
    assert "[step_thresh TIME|Np] [min_qlen_step N]" in kinds["dualpi2"]
    assert "[alpha NUMBER]" in kinds["dualpi2"] and "[drop_on_overload|overflow]" in kinds["dualpi2"]
    assert "[quantum BYTES]" in kinds["fq_codel"] and "[ecn|noecn]" in kinds["fq_codel"]
