"""Socket options and addresses shared by the stream and packet runners.

Addresses are written as antler writes them: ``host:port``, ``[v6]:port`` or
``:port`` (any address). Socket options are raw setsockopt(2) calls and the
DSCP/ECN bits of the IP header.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any

SOCKOPT_TYPES = ("int", "string", "byte")
"""SOCKOPT_TYPES are the ways a Sockopt's value is passed to setsockopt."""


@dataclass(frozen=True)
class Sockopt:
    """Sockopt is a raw socket option set on a flow's socket before it is used (setsockopt(2)).

    ``level`` and ``opt`` are numbers, numbers as text (``"0x1"``) or names of
    Python's socket module constants (``SOL_SOCKET``, ``SO_PRIORITY``).
    ``type`` says how ``value`` is passed: ``int`` (a C int), ``string`` (the
    bytes of its text) or ``byte`` (one byte, 0-255); an int or byte value may
    be written as text (``"0x10"``). ``name`` labels the option in messages.
    """

    level: Any
    opt: Any
    value: Any
    type: str = "int"
    name: str = ""

    def validate(self) -> None:
        """Validate raises ValueError for an unknown type, level or option, or a value that does not fit the type."""
        if self.type not in SOCKOPT_TYPES:
            raise ValueError(f"sockopt type {self.type!r} is not one of {', '.join(SOCKOPT_TYPES)}")
        _number(self.level)
        _number(self.opt)
        self.encoded()

    def encoded(self) -> int | bytes:
        """Encoded returns the value as setsockopt takes it, raising ValueError if it does not fit the type."""
        v = self.value
        if isinstance(v, bool):
            raise ValueError(f"sockopt {self.label()}: {self.type} value expected, got {v!r}")
        if self.type == "string":
            if not isinstance(v, (str, int)):
                raise ValueError(f"sockopt {self.label()}: string value expected, got {v!r}")
            return str(v).encode()
        n = _integer(v)
        if self.type == "byte":
            if n is None or not 0 <= n <= 255:
                raise ValueError(f"sockopt {self.label()}: byte value 0-255 expected, got {v!r}")
            return bytes([n])
        if n is None:
            raise ValueError(f"sockopt {self.label()}: int value expected, got {v!r}")
        return n

    def label(self) -> str:
        """Label names the option for messages."""
        return self.name or f"{self.level}/{self.opt}"

    def apply(self, sock: socket.socket) -> None:
        """Apply sets the option on sock, raising OSError (naming the option) if the kernel refuses it."""
        try:
            sock.setsockopt(_number(self.level), _number(self.opt), self.encoded())
        except OSError as e:
            raise OSError(e.errno, f"setting sockopt {self.label()}: {e.strerror or e}") from None


def _integer(v: Any) -> int | None:
    """_integer is v as an int (ints, and text in any base Python reads), or None."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            return int(v, 0)
        except ValueError:
            return None
    return None


def _number(v: Any) -> int:
    """_number is a level or option: a number, a number as text, or a socket module constant's name."""
    n = _integer(v)
    if n is not None:
        return n
    value = getattr(socket, v, None) if isinstance(v, str) else None
    if not isinstance(value, int):
        raise ValueError(f"unknown socket constant {v!r}")
    return int(value)


def set_tos(sock: socket.socket, dscp: int, ecn: int) -> None:
    """Set_tos sets the DSCP and ECN bits of outgoing packets (IP_TOS, or IPV6_TCLASS on IPv6).

    For TCP the kernel manages the ECN bits itself once ECN is negotiated
    (sysctl net.ipv4.tcp_ecn); the DSCP bits are always honoured.
    """
    tos = (dscp << 2) | ecn
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def split_host_port(addr: str) -> tuple[str, int]:
    """Split_host_port returns the host (may be empty) and port of ``host:port``, ``[v6]:port`` or ``:port``.

    Raises ValueError for an address without a port, an IPv6 host without
    brackets, or a port that is not a number in 0..65535.
    """
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        raise ValueError(f"address {addr!r} has no port (use host:port or :port)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"address {addr!r}: write an IPv6 host in brackets, as [::1]:port")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"address {addr!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"address {addr!r}: port {port} out of range")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """Join_host_port formats an address the way split_host_port reads it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
