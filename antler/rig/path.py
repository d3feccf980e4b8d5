"""The emulated path that every rig builds, left -- mid -- right: its parameters and their defaults.

A rig decides where left, mid and right are (namespaces of one host in the
``dumbbell``, cluster hosts in the ``testbed``) and how their test interfaces
come to exist; both then take the same parameters (``rig.rate``, ``rig.rtt``,
...: :class:`Path`), checked against the kernel the same way (:func:`check`),
and the same steps (:mod:`antler.rig.path_steps`), so the science is the same
code on either::

    left  ifaces.left ─── ifaces.mid_left  mid  ifaces.mid_right ─── ifaces.right  right
    addr.left             addr.mid_left         addr.mid_right       addr.right
                              │  delay (rtt/2 each way), loss towards right
                              └─ bottleneck at mid_right's egress: htb rate + qdisc
"""

from __future__ import annotations

import functools
import ipaddress
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from antler.node.metric import Bitrate, Duration, Probability
from antler.node.nodespec import Node
from antler.node.spec import ConfigError, FieldError, first_line
from antler.rig.kernel import RigError, check_qdisc, choose_emulator

LIMIT_IN_PACKETS = ("pfifo", "pfifo_head_drop", "fq_codel", "codel", "pie", "fq_pie", "fq", "sfq", "netem")
"""LIMIT_IN_PACKETS are the qdiscs whose ``limit`` parameter counts packets, so rig.limit applies."""
PREFIX_LEN = 24
"""PREFIX_LEN is the length of the rig's two subnets (left - mid and mid - right)."""
ROLES = ("left", "mid_left", "mid_right", "right")
"""ROLES names the path's four interfaces and addresses, left to right."""


@dataclass(frozen=True)
class Addresses:
    """The path's IPv4 addresses, one subnet (/24) on each side of mid."""

    left: str
    mid_left: str
    mid_right: str
    right: str

    def validate(self) -> None:
        """Check that each is an IPv4 address and that each side shares a /24, distinct from the other."""
        for name in ROLES:
            a = getattr(self, name)
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(f"addr.{name} {a!r} is not an IPv4 address") from None
        if self.net("left") != self.net("mid_left") or self.net("right") != self.net("mid_right"):
            raise ValueError(
                f"addr.left and addr.mid_left, and addr.right and addr.mid_right, must share a /{PREFIX_LEN}"
            )
        if self.net("left") == self.net("right"):
            raise ValueError(f"the left and right sides need different /{PREFIX_LEN} subnets")
        if len({getattr(self, n) for n in ROLES}) != 4:
            raise ValueError("the four addresses must differ")

    def net(self, name: str) -> str:
        """Return the subnet of one address, e.g. ``10.77.1.0/24``."""
        return str(ipaddress.IPv4Interface(f"{getattr(self, name)}/{PREFIX_LEN}").network)


@dataclass(frozen=True)
class Ifaces:
    """Name the path's network interfaces: left's, mid's two (towards left and right) and right's."""

    left: str
    mid_left: str
    mid_right: str
    right: str

    def validate(self) -> None:
        """Check each is a name Linux accepts (1-15 characters, no / or space) and mid's two differ."""
        for name in ROLES:
            dev = getattr(self, name)
            if dev in ("", "???"):
                raise ValueError(f"ifaces.{name} is required (the interface's name on its host)")
            if len(dev) > 15 or any(c in dev for c in "/: \t") or dev in (".", ".."):
                raise ValueError(f"ifaces.{name} {dev!r} is not an interface name")
        if self.mid_left == self.mid_right:
            raise ValueError(f"ifaces.mid_left and ifaces.mid_right are both {self.mid_left!r}")


@dataclass(frozen=True)
class Nodes:
    """The path's three node specs; experiments use the same ones in their child runs.

    Each rig says what they are: namespaced nodes of this host in the
    dumbbell, Ray actors on the three cluster hosts in the testbed.
    """

    left: Node
    mid: Node
    right: Node

    def validate(self) -> None:
        """Require three distinct node IDs."""
        ids = [self.left.id, self.mid.id, self.right.id]
        if len(set(ids)) != 3:
            raise ValueError(f"the rig's nodes need distinct IDs, got {ids}")


