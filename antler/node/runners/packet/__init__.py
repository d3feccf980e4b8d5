"""Packet flows (UDP): the packet_client and packet_server runners, their senders and wire format.

Timing precision is the point of these runners: packets are released on a
dedicated thread by a hybrid timer against absolute deadlines, receive times
come from the kernel, and every packet is recorded into columnar buffers.
"""

from antler.node.runners.packet.client import PacketClient
from antler.node.runners.packet.sender import PacketSenders, Unresponsive
from antler.node.runners.packet.server import PacketServer
from antler.node.runners.packet.wire import Packet, PacketFlag, PacketHeader, Seq
from antler.node.sockopt import Sockopt

__all__ = [
    "Packet",
    "PacketClient",
    "PacketFlag",
    "PacketHeader",
    "PacketSenders",
    "PacketServer",
    "Seq",
    "Sockopt",
    "Unresponsive",
]
