"""SweepSpec: where a sweep's tests run, the ``sweep`` key of the config.

With ``sweep.hosts`` empty (the default) the tests of an invocation run one
after another, their nodes on the driver's host unless a node names its own.
With hosts named, each test runs wholly on one of them, the tests in parallel
across the hosts (antler.invoke.sweep, which schedules them). The names are the hosts'
``host:NAME`` Ray resources; ``all`` takes every host the cluster declares.

``repeat: N`` runs each combination N times, as the tests whose ID key
``rep`` is 1..N (antler.config.compose); ``shuffle: true`` runs the
invocation's tests in the order of a random permutation seeded with
``seed`` (flent's way of spreading slow drifts of the testbed over the
combinations), each test's meta.json recording its ``order``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from antler.node.nodespec import NODE_ID
from antler.node.spec import ConfigError

ALL = "all"
"""ALL as sweep.hosts takes every host the cluster has."""


@dataclass(frozen=True)
class SweepSpec:
    """The ``sweep`` key: the hosts a sweep's tests are placed on, and how many per host at once.

    ``per_host`` > 1 lets tests share a host, which disturbs their
    measurements: keep 1 unless the tests are light.
    """

    hosts: tuple[str, ...] = ()
    all_hosts: bool = False
    per_host: int = 1
    repeat: int = 1
    shuffle: bool = False
    seed: int = 0

    @property
    def enabled(self) -> bool:
        """True when tests are placed on hosts (in parallel), false for today's one-after-another."""
        return self.all_hosts or bool(self.hosts)

    def resolve(self, cluster: Mapping[str, Any]) -> list[str]:
        """Return the host names to use, given the cluster's hosts; ConfigError for a name it lacks."""
        have = ", ".join(sorted(cluster)) or "none (no raylet declares a host:NAME resource)"
        if self.all_hosts:
            if not cluster:
                raise ConfigError(
                    "sweep.hosts",
                    "'all': the Ray cluster has no hosts; start each raylet with "
                    """--resources '{"host:NAME": 1}'""",
                )
            return sorted(cluster)
        missing = [h for h in self.hosts if h not in cluster]
        if missing:
            raise ConfigError(
                "sweep.hosts", f"{', '.join(map(repr, missing))} not in the Ray cluster; its hosts: {have}"
            )
        return list(self.hosts)


def sweep_spec(config: Mapping[str, Any], swept: Mapping[str, str] | None = None) -> SweepSpec:
    """Read the ``sweep`` key of a resolved config, raising ConfigError naming the bad value."""
    for key in swept or {}:
        if key.startswith("sweep.") or key == "sweep":
            raise ConfigError(key, "is not sweepable: give one value (a list of hosts needs brackets: [a,b])")
    data = config.get("sweep") or {}
    if not isinstance(data, Mapping):
        raise ConfigError("sweep", f"expected a mapping, got {data!r}")
    unknown = set(data) - {"hosts", "per_host", "repeat", "shuffle", "seed"}
    if unknown:
        raise ConfigError(
            f"sweep.{sorted(unknown)[0]}", "unknown key (sweep has hosts, per_host, repeat, shuffle and seed)"
        )
    hosts = data.get("hosts") or ()
    per_host = _whole(data, "per_host", 1, 1)
    order = {
        "repeat": _whole(data, "repeat", 1, 1),
        "shuffle": data.get("shuffle", False),
        "seed": _whole(data, "seed", 0, 0),
    }
    if not isinstance(order["shuffle"], bool):
        raise ConfigError("sweep.shuffle", f"{order['shuffle']!r} must be true or false")
    if hosts == ALL:
        return SweepSpec(all_hosts=True, per_host=per_host, **order)
    if isinstance(hosts, str):
        hosts = [hosts]
    if not isinstance(hosts, (list, tuple)):
        raise ConfigError("sweep.hosts", f"{hosts!r} must be a list of host names, or all")
    names = tuple(str(h) for h in hosts)
    for h in names:
        if not NODE_ID.fullmatch(h):
            raise ConfigError("sweep.hosts", f"{h!r} is not a host name")
    if len(set(names)) != len(names):
        raise ConfigError("sweep.hosts", f"{list(names)} names a host twice (use sweep.per_host for more per host)")
    return SweepSpec(hosts=names, per_host=per_host, **order)


def _whole(data: Mapping[str, Any], key: str, default: int, least: int) -> int:
    """_whole is ``sweep.KEY`` as a whole number >= least, raising ConfigError naming it."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"sweep.{key}", f"{value!r} must be a whole number >= {least}")
    return value
