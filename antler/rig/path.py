"""The emulated path that every rig builds: left -- mid -- right, with the bottleneck, delay and loss at mid.

A rig decides where left, mid and right are (namespaces of one host in the
``dumbbell``, cluster hosts in the ``testbed``) and how their test interfaces
come to exist; this module makes the steps both then take, so the science
is the same code on either::

    left  ifaces.left ─── ifaces.mid_left  mid  ifaces.mid_right ─── ifaces.right  right
    addr.left             addr.mid_left         addr.mid_right       addr.right
                              │  delay (rtt/2 each way), loss towards right
                              └─ bottleneck at mid_right's egress: htb rate + qdisc

Delay and loss come from ``netem`` where the kernel has it, else from the
userspace delay link (:mod:`antler.rig.delay`): two persistent TUN devices in
mid, ``d-fwd`` for traffic from left and ``d-ret`` for traffic from right,
chosen by policy routing on the incoming interface. Either way the forward
delay comes before the bottleneck queue, and loss applies towards right only
(the data direction of an upload), so a ping's loss is rig.loss.

Every setting is made on the path's own interfaces, never host-wide: mid
forwards only between its two test interfaces (and the TUN devices), so on a
testbed host the management interface is never touched. Tear-down undoes
the settings in reverse, so a host is left as the set-up found it (the TUN
delay link is stopped first, so it ends cleanly and reports its counters).

The steps are plain run-tree data (``{"system": {...}}``), run on the rig's
nodes as child runs, so every step shows in the test's log.
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

from antler.config.parse import ConfigError
from antler.node.metric import Bitrate, Duration, Probability
from antler.rig.kernel import RigError, check_qdisc, choose_emulator

TUN_FWD, TUN_RET = "d-fwd", "d-ret"
IFB_FWD = "ifb-fwd"
TABLE_FWD, TABLE_RET = 100, 101
TUN_TXQUEUELEN = 10000
"""TUN_TXQUEUELEN lets the TUN devices queue bursts while the delay link is busy (the default 500 drops)."""
NETEM_LIMIT = 100000
"""NETEM_LIMIT is netem's queue in packets: it holds a whole delay's worth of packets (netem's default is 1000)."""
LIMIT_IN_PACKETS = ("pfifo", "pfifo_head_drop", "fq_codel", "codel", "pie", "fq_pie", "fq", "sfq", "netem")
"""LIMIT_IN_PACKETS are the qdiscs whose ``limit`` parameter counts packets, so rig.limit applies."""
PREFIX_LEN = 24
"""PREFIX_LEN is the length of the rig's two subnets (left - mid and mid - right)."""
ROLES = ("left", "mid_left", "mid_right", "right")
"""ROLES names the path's four interfaces and addresses, left to right."""


@dataclass(frozen=True)
class Addresses:
    """Addresses are the path's IPv4 addresses, one subnet (/24) on each side of mid."""

    left: str
    mid_left: str
    mid_right: str
    right: str

    def validate(self) -> None:
        """Validate checks that each is an IPv4 address and that each side shares a /24, distinct from the other."""
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
        """Net is the subnet of one address, e.g. ``10.77.1.0/24``."""
        return str(ipaddress.IPv4Interface(f"{getattr(self, name)}/{PREFIX_LEN}").network)


@dataclass(frozen=True)
class Ifaces:
    """Ifaces name the path's network interfaces: left's, mid's two (towards left and right) and right's."""

    left: str
    mid_left: str
    mid_right: str
    right: str

    def validate(self) -> None:
        """Validate checks each is a name Linux accepts (1-15 characters, no / or space) and mid's two differ."""
        for name in ROLES:
            dev = getattr(self, name)
            if dev in ("", "???"):
                raise ValueError(f"ifaces.{name} is required (the interface's name on its host)")
            if len(dev) > 15 or any(c in dev for c in "/: \t") or dev in (".", ".."):
                raise ValueError(f"ifaces.{name} {dev!r} is not an interface name")
        if self.mid_left == self.mid_right:
            raise ValueError(f"ifaces.mid_left and ifaces.mid_right are both {self.mid_left!r}")


@dataclass(frozen=True)
class Path:
    """Path is the emulated path's parameters, the same keys in every rig (``rig.rate``, ``rig.rtt``, ...).

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
        """Validate_path checks the values that need no kernel to check."""
        if not self.qdisc.split():
            raise ValueError("qdisc is empty (use e.g. pfifo)")
        if self.limit < 0:
            raise ValueError(f"limit {self.limit} is negative")
        if self.emulator not in ("auto", "netem", "tun"):
            raise ValueError(f"emulator {self.emulator!r} must be auto, netem or tun")

    @property
    def loss_probability(self) -> float:
        """Loss_probability is rig.loss as a probability in [0, 1]."""
        return self.loss.p

    @property
    def qdisc_kind(self) -> str:
        """Qdisc_kind is the bottleneck qdisc's kind (the first word of rig.qdisc)."""
        return self.qdisc.split()[0]

    def qdisc_args(self) -> list[str]:
        """Qdisc_args is the bottleneck qdisc with its parameters, rig.limit added where it counts packets."""
        words = self.qdisc.split()
        if self.limit and self.qdisc_kind in LIMIT_IN_PACKETS and "limit" not in words:
            words += ["limit", str(self.limit)]
        return words

    def one_way(self) -> Duration:
        """One_way is the delay added in each direction, half the RTT."""
        return Duration(self.rtt.ns // 2)

    @property
    def python_exe(self) -> str:
        """Python_exe is the Python that runs the rig's helpers on its hosts: rig.python, else this one."""
        return self.python or sys.executable


def with_defaults(kind: str, data: Any) -> Any:
    """With_defaults returns rig data with what it leaves out taken from the packaged conf/rig/KIND.yaml.

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
        raise ConfigError(str(getattr(e, "full_key", "") or "rig"), str(e).strip().splitlines()[0]) from None
    assert isinstance(plain, dict)
    return plain["rig"]


@functools.cache
def _packaged_defaults(kind: str) -> dict[str, Any]:
    text = (resources.files("antler") / "conf" / "rig" / f"{kind}.yaml").read_text()
    defaults: dict[str, Any] = yaml.safe_load(text)
    return defaults


def node_data(kind: str, data: Any) -> dict[str, Any]:
    """Node_data returns each node's config data as given (or by default), so it equals the experiment's own node values."""
    nodes = with_defaults(kind, data)["nodes"]
    return {name: nodes[name] for name in ("left", "mid", "right")}


def check(path: Path) -> str:
    """Check verifies this kernel can build the path and returns its delay emulator, raising ConfigError.

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
    """Summary is the one log line that says what the rig emulates and how."""
    return (
        f"rig {kind}: rate {path.rate if path.rate.bps else 'unshaped'} qdisc {' '.join(path.qdisc_args())} "
        f"rtt {path.rtt} loss {path.loss_probability * 100:g}% emulator {emulator}"
    )


def facts(path: Path, emulator: str) -> dict[str, Any]:
    """Facts are the path's parameters as built, for meta.json."""
    return {
        "emulator": emulator,
        "rate_bps": path.rate.bps,
        "shaper": "htb" if path.rate.bps else "none",
        "qdisc": " ".join(path.qdisc_args()),
        "rtt_ms": path.rtt.ns / 1e6,
        "loss": path.loss_probability,
        "offloads": path.offloads,
    }


# --- set-up


def address(dev: str, addr: str) -> list[dict[str, Any]]:
    """Address gives an interface its address (in a /24) and brings it up."""
    return [sys_step(f"ip addr add {addr}/{PREFIX_LEN} dev {dev}"), sys_step(f"ip link set {dev} up")]


def end_setup(path: Path, dev: str, addr: str, far_net: str, via: str) -> list[dict[str, Any]]:
    """End_setup configures left or right: its address, and the route to the far side's subnet through mid."""
    return [
        *address(dev, addr),
        sys_step(f"ip route add {far_net} via {via} dev {dev}"),
        *offloads(path, dev),
    ]


def mid_setup(path: Path, ifaces: Ifaces, addr: Addresses, emulator: str) -> list[dict[str, Any]]:
    """Mid_setup builds the bottleneck and the delay on mid's two interfaces (already addressed and up)."""
    steps = [*offloads(path, ifaces.mid_left, ifaces.mid_right), *_bottleneck(path, ifaces.mid_right)]
    forwarding = [ifaces.mid_left, ifaces.mid_right]
    if emulator == "netem":
        steps += _netem(path, ifaces)
    elif emulator == "tun":
        steps += _tun(path, ifaces, addr)
        forwarding += [TUN_FWD, TUN_RET]
    # Forwarding last, and only between the path's own interfaces: no packet
    # crosses mid before the delay is in place, and none to or from any other.
    steps.append(sys_step("sysctl -w", *(f"net.ipv4.conf.{_sysctl_dev(d)}.forwarding=1" for d in forwarding)))
    return steps


def warmup(path: Path, addr_right: str) -> list[dict[str, Any]]:
    """Warmup pings right from left: the path works, and the ARP caches are full before the test's first packet."""
    if path.loss_probability >= 0.5:
        return []
    return [sys_step(f"ping -c 3 -i 0.05 -W 2 -q {addr_right}")]


def _bottleneck(path: Path, dev: str) -> list[dict[str, Any]]:
    if not path.rate.bps:
        return [sys_step(f"tc qdisc add dev {dev} root handle 10:", *path.qdisc_args())]
    bps = path.rate.bps
    return [
        sys_step(f"tc qdisc add dev {dev} root handle 1: htb default 1"),
        sys_step(f"tc class add dev {dev} parent 1: classid 1:1 htb rate {bps}bit ceil {bps}bit quantum 1514"),
        sys_step(f"tc qdisc add dev {dev} parent 1:1 handle 10:", *path.qdisc_args()),
    ]


def _netem(path: Path, ifaces: Ifaces) -> list[dict[str, Any]]:
    """_netem delays and drops forward traffic on an ifb fed from mid_left's ingress, and delays the return on mid_left."""
    delay = f"{path.one_way().ns // 1000}us"
    loss = path.loss_probability
    fwd = ["delay", delay, "limit", str(NETEM_LIMIT)] + (["loss", f"{loss * 100:g}%"] if loss else [])
    dev = ifaces.mid_left
    return [
        sys_step(f"ip link add {IFB_FWD} type ifb"),
        sys_step(f"ip link set {IFB_FWD} up"),
        sys_step(f"tc qdisc add dev {IFB_FWD} root netem", *fwd),
        sys_step(f"tc qdisc add dev {dev} handle ffff: ingress"),
        sys_step(
            f"tc filter add dev {dev} parent ffff: protocol all u32 match u32 0 0 "
            f"action mirred egress redirect dev {IFB_FWD}"
        ),
        sys_step(f"tc qdisc add dev {dev} root netem delay {delay} limit {NETEM_LIMIT}"),
    ]


def _tun(path: Path, ifaces: Ifaces, addr: Addresses) -> list[dict[str, Any]]:
    """_tun routes each direction through its TUN device, held by the delay link process."""
    one_way = str(path.one_way())
    # The loss as a percentage: the link refuses a bare 1, which reads two ways.
    link_args = ["--link", f"{TUN_FWD}:{one_way}:{path.loss}", "--link", f"{TUN_RET}:{one_way}"]
    if path.seed is not None:
        link_args += ["--seed", str(path.seed)]
    python = path.python_exe
    return [
        sys_step(f"ip tuntap add dev {TUN_FWD} mode tun"),
        sys_step(f"ip tuntap add dev {TUN_RET} mode tun"),
        sys_step(f"ip link set {TUN_FWD} up txqueuelen {TUN_TXQUEUELEN}"),
        sys_step(f"ip link set {TUN_RET} up txqueuelen {TUN_TXQUEUELEN}"),
        # Packets re-enter from the TUN devices with sources routed via the
        # path's interfaces: strict reverse-path filtering drops them, and so
        # does loose filtering on a device without an address. Loose mode and
        # mid's own address (/32, no new route) on each TUN device pass them
        # whatever the host-wide setting (the kernel takes the larger of
        # conf.all and the device's), measured with conf.all 0, 1 and 2.
        sys_step(f"ip addr add {addr.mid_left}/32 dev {TUN_FWD}"),
        sys_step(f"ip addr add {addr.mid_right}/32 dev {TUN_RET}"),
        sys_step(f"sysctl -w net.ipv4.conf.{TUN_FWD}.rp_filter=2 net.ipv4.conf.{TUN_RET}.rp_filter=2"),
        sys_step(f"ip route add default dev {TUN_FWD} table {TABLE_FWD}"),
        sys_step(f"ip route add default dev {TUN_RET} table {TABLE_RET}"),
        sys_step(f"ip rule add iif {ifaces.mid_left} lookup {TABLE_FWD} priority {TABLE_FWD}"),
        sys_step(f"ip rule add iif {ifaces.mid_right} lookup {TABLE_RET} priority {TABLE_RET}"),
        {"system": {"args": [python, "-m", "antler.rig.delay", "run", *link_args], "background": True}},
        sys_step(python, f"-m antler.rig.delay wait {TUN_FWD} {TUN_RET} --timeout 20s"),
    ]


def offloads(path: Path, *devs: str) -> list[dict[str, Any]]:
    """Offloads turns segmentation and receive offloads off on devs, unless rig.offloads keeps them."""
    if path.offloads:
        return []
    # Segmentation and receive offloads turn packets into 64 KB super-packets
    # that queue and shape unlike real ones; a kernel that refuses is logged.
    return [
        {"system": {"command": f"ethtool -K {d} tso off gso off gro off", "ignore_errors": True, "stdout": "quiet"}}
        for d in devs
    ]


# --- tear-down


def mid_teardown(path: Path, ifaces: Ifaces, emulator: str) -> list[dict[str, Any]]:
    """Mid_teardown logs the bottleneck's counters, then undoes mid_setup, last step first."""
    return [
        sys_step(f"tc -s qdisc show dev {ifaces.mid_right}"),
        *(sys_step(c) for c in mid_removals(path, ifaces, emulator)),
    ]


def mid_removals(path: Path, ifaces: Ifaces, emulator: str) -> list[str]:
    """Mid_removals are the commands that undo mid_setup (the delay link is stopped before its devices go)."""
    forwarding = [ifaces.mid_left, ifaces.mid_right]
    cmds = []
    if emulator == "tun":
        forwarding += [TUN_FWD, TUN_RET]
    cmds.append("sysctl -w " + " ".join(f"net.ipv4.conf.{_sysctl_dev(d)}.forwarding=0" for d in forwarding))
    if emulator == "tun":
        cmds += [
            f"ip rule del iif {ifaces.mid_right} lookup {TABLE_RET} priority {TABLE_RET}",
            f"ip rule del iif {ifaces.mid_left} lookup {TABLE_FWD} priority {TABLE_FWD}",
            f"{path.python_exe} -m antler.rig.delay stop {TUN_FWD} {TUN_RET} --timeout 10s",
            f"ip link del {TUN_RET}",
            f"ip link del {TUN_FWD}",
        ]
    elif emulator == "netem":
        cmds += [
            f"tc qdisc del dev {ifaces.mid_left} root",
            f"tc qdisc del dev {ifaces.mid_left} ingress",
            f"ip link del {IFB_FWD}",
        ]
    cmds.append(f"tc qdisc del dev {ifaces.mid_right} root")
    return cmds


def end_removals(dev: str, addr: str, far_net: str, via: str) -> list[str]:
    """End_removals are the commands that undo end_setup."""
    return [f"ip route del {far_net} via {via} dev {dev}", f"ip addr del {addr}/{PREFIX_LEN} dev {dev}"]


# --- run-tree data


def sys_step(command: str, *more: str) -> dict[str, Any]:
    """Sys_step is a ``system`` run of a command line (split on spaces, as the system runner does)."""
    return {"system": {"command": " ".join([command, *more])}}


def child(node: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Child is a child run of runs, in order, on a node."""
    return {"child": {"node": node, "serial": runs}}


def _sysctl_dev(dev: str) -> str:
    # sysctl reads "." as its separator: a VLAN's "eth1.100" is written "eth1/100".
    return dev.replace(".", "/")