@dataclass(frozen=True)
class Path:
    """The emulated path's parameters, the same keys in every rig (``rig.rate``, ``rig.rtt``, ...).

    Like every rig field it has no default here: a rig's defaults are written
    once, in its packaged ``conf/rig/KIND.yaml`` (see :func:`with_defaults`).
    """

    rate: Bitrate
    qdisc: str
    limit: int
    rtt: Duration
    loss: Probability
    emulator: str
    offloads: bool
    seed: int | None
    python: str

    def validate_path(self) -> None:
        """Check the values that need no kernel to check."""
        if not self.qdisc.split():
            raise FieldError("qdisc", "empty (use e.g. pfifo)")
        if self.limit < 0:
            raise FieldError("limit", f"{self.limit} is negative")
        if self.emulator not in ("auto", "netem", "tun"):
            raise FieldError("emulator", f"{self.emulator!r} must be auto, netem or tun")

    @property
    def loss_probability(self) -> float:
        """Rig.loss as a probability in [0, 1]."""
        return self.loss.p

    @property
    def qdisc_kind(self) -> str:
        """The bottleneck qdisc's kind (the first word of rig.qdisc)."""
        return self.qdisc.split()[0]

    def qdisc_args(self) -> list[str]:
        """Return the bottleneck qdisc with its parameters, rig.limit added where it counts packets."""
        words = self.qdisc.split()
        if self.limit and self.qdisc_kind in LIMIT_IN_PACKETS and "limit" not in words:
            words += ["limit", str(self.limit)]
        return words

    def one_way(self) -> Duration:
        """Return the delay added in each direction, half the RTT."""
        return Duration(self.rtt.ns // 2)

    @property
    def python_exe(self) -> str:
        """The Python that runs the rig's helpers on its hosts: rig.python, else this one."""
        return self.python or sys.executable


def with_defaults(kind: str, data: Any) -> Any:
    """Return rig data with what it leaves out taken from the packaged conf/rig/KIND.yaml.

    That file is the one place a rig's defaults are written; its
    interpolations are resolved after the merge, so default nodes follow the
    data (the dumbbell's ``netns_prefix``, the testbed's ``hosts``). Merging is
    Hydra's (mappings key by key), so data Hydra composed comes back equal.
    Data that is not a mapping is returned as it is, for the parser to refuse
    with its path. Raises ConfigError when an interpolation cannot resolve
    (a required value left out).
    """
    if not isinstance(data, dict):
        return data
    merged = OmegaConf.merge({"rig": _packaged_defaults(kind)}, {"rig": data})
    try:
        plain = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise ConfigError(str(getattr(e, "full_key", "") or "rig"), first_line(e)) from None
    assert isinstance(plain, dict)
    return plain["rig"]


@functools.cache
def _packaged_defaults(kind: str) -> dict[str, Any]:
    text = (resources.files("antler") / "conf" / "rig" / f"{kind}.yaml").read_text()
    defaults: dict[str, Any] = yaml.safe_load(text)
    return defaults


def node_data(kind: str, data: Any) -> dict[str, Any]:
    """Return each node's config data as given (or by default), so it equals the experiment's own node values."""
    nodes = with_defaults(kind, data)["nodes"]
    return {name: nodes[name] for name in ("left", "mid", "right")}


def check(path: Path) -> str:
    """Verify this kernel can build the path and return its delay emulator, raising ConfigError.

    The emulator is ``netem`` or ``tun``, or ``none`` when the path adds
    neither delay nor loss.
    """
    try:
        check_qdisc(path.qdisc_kind)
        if path.rate.bps:
            check_qdisc("htb", "the bottleneck shaper")
        emulator = choose_emulator(path.emulator)
    except RigError as e:
        # The message names its key (rig.qdisc, rig.emulator) and what the kernel has.
        raise ConfigError("", str(e)) from None
    return emulator if path.rtt.ns or path.loss_probability else "none"


def summary(kind: str, path: Path, emulator: str) -> str:
    """Return the one log line that says what the rig emulates and how."""
    return (
        f"rig {kind}: rate {path.rate if path.rate.bps else 'unshaped'} qdisc {' '.join(path.qdisc_args())} "
        f"rtt {path.rtt} loss {path.loss_probability * 100:g}% emulator {emulator}"
    )


def facts(path: Path, emulator: str) -> dict[str, Any]:
    """Return the path's parameters as built, for meta.json."""
    return {
        "emulator": emulator,
        "rate_bps": path.rate.bps,
        "shaper": "htb" if path.rate.bps else "none",
        "qdisc": " ".join(path.qdisc_args()),
        "rtt_ms": path.rtt.ns / 1e6,
        "loss": path.loss_probability,
        "offloads": path.offloads,
    }
