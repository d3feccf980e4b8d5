"""Sends bad datagrams at a packet server: random bytes, truncated, oversized and forged packets.

Usage: packet_garbage.py HOST PORT COUNT [forged]. Run inside a test's
namespace by a ``system`` runner. With ``forged``, it sends only well-formed
packets of flow ``forged`` that are unsigned or carry a wrong tag.
"""

from __future__ import annotations

import random
import socket
import sys
import time

from antler.node.runners.packet.wire import FIXED_LEN, Packet, PacketFlag, PacketHeader


def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    forged = len(sys.argv) > 4 and sys.argv[4] == "forged"
    rng = random.Random(4)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    good = Packet(PacketHeader(PacketFlag.ECHO, 7, "garbage"), 100).encode()
    for i in range(count):
        if forged:
            if i % 2:
                data = Packet(PacketHeader(PacketFlag.ECHO, i, "forged"), 100).encode()
            else:
                signed = bytearray(Packet(PacketHeader(PacketFlag.ECHO, i, "forged"), 100).encode(b"wrong key"))
                data = bytes(signed)
        else:
            kind = i % 5
            if kind == 0:
                data = rng.randbytes(rng.randrange(0, 200))
            elif kind == 1:
                data = good[: rng.randrange(0, FIXED_LEN + 7)]
            elif kind == 2:
                data = good + rng.randbytes(3000)
            elif kind == 3:
                # Valid magic and version, random rest: bad flags, flows, lengths.
                data = good[:3] + rng.randbytes(rng.randrange(0, 60))
            else:
                data = bytes([good[0], good[1], 1, 1]) + rng.randbytes(8) + bytes([200]) + rng.randbytes(10)
        s.sendto(data, (host, port))
        if i % 200 == 0:
            time.sleep(0.001)
    s.close()


if __name__ == "__main__":
    main()
