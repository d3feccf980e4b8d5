"""Queue disciplines for the userspace bottleneck: pfifo, bfifo, codel, fq_codel, pie, dualpi2, or the user's own.

:mod:`antler.rig.aqm.base` states the protocol every discipline implements.
"""

from antler.rig.aqm.base import CE, ECT0, ECT1, NOT_ECT, DropSink, Packet, QueueDiscipline, ignore_drop

__all__ = ["CE", "ECT0", "ECT1", "NOT_ECT", "DropSink", "Packet", "QueueDiscipline", "ignore_drop"]
