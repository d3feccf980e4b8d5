"""The userspace bottleneck's queue disciplines, driven packet by packet on a fake clock (no network)."""

from __future__ import annotations

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
