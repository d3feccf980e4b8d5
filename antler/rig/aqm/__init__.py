"""Queue disciplines for the userspace bottleneck: pfifo, bfifo, codel, fq_codel, pie, dualpi2, or the user's own.

:mod:`antler.rig.aqm.base` states the protocol every discipline implements,
:mod:`antler.rig.aqm.parse` reads ``rig.qdisc`` (tc's spelling) into one
(:func:`make_queue`), :mod:`antler.rig.aqm.plugin` loads the user's own.
"""

from antler.rig.aqm.base import CE, ECT0, ECT1, NOT_ECT, DropSink, Packet, QueueDiscipline, ignore_drop, mark_ce
from antler.rig.aqm.parse import KINDS, make_queue, parse_size_bytes, parse_time_ns, userspace_kinds

__all__ = [
    "CE",
    "ECT0",
    "ECT1",
    "KINDS",
    "NOT_ECT",
    "DropSink",
    "Packet",
    "QueueDiscipline",
    "ignore_drop",
    "make_queue",
    "mark_ce",
    "parse_size_bytes",
    "parse_time_ns",
    "userspace_kinds",
]
