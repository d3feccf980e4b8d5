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
                              ├─ forward bottleneck at mid_right's egress: htb rate + qdisc
                              └─ reverse bottleneck at mid_left's egress: its own htb + qdisc
                                 (or the userspace ones, in the delay link: rig.bottleneck)

Both directions are shaped by default, each its own bottleneck and queue
(:mod:`antler.rig.lanes`); ``rig.forward`` and ``rig.reverse`` make them
differ, ``rig.trace`` paces one from a Mahimahi trace (:mod:`antler.rig.trace`)
and ``rig.schedule`` changes them during the test (:mod:`antler.rig.schedule`).
"""

from __future__ import annotations

import functools
import ipaddress
import pathlib
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
from antler.rig.kernel import RigError, choose_emulator, tcp_ecn_accepts
from antler.rig.lanes import DIRECTIONS, Direction, Lane, one_way_default
from antler.rig.schedule import ScheduleStep, check_schedule
from antler.rig.trace import resolve_trace
from antler.rig.where import choose

LIMIT_IN_PACKETS = ("pfifo", "pfifo_head_drop", "fq_codel", "codel", "pie", "fq_pie", "fq", "sfq", "netem")
"""LIMIT_IN_PACKETS are the qdiscs whose ``limit`` parameter counts packets, so rig.limit applies."""
PREFIX_LEN = 24
"""PREFIX_LEN is the length of the rig's two subnets (left - mid and mid - right)."""
ROLES = ("left", "mid_left", "mid_right", "right")
"""ROLES names the path's four interfaces and addresses, left to right."""
SENDERS = ("left1", "left2", "left3", "left4")
"""SENDERS name the left nodes (and addresses) of a multi-sender dumbbell (rig.senders), at most four."""
BOTTLENECKS = ("auto", "kernel", "userspace")
"""BOTTLENECKS are rig.bottleneck's values: the kernel's htb + qdisc, the delay link's own, or auto (kernel first)."""
TCP_ECN = {"off": None, "on": 1, "accecn": 3}
"""TCP_ECN maps rig.ecn to the ends' net.ipv4.tcp_ecn (None: left as the kernel's default 2, which never asks for ECN)."""


_CONFIG_DIR: list[pathlib.Path | None] = [None]


def set_config_dir(config_dir: pathlib.Path | None) -> None:
    """Remember the config dir (``--config-dir``) where a ``py:MODULE:CLASS`` qdisc's MODULE.py is looked for first."""
    _CONFIG_DIR[0] = config_dir


def config_dir() -> pathlib.Path | None:
    """Return the config dir set by :func:`set_config_dir` (None: none given)."""
    return _CONFIG_DIR[0]


