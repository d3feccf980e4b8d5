"""Addresses as antler writes them (``host:port``, ``[v6]:port``, ``:port``) and the protocols."""

from __future__ import annotations

import socket

PROTOCOLS = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}
"""PROTOCOLS maps each stream protocol to its address family (tcp = either)."""


def check_protocol(protocol: str) -> None:
    """Check_protocol raises ValueError for a protocol other than tcp, tcp4 or tcp6."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


def split_host_port(addr: str) -> tuple[str, int]:
    """Split_host_port returns the host (may be empty) and port of ``host:port`` or ``[v6]:port``."""
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


def sockname(sock: socket.socket) -> str:
    """Sockname returns a socket's local address as ``host:port``."""
    host, port = sock.getsockname()[:2]
    return join_host_port(host, port)


def peername(sock: socket.socket) -> str:
    """Peername returns a socket's remote address as ``host:port``, or ``?`` if it is gone."""
    try:
        host, port = sock.getpeername()[:2]
    except OSError:
        return "?"
    return join_host_port(host, port)
