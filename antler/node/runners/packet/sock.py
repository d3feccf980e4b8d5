"""UDP socket plumbing for packet flows: addresses, socket options, kernel receive timestamps."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

PROTOCOLS = {"udp": socket.AF_UNSPEC, "udp4": socket.AF_INET, "udp6": socket.AF_INET6}
"""PROTOCOLS maps a packet protocol name to its address family (udp: either)."""

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
_TIMESPEC = struct.Struct("@qq")
ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
"""ANC_SIZE is the ancillary buffer size for one receive timestamp."""

RCVBUF_BYTES = 4 << 20
"""RCVBUF_BYTES is the receive buffer asked for, so a GIL or scheduling stall of tens of ms loses nothing."""


def split_addr(addr: str) -> tuple[str, int]:
    """Split_addr splits ``host:port``, ``[v6]:port`` or ``:port`` into host and port."""
    host, sep, port = addr.rpartition(":")
    if not sep:
        raise ValueError(f"address {addr!r} needs a port (host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        n = int(port)
    except ValueError:
        raise ValueError(f"address {addr!r} has a bad port {port!r}") from None
    if not 0 <= n <= 65535:
        raise ValueError(f"address {addr!r} has a port out of range")
    return host, n


def resolve(addr: str, protocol: str, passive: bool) -> tuple[int, Any]:
    """Resolve returns the address family and socket address for addr under protocol."""
    host, port = split_addr(addr)
    family = PROTOCOLS[protocol]
    if passive and not host:
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    flags = socket.AI_PASSIVE if passive else 0
    infos = socket.getaddrinfo(host or None, port, family, socket.SOCK_DGRAM, 0, flags)
    if not infos:
        raise OSError(f"no address for {addr!r}")
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


@dataclass(frozen=True)
class Sockopt:
    """Sockopt is a socket option to set on a socket before use (setsockopt(2)).

    ``level`` and ``opt`` are names from Python's socket module (``SOL_SOCKET``,
    ``SO_PRIORITY``) or numbers; ``type`` says how ``value`` is passed: ``int``,
    ``string`` (bytes of the text) or ``byte`` (one byte). ``name`` labels it in
    errors.
    """

    level: str
    opt: str
    value: str
    type: str = "int"
    name: str = ""

    def validate(self, path: str) -> None:
        """Validate checks the type, level, option and value."""
        if self.type not in ("int", "string", "byte"):
            raise ValueError(f"sockopt type must be int, string or byte, not {self.type!r}")
        _number(self.level)
        _number(self.opt)
        self._value()

    def _value(self) -> int | bytes:
        if self.type == "string":
            return self.value.encode()
        try:
            n = int(self.value, 0)
        except ValueError:
            raise ValueError(f"sockopt value {self.value!r} is not an integer") from None
        if self.type == "byte":
            if not 0 <= n <= 255:
                raise ValueError(f"sockopt byte value {n} is out of range")
            return bytes([n])
        return n

    def apply(self, sock: socket.socket) -> None:
        """Apply sets the option on sock."""
        try:
            sock.setsockopt(_number(self.level), _number(self.opt), self._value())
        except OSError as e:
            raise OSError(f"setsockopt {self.name or self.opt}={self.value}: {e.strerror or e}") from None


def _number(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        pass
    value = getattr(socket, text, None)
    if not isinstance(value, int):
        raise ValueError(f"unknown socket constant {text!r}")
    return int(value)


def set_tos(sock: socket.socket, family: int, dscp: int, ecn: int) -> None:
    """Set_tos sets the DSCP and ECN bits of outgoing packets (IP_TOS or IPV6_TCLASS)."""
    tos = (dscp << 2) | ecn
    if tos == 0:
        return
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)
