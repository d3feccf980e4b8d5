"""Helpers for tests that build real network namespaces (10.77.0.0/16 only)."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_counter = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command and return its output."""
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns_list() -> set[str]:
    """Return the names of the network namespaces on the host."""
    out = sh("ip", "netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def unique_name(prefix: str = "t") -> str:
    """Return a namespace name unique to this process (<= 15 chars).

    Tests name every namespace they create (directly or through a node) with it:
    the leak check counts only names it made.
    """
    return f"{prefix}{os.getpid() % 100000}-{next(_counter)}"[:15]


def owned_by_me(name: str) -> bool:
    """Report whether a namespace name came from this process's unique_name."""
    return re.fullmatch(rf"[a-zA-Z]*{os.getpid() % 100000}-\d+", name) is not None


@dataclass
class Netns:
    """A namespace a test created; delete it with the fixture."""

    name: str
    created: list[str] = field(default_factory=list)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `ip` inside the namespace."""
        return sh("ip", "-n", self.name, *args, check=check)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace."""
        return sh("ip", "netns", "exec", self.name, *args, check=check)


class NetnsFactory:
    """Creates namespaces and veth links, and deletes them all at the end."""

    def __init__(self) -> None:
        self.made: list[Netns] = []

    def new(self, prefix: str = "t") -> Netns:
        """Create a namespace with loopback up."""
        ns = Netns(unique_name(prefix))
        sh("ip", "netns", "add", ns.name)
        self.made.append(ns)
        ns.ip("link", "set", "lo", "up")
        return ns

    def link(self, a: Netns, a_addr: str, b: Netns, b_addr: str, mtu: int = 1500) -> tuple[str, str]:
        """Join two namespaces with a veth pair, addresses given as 10.77.x.y/24."""
        for addr in (a_addr, b_addr):
            assert addr.startswith("10.77."), "tests use 10.77.0.0/16 only"
        n = next(_counter)
        ia, ib = f"va{os.getpid() % 10000}-{n}"[:15], f"vb{os.getpid() % 10000}-{n}"[:15]
        sh(
            "ip",
            "link",
            "add",
            ia,
            "mtu",
            str(mtu),
            "netns",
            a.name,
            "type",
            "veth",
            "peer",
            "name",
            ib,
            "netns",
            b.name,
        )
        a.ip("addr", "add", a_addr, "dev", ia)
        b.ip("addr", "add", b_addr, "dev", ib)
        a.ip("link", "set", ia, "up")
        b.ip("link", "set", ib, "up")
        return ia, ib

    def close(self) -> None:
        """Delete every namespace made (their veths go with them)."""
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns.name, check=False)
        self.made.clear()


@contextmanager
def netns_factory() -> Iterator[NetnsFactory]:
    """Yield a factory whose namespaces are deleted on exit, on failure too."""
    f = NetnsFactory()
    try:
        yield f
    finally:
        f.close()
