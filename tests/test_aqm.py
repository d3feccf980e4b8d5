"""The userspace bottleneck's queue disciplines, driven packet by packet on a fake clock (no network)."""

from __future__ import annotations

import itertools
import math
import shutil
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
    ],
)
def test_aqm_parameters_out_of_range_name_the_parameter_and_value(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        make_queue(text)
    for w in words:
        assert w in str(e.value)
