"""UDP socket plumbing for packet flows: address resolution, receive buffers, kernel receive timestamps."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from typing import Any

from antler.node.sockopt import split_host_port, zoned

PROTOCOLS = {"udp": socket.AF_UNSPEC, "udp4": socket.AF_INET, "udp6": socket.AF_INET6}
"""PROTOCOLS maps a packet protocol name to its address family (udp: either)."""

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
"""ANC_SIZE is the ancillary buffer size for one receive timestamp."""
TRUNC = int(socket.MSG_TRUNC)
"""TRUNC is MSG_TRUNC as a plain int, for the per-packet paths: the enum's ``&`` costs microseconds."""

RCVBUF_BYTES = 4 << 20
"""RCVBUF_BYTES is the receive buffer asked for, so a GIL or scheduling stall of tens of ms loses nothing."""


def resolve(addr: str, protocol: str, passive: bool) -> tuple[int, Any]:
    """Resolve returns the address family and socket address for addr under protocol.

    A link-local IPv6 host to send to gets this node's interface as its zone
    (antler.node.sockopt.zoned). Raises OSError naming the address and the
    protocol when it does not resolve.
    """
    host, port = split_host_port(addr)
    family = PROTOCOLS[protocol]
    if passive and not host:
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    flags = socket.AI_PASSIVE if passive else 0
    try:
        if not passive:
            host = zoned(host)
        infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_DGRAM, 0, flags)
    except ValueError as e:
        raise OSError(f"{addr} ({protocol}): {e}") from None
    except OSError as e:
        raise OSError(f"{addr} ({protocol}): {e.strerror or e}") from None
    if not infos:
        raise OSError(f"{addr} ({protocol}): no address")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Enable_rx_timestamps asks the kernel to stamp each received datagram (SO_TIMESTAMPNS)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def grow_rcvbuf(sock: socket.socket, size: int = RCVBUF_BYTES) -> None:
    """Grow_rcvbuf raises the receive buffer, beyond rmem_max if privileged."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def rx_time_ns(ancdata: list[tuple[int, int, bytes]]) -> int:
    """Rx_time_ns returns the kernel's receive time (CLOCK_REALTIME ns) from ancillary data, or now."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec * 1_000_000_000 + nsec)
    return time.time_ns()
