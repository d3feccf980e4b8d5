"""Packet flows (UDP): the packet_client and packet_server runners, their senders and wire format.

Timing precision is the point of these runners: packets are released on a
dedicated thread by a hybrid timer against absolute deadlines, receive times
come from the kernel, and every packet is recorded into columnar buffers.
"""

from __future__ import annotations

from antler import lazy
from antler.node.runners.packet.client import PacketClient
from antler.node.runners.packet.sender import PacketSenders, Unresponsive
from antler.node.runners.packet.server import PacketServer
from antler.node.runners.packet.wire import Packet, PacketFlag, PacketHeader, Seq
from antler.node.sockopt import Sockopt

_MODULES = {
    "Packet": "antler.node.runners.packet.wire",
    "PacketClient": "antler.node.runners.packet.client",
    "PacketFlag": "antler.node.runners.packet.wire",
    "PacketHeader": "antler.node.runners.packet.wire",
    "PacketSenders": "antler.node.runners.packet.sender",
    "PacketServer": "antler.node.runners.packet.server",
    "Seq": "antler.node.runners.packet.wire",
    "Sockopt": "antler.node.sockopt",
    "Unresponsive": "antler.node.runners.packet.sender",
}

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


__getattr__ = lazy.attributes(__name__, _MODULES)