@dataclass(frozen=True)
class Addresses:
    """The path's IPv4 addresses, one subnet (/24) on each side of mid."""

    left: str
    mid_left: str
    mid_right: str
    right: str
    left1: str = ""
    left2: str = ""
    left3: str = ""
    left4: str = ""

    def validate(self) -> None:
        """Check that each is an IPv4 address and that each side shares a /24, distinct from the other."""
        for name in SENDERS[: sum(1 for n in SENDERS if getattr(self, n))]:
            a = getattr(self, name)
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(f"addr.{name} {a!r} is not an IPv4 address") from None
            if self.net(name) != self.net("mid_left") or a == self.mid_left:
                raise ValueError(f"addr.{name} {a!r} must be in addr.mid_left's /{PREFIX_LEN} and differ from it")
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
    left1: Node | None = None
    left2: Node | None = None
    left3: Node | None = None
    left4: Node | None = None

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
    bottleneck: str
    qdisc_interval: Duration
    ecn: str
    rtt: Duration
    loss: Probability
    emulator: str
    offloads: bool
    seed: int | None
    python: str
    forward: Direction
    reverse: Direction
    trace: str
    schedule: list[ScheduleStep]
    senders: list[Duration]

    def validate_path(self) -> None:
        """Check the values that need no kernel to check (a trace's file is read)."""
        if len(self.senders) > len(SENDERS):
            raise FieldError("senders", f"{len(self.senders)} senders: at most {len(SENDERS)}")
        for i, rtt in enumerate(self.senders):
            if rtt.ns <= 0:
                raise FieldError(f"senders[{i}]", f"{rtt}: each sender's RTT must be above 0")
        if self.senders and (self.forward.delay is not None or self.reverse.delay is not None):
            raise FieldError("senders", "each sender has its own RTT: leave forward.delay and reverse.delay out")
        if self.trace and self.forward.trace:
            raise FieldError("trace", "set rig.trace or rig.forward.trace, not both")
        for name in DIRECTIONS:
            d: Direction = getattr(self, name)
            if d.qdisc is not None and not d.qdisc.split():
                raise FieldError(f"{name}.qdisc", "empty (use e.g. pfifo)")
        for field, text in (
            ("trace", self.trace),
            ("forward.trace", self.forward.trace),
            ("reverse.trace", self.reverse.trace),
        ):
            if text:
                try:
                    resolve_trace(text)
                except ValueError as e:
                    raise FieldError(field, str(e)) from None
        if not self.qdisc.split():
            raise FieldError("qdisc", "empty (use e.g. pfifo)")
        if self.limit < 0:
            raise FieldError("limit", f"{self.limit} is negative")
        if self.emulator not in ("auto", "netem", "tun"):
            raise FieldError("emulator", f"{self.emulator!r} must be auto, netem or tun")
        if self.bottleneck not in BOTTLENECKS:
            raise FieldError("bottleneck", f"{self.bottleneck!r} must be {', '.join(BOTTLENECKS[:-1])} or userspace")
        if self.ecn not in TCP_ECN:
            raise FieldError("ecn", f"{self.ecn!r} must be off, on or accecn")
        if self.qdisc_interval.ns < 1_000_000:
            raise FieldError("qdisc_interval", f"{self.qdisc_interval} is below 1ms")
        if self.bottleneck == "userspace" and not self.rate.bps:
            raise FieldError("bottleneck", "userspace needs a rate to serialise at (rig.rate is 0)")
        if self.bottleneck == "userspace" and self.emulator == "netem":
            raise FieldError("emulator", "netem cannot be used with rig.bottleneck=userspace (it runs in the TUN link)")

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
        return qdisc_words(self.qdisc, self.limit)

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
    return {name: nodes[name] for name in ("left", "mid", "right", *SENDERS) if name in nodes}


def qdisc_words(qdisc: str, limit: int) -> list[str]:
    """Return a qdisc's tc words with ``limit`` added where its kind counts packets and none is given."""
    words = qdisc.split()
    if limit and words and words[0] in LIMIT_IN_PACKETS and "limit" not in words:
        words += ["limit", str(limit)]
    return words


def lanes(path: Path) -> tuple[Lane, Lane]:
    """Return the path's forward and reverse directions, each value resolved, raising ConfigError.

    A direction's unset values take the path's (rig.rate, rig.qdisc, half
    of rig.rtt); each direction's bottleneck is chosen as :func:`bottleneck`
    chooses the forward one. Loss applies to forward only.
    """
    out = []
    for name in DIRECTIONS:
        d: Direction = getattr(path, name)
        rate = path.rate if d.rate is None else d.rate
        qdisc = path.qdisc if d.qdisc is None else d.qdisc
        trace_text = d.trace or (path.trace if name == "forward" else "")
        try:
            trace = resolve_trace(trace_text) if trace_text else ""
        except ValueError as e:
            raise ConfigError(
                f"rig.{'trace' if name == 'forward' and path.trace else name + '.trace'}", str(e)
            ) from None
        delay = one_way_default(path.rtt) if d.delay is None else d.delay
        if path.senders:
            # The return is shared: half the shortest RTT; each sender's forward link adds the rest of its own.
            back = min(r.ns for r in path.senders) // 2
            delay = Duration(back if name == "reverse" else path.senders[0].ns - back)
        words = qdisc_words(qdisc, path.limit)
        key = f"rig.{name}" if d.qdisc or d.rate is not None else "rig"
        where = choose(path.bottleneck, path.emulator, name, key, words, rate.bps, trace, config_dir())
        loss = path.loss_probability if name == "forward" else 0.0
        out.append(Lane(name, 0 if trace else rate.bps, " ".join(words), delay.ns, loss, trace, where))
    return out[0], out[1]


