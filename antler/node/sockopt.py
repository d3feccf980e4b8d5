"""Socket options and addresses shared by the stream and packet runners.

Addresses are written as antler writes them: ``host:port``, ``[v6]:port`` or
``:port`` (any address). Socket options are raw setsockopt(2) calls and the
DSCP/ECN bits of the IP header.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SOCKOPT_TYPES = ("int", "string", "byte")
"""SOCKOPT_TYPES are the ways a Sockopt's value is passed to setsockopt."""


@dataclass(frozen=True)
class Sockopt:
    """A raw socket option set on a flow's socket before it is used (setsockopt(2)).

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
        """Raise ValueError for an unknown type, level or option, or a value that does not fit the type."""
        if self.type not in SOCKOPT_TYPES:
            raise ValueError(f"sockopt type {self.type!r} is not one of {', '.join(SOCKOPT_TYPES)}")
        _number(self.level)
        _number(self.opt)
        self.encoded()

    def encoded(self) -> int | bytes:
        """Return the value as setsockopt takes it, raising ValueError if it does not fit the type."""
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
        """Name the option for messages."""
        return self.name or f"{self.level}/{self.opt}"

    def apply(self, sock: socket.socket) -> str:
        """Set the option on sock and read it back; return what the kernel granted when it differs, else "".

        The note reads ``sockopt SO_SNDBUF: asked 1000000, granted 425984``:
        the kernel may cap a value (SO_SNDBUF at wmem_max), double it (the
        socket buffers' bookkeeping) or round it, and a reader must see what
        the flow ran with, not only what the config asked (issue 30). An
        option that cannot be read back gives "". Raises OSError (naming the
        option) if the kernel refuses it.
        """
        level, opt, value = _number(self.level), _number(self.opt), self.encoded()
        try:
            sock.setsockopt(level, opt, value)
        except OSError as e:
            raise OSError(e.errno, f"setting sockopt {self.label()}: {e.strerror or e}") from None
        try:
            if isinstance(value, int):
                granted: int | bytes = sock.getsockopt(level, opt)
            else:
                granted = sock.getsockopt(level, opt, max(len(value), 1) + 1).rstrip(b"\0")
        except OSError:
            return ""  # a write-only option
        asked = value if isinstance(value, int) else value.rstrip(b"\0")
        if granted == asked:
            return ""
        return f"sockopt {self.label()}: asked {_shown(asked)}, granted {_shown(granted)}"


def _shown(v: int | bytes) -> str:
    return str(v) if isinstance(v, int) else repr(v.decode(errors="replace"))


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
    """Set the DSCP and ECN bits of outgoing packets (IP_TOS, or IPV6_TCLASS on IPv6).

    For TCP the kernel manages the ECN bits itself once ECN is negotiated
    (sysctl net.ipv4.tcp_ecn); the DSCP bits are always honoured.
    """
    tos = (dscp << 2) | ecn
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, tos)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, tos)


def split_host_port(addr: str) -> tuple[str, int]:
    """Return the host (may be empty) and port of ``host:port``, ``[v6]:port`` or ``:port``.

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
    """Format an address the way split_host_port reads it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


FAMILY_OF = {"tcp4": 4, "udp4": 4, "tcp6": 6, "udp6": 6}
"""FAMILY_OF is the IP version each single-family protocol takes (tcp and udp take either)."""
IF_INET6 = Path("/proc/thread-self/net/if_inet6")
"""IF_INET6 lists the IPv6 addresses of the calling thread's namespace (a node's thread is in its node's)."""


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """_literal is host as an IP address (a zone after % aside), or None for a name."""
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return None


def check_addr(addr: str, protocol: str, key: str, listen: bool = False) -> None:
    """Raise ValueError when an address cannot work with its protocol, naming key, protocol and address.

    A literal of the other IP version than ``tcp4``/``udp4`` or
    ``tcp6``/``udp6`` is refused (the kernel would refuse it at run time,
    with a message naming neither), and so is a link-local IPv6 address to
    listen on without its interface (``[fe80::1%eth0]:port``): only the
    interface tells which link it is on.
    """
    host, _ = split_host_port(addr)
    ip = _literal(host)
    if ip is None:
        return
    want = FAMILY_OF.get(protocol)
    if want is not None and ip.version != want:
        raise ValueError(
            f"{key} {addr!r} is an IPv{ip.version} address, but protocol {protocol} is IPv{want} only "
            f"(use {protocol[:3]}{ip.version} or {protocol[:3]} for this address)"
        )
    if listen and ip.version == 6 and ip.is_link_local and "%" not in host:
        raise ValueError(
            f"{key} {addr!r} is a link-local address without its interface: write it as "
            f"[{host}%IFACE]:port, IFACE the interface on that link"
        )


def link_local_interfaces() -> list[str]:
    """Name the interfaces with an IPv6 link-local address in the calling thread's namespace."""
    try:
        lines = IF_INET6.read_text().split("\n")
    except OSError:
        return []
    # Each line: address, ifindex, prefix length, scope (20 = link), flags, name.
    names = {f[5] for f in (line.split() for line in lines) if len(f) == 6 and f[3] == "20" and f[5] != "lo"}
    return sorted(names)


def zoned(host: str) -> str:
    """Give a link-local IPv6 host the zone of this node's interface; any other host is returned as it is.

    A server publishes its link-local address with its own interface's name
    (``fe80::1%s-veth``), which means nothing on another node: the client
    reaches that link through its own interface, so the zone must be the
    client's. A zone naming one of this node's interfaces is kept; otherwise
    the node's one interface with a link-local address is used. Raises
    ValueError when the node has none, or several and the address does not
    say which.
    """
    ip = _literal(host)
    if ip is None or ip.version != 6 or not ip.is_link_local:
        return host
    addr, _, zone = host.partition("%")
    mine = link_local_interfaces()
    if zone in mine:
        return host
    if len(mine) == 1:
        return f"{addr}%{mine[0]}"
    given = f" (its zone {zone!r} is not an interface here)" if zone else ""
    choices = ", ".join(mine) or "none"
    raise ValueError(
        f"link-local address {host}{given}: this node cannot tell which interface reaches it "
        f"(interfaces with link-local addresses: {choices}); write it as [{addr}%IFACE]:port"
    )


def sock_addr(sock: socket.socket) -> str:
    """Return a socket's local address as ``host:port``, a link-local IPv6 host with its interface's name."""
    name = sock.getsockname()
    host, port = name[0], name[1]
    if sock.family == socket.AF_INET6 and len(name) >= 4 and name[3] and "%" not in host:
        ip = _literal(host)
        if ip is not None and ip.is_link_local:
            with contextlib.suppress(OSError):  # the interface just went: publish without the zone
                host = f"{host}%{socket.if_indextoname(name[3])}"
    return join_host_port(host, port)
