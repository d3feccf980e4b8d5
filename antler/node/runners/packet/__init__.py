"""Packet flows (UDP): the packet_client and packet_server runners, their senders and wire format.

Timing precision is the point of these runners: packets are released on a
dedicated thread by a hybrid timer against absolute deadlines, receive times
come from the kernel, and every packet is recorded into columnar buffers.

Its names load on first use, so the sender process imports only what it needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from antler import lazy

if TYPE_CHECKING:
    from antler.node.runners.packet.client import PacketClient as PacketClient
    from antler.node.runners.packet.sender import PacketSenders as PacketSenders, Unresponsive as Unresponsive
    from antler.node.runners.packet.server import PacketServer as PacketServer
    from antler.node.runners.packet.wire import (
        Packet as Packet,
        PacketFlag as PacketFlag,
        PacketHeader as PacketHeader,
        Seq as Seq,
    )
    from antler.node.sockopt import Sockopt as Sockopt

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


__getattr__ = lazy.attributes(__name__, _MODULES)
