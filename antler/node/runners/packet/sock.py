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
IP_RECVTOS = getattr(socket, "IP_RECVTOS", 13)
"""IP_RECVTOS is Linux's option number (linux/in.h), which Python names only from 3.10 on."""
_TIMESPEC = struct.Struct("@qq")
_INT = struct.Struct("@i")
ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + 2 * socket.CMSG_SPACE(_INT.size)
"""ANC_SIZE is the ancillary buffer size for one receive timestamp and a TOS or traffic class."""
_IP, _IP_TOS = int(socket.IPPROTO_IP), int(socket.IP_TOS)
_IP6, _IP6_TCLASS = int(socket.IPPROTO_IPV6), int(socket.IPV6_TCLASS)
_SOL_SOCKET = int(socket.SOL_SOCKET)
NO_TOS = -1
"""NO_TOS is rx_meta's TOS for a datagram the kernel gave none for."""
TRUNC = int(socket.MSG_TRUNC)
"""TRUNC is MSG_TRUNC as a plain int, for the per-packet paths: the enum's ``&`` costs microseconds."""

RCVBUF_BYTES = 4 << 20
"""RCVBUF_BYTES is the receive buffer asked for, so a GIL or scheduling stall of tens of ms loses nothing."""


def resolve(addr: str, protocol: str, passive: bool) -> tuple[int, Any]:
    """Return the address family and socket address for addr under protocol.

    A link-local IPv6 host to send to gets this node's interface as its zone
    (antler.node.sockopt.zoned). Raises ValueError for an address
    split_host_port refuses, and OSError naming the address and the protocol
    when it does not resolve.
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
    """Ask the kernel to stamp each received datagram (SO_TIMESTAMPNS)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return True
    except OSError:
        return False


def grow_rcvbuf(sock: socket.socket, size: int = RCVBUF_BYTES) -> None:
    """Raise the receive buffer, beyond rmem_max if privileged."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def enable_rx_tos(sock: socket.socket) -> None:
    """Ask the kernel for each received datagram's TOS byte (IP_RECVTOS; IPV6_RECVTCLASS on IPv6).

    An IPv6 socket also asks for IP_RECVTOS: IPv4 packets it receives (as
    mapped addresses) carry theirs that way.
    """
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVTOS, 1)
    if sock.family == socket.AF_INET6:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)


def rx_meta(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int, int]:
    """Return a datagram's kernel receive time (CLOCK_REALTIME ns, else now), TOS byte and its level.

    The TOS is NO_TOS and the level 0 when the kernel gave none; the level is
    IPPROTO_IP for an IPv4 packet and IPPROTO_IPV6 for an IPv6 one (how a
    reply carrying the same TOS must say it: see tos_cmsg).
    """
    t, tos, level = 0, NO_TOS, 0
    for lvl, kind, data in ancdata:
        if lvl == _SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            t = int(sec * 1_000_000_000 + nsec)
        elif lvl == _IP and kind == _IP_TOS and data:
            tos, level = data[0], _IP
        elif lvl == _IP6 and kind == _IP6_TCLASS and len(data) >= _INT.size:
            tos, level = _INT.unpack_from(data)[0] & 0xFF, _IP6
    return (t or time.time_ns()), tos, level


def tos_cmsg(level: int, tos: int) -> list[tuple[int, int, bytes]]:
    """Return the ancillary data that sends one datagram with a TOS byte (IP_TOS) or traffic class (IPV6_TCLASS)."""
    if level == _IP6:
        return [(_IP6, _IP6_TCLASS, _INT.pack(tos))]
    return [(_IP, _IP_TOS, bytes([tos]))]
