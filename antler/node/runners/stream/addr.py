"""Stream protocols and socket names as addresses (parsing: antler.node.sockopt.split_host_port)."""

from __future__ import annotations

import socket

from antler.node.sockopt import sock_addr

PROTOCOLS = {"tcp": socket.AF_UNSPEC, "tcp4": socket.AF_INET, "tcp6": socket.AF_INET6}
"""PROTOCOLS maps each stream protocol to its address family (tcp = either)."""


def check_protocol(protocol: str) -> None:
    """Raise ValueError for a protocol other than tcp, tcp4 or tcp6."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")


def sockname(sock: socket.socket) -> str:
    """Return a socket's local address as ``host:port`` (a link-local host with its interface)."""
    return sock_addr(sock)