def check(path: Path) -> str:
    """Verify this kernel can build the path and return its delay emulator, raising ConfigError.

    The emulator is ``netem`` or ``tun``, or ``none`` when the path adds
    neither delay nor loss (nor changes them on a schedule). A userspace
    bottleneck in either direction (:func:`lanes`) runs in the TUN delay
    link, so its emulator is then ``tun``. Every schedule step is checked
    against the directions it changes.
    """
    value = TCP_ECN[path.ecn]
    if value is not None and value != 1 and not tcp_ecn_accepts(value):
        raise ConfigError("", f"rig.ecn {path.ecn!r}: this kernel's net.ipv4.tcp_ecn refuses {value} (no AccECN)")
    fwd, ret = lanes(path)
    check_schedule(path.schedule, fwd, ret)
    if path.senders and (fwd.where == "userspace" or path.emulator == "netem"):
        why = "the userspace forward bottleneck" if fwd.where == "userspace" else "rig.emulator netem"
        raise ConfigError(
            "rig.senders", f"several senders share the kernel's forward bottleneck and the TUN link, not {why}"
        )
    try:
        if "userspace" in (fwd.where, ret.where):
            return choose_emulator("tun")
        emulator = choose_emulator(path.emulator)
    except RigError as e:
        # The message names its key (rig.qdisc, rig.emulator) and what the kernel has.
        raise ConfigError("", str(e)) from None
    delays = fwd.delay_ns or ret.delay_ns or fwd.loss
    changes = any(step.rtt is not None or step.loss is not None for step in path.schedule)
    if path.senders:
        # Each sender's own delay is a TUN link of its own.
        try:
            return choose_emulator("tun")
        except RigError as e:
            raise ConfigError("", str(e)) from None
    return emulator if delays or changes else "none"


def sender_delays(path: Path) -> list[int]:
    """Return each sender's forward one-way delay (ns): its RTT less the shared return's (half the shortest)."""
    if not path.senders:
        return []
    back = min(r.ns for r in path.senders) // 2
    return [r.ns - back for r in path.senders]


def bottleneck(path: Path) -> str:
    """Return the forward direction's bottleneck, ``kernel`` (htb + qdisc) or ``userspace`` (the TUN link's), raising ConfigError.

    rig.bottleneck ``auto`` takes the kernel's qdisc when the kernel has
    rig.qdisc's kind (and htb, when shaped), else the userspace one when it
    implements that kind; neither is a ConfigError naming what each offers.
    The qdisc's parameters are checked by the userspace queue's own parser.
    A trace always runs on the userspace bottleneck. Each direction's is
    in :func:`lanes`.
    """
    return lanes(path)[0].where


def userspace_lanes(path: Path) -> list[Lane]:
    """Return the directions whose bottleneck is the delay link's (none, one or both)."""
    return [lane for lane in lanes(path) if lane.where == "userspace"]


def summary(kind: str, path: Path, emulator: str) -> str:
    """Return the one log line that says what the rig emulates and how, each direction's bottleneck named."""
    fwd, ret = lanes(path)
    steps = f" schedule of {len(path.schedule)} steps" if path.schedule else ""
    return (
        f"rig {kind}: forward {fwd.describe()} delay {fwd.delay_ns / 1e6:g}ms; reverse {ret.describe()} delay "
        f"{ret.delay_ns / 1e6:g}ms; rtt {(fwd.delay_ns + ret.delay_ns) / 1e6:g}ms loss {path.loss_probability * 100:g}% "
        f"emulator {emulator}{steps}"
    )


def facts(path: Path, emulator: str) -> dict[str, Any]:
    """Return the path's parameters as built, for meta.json: the forward ones at the top, each direction's under its name."""
    fwd, ret = lanes(path)
    where = fwd.where
    return {
        "emulator": emulator,
        "rate_bps": fwd.rate_bps,
        "bottleneck": where,
        "shaper": ("htb" if where == "kernel" else "userspace") if fwd.shaped else "none",
        "qdisc": fwd.qdisc,
        "rtt_ms": (fwd.delay_ns + ret.delay_ns) / 1e6,
        "loss": path.loss_probability,
        "offloads": path.offloads,
        "forward": fwd.facts(),
        "reverse": ret.facts(),
        "schedule": [step.facts() for step in path.schedule],
        "senders_rtt_ms": [r.ns / 1e6 for r in path.senders],
        "ecn": path.ecn,
    }
