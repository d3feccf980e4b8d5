"""Placing a sweep's tests on hosts: which test runs where, and when.

Each host takes at most ``per_host`` tests at once (``sweep.per_host``),
because tests sharing a host disturb each other's measurements. A test runs
wholly on one host of the sweep (its nodes that name no host go there) and
also occupies every cluster host its nodes name themselves, so it waits until
all of them have room. Tests start in queue order; one that must wait
reserves the hosts it names, so later tests cannot keep them busy for ever
(a test pinned to two hosts would otherwise starve behind tests using one).

Every running test gets a tag no other running test has, for the names of
the namespaces it creates (:mod:`antler.invoke.sweep.tree`): two tests on one kernel never
collide, whichever host names they run under.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")

DRIVER = ""
"""DRIVER is the one host of an invocation without sweep.hosts: tests run one at a time, nodes where they say."""


@dataclass(frozen=True)
class Needs:
    """What a test asks of the hosts: the cluster hosts its nodes name, and whether it takes a sweep host.

    A test whose every node names its host runs on those alone; any other
    (one with an unpinned node, or none at all) takes one host of the sweep.
    """

    pinned: frozenset[str] = frozenset()
    sweep_host: bool = True


@dataclass(frozen=True)
class Placement:
    """Where one test runs: its sweep host (DRIVER if none), the hosts it occupies, its tag."""

    host: str
    occupies: tuple[str, ...]
    tag: int

    @property
    def suffix(self) -> str:
        """Ends the names of the namespaces the test creates (``ar-left`` becomes ``ar-left-t3``)."""
        return f"-t{self.tag}"


@dataclass
class Hosts:
    """Tracks the room on each host: at most per_host tests at once; lost hosts take no more.

    ``cluster`` lists every host a pinned node may name (its occupancy is
    counted too); hosts outside it (unknown to the cluster) are not counted,
    so a test naming one runs, and fails at launch with the usual error.
    """

    sweep: list[str]
    per_host: int = 1
    cluster: set[str] = field(default_factory=set)
    busy: dict[str, int] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    _tags: set[int] = field(default_factory=set)

    def alive(self) -> list[str]:
        """List the sweep's hosts that were not lost, in order."""
        return [h for h in self.sweep if h not in self.lost]

    def capacity(self) -> int:
        """Return how many tests may run at once on the sweep's live hosts."""
        return len(self.alive()) * self.per_host

    def _room(self, host: str) -> bool:
        return self.busy.get(host, 0) < self.per_host

    def place(self, needs: Needs, reserved: set[str]) -> Placement | None:
        """Take room for a test, or return None when it must wait (or can never run: see runnable)."""
        counted = {h for h in needs.pinned if h in self.cluster or h in self.sweep}
        if any(not self._room(h) or h in reserved for h in counted):
            return None
        host = ""
        if needs.sweep_host:
            free = [h for h in self.alive() if self._room(h) and h not in reserved]
            if not free:
                return None
            # The least busy host first, then the sweep's order: tests spread out.
            host = min(free, key=lambda h: (self.busy.get(h, 0), self.sweep.index(h)))
        occupies = tuple(sorted(counted | ({host} if needs.sweep_host else set())))
        for h in occupies:
            self.busy[h] = self.busy.get(h, 0) + 1
        tag = next(t for t in range(len(self._tags) + 1) if t not in self._tags)
        self._tags.add(tag)
        return Placement(host, occupies, tag)

    def release(self, p: Placement) -> None:
        """Give back the room a test took."""
        for h in p.occupies:
            self.busy[h] -= 1
        self._tags.discard(p.tag)

    def lose(self, host: str) -> None:
        """Stop placing tests on a host (one of its nodes was lost)."""
        self.lost.add(host)

    def runnable(self, needs: Needs) -> bool:
        """Tell whether a test could ever be placed (not when every sweep host is lost)."""
        return not needs.sweep_host or bool(self.alive())


@dataclass
class Queue(Generic[T]):
    """Holds the tests not yet started, in order, with what each needs."""

    items: list[tuple[T, Needs]]

    def __len__(self) -> int:
        return len(self.items)

    def start(self, hosts: Hosts) -> list[tuple[T, Placement]]:
        """Place as many queued tests as fit now, in queue order, and remove them from the queue.

        A test that must wait reserves the hosts it names, so no later test takes them meanwhile.
        """
        started: list[tuple[T, Placement]] = []
        reserved: set[str] = set()
        waiting: list[tuple[T, Needs]] = []
        for item, needs in self.items:
            p = hosts.place(needs, reserved)
            if p is None:
                waiting.append((item, needs))
                reserved |= needs.pinned
            else:
                started.append((item, p))
        self.items = waiting
        return started

    def drop(self, keep: Callable[[Needs], bool]) -> list[T]:
        """Remove and return the queued tests that keep refuses."""
        gone = [item for item, needs in self.items if not keep(needs)]
        self.items = [(item, needs) for item, needs in self.items if keep(needs)]
        return gone


def needs_of(hosts_named: Iterable[str], has_unpinned: bool) -> Needs:
    """Build a test's Needs from the hosts its nodes name and whether any node names none."""
    pinned = frozenset(h for h in hosts_named if h)
    return Needs(pinned, has_unpinned or not pinned)
