"""The dumbbell rig: ``left`` and ``right`` joined through ``mid``, where the bottleneck and the delay live.

::

    left  l-mid ─── m-left  mid  m-right ─── r-mid  right
    10.77.1.1       10.77.1.2     10.77.2.1       10.77.2.2
                        │  delay (rtt/2 each way), loss towards right
                        └─ bottleneck at m-right's egress: htb rate + qdisc

The three nodes are namespaced nodes that the launcher creates
(``netns: {create: true}``) and deletes when the test ends, so a failed test
leaves nothing behind: everything the rig makes (veths, TUN devices, qdiscs,
the delay process, killed at cleanup before the namespaces go) lives inside
those namespaces. The set-up is the run tree's own ``system`` steps, run on
the nodes as child runs, so every step shows in the test's log.

Delay and loss come from ``netem`` where the kernel has it, else from the
userspace delay link (:mod:`antler.rig.delay`): two persistent TUN devices in
``mid``, ``d-fwd`` for traffic from left and ``d-ret`` for traffic from
right, chosen by policy routing on the incoming interface. Either way the
forward delay comes before the bottleneck queue, and loss applies towards
right only (the data direction of an upload), so a ping's loss is rig.loss.

How experiments use it: an experiment pulls in the rig's config group and
puts the set-up and tear-down steps around its own runs, explicitly, with
the resolvers of :mod:`antler.rig.resolvers`::

    defaults:
      - /rig: dumbbell
      - _self_
    test:
      run:
        serial:
          - serial: ${rig_setup:}
          - child: {node: ${rig.nodes.left}, system: {command: "ping -c 10 ${rig.addr.right}"}}
          - serial: ${rig_teardown:}

The order stays visible in the experiment, nothing is inserted behind the
user's back, and sweeps over ``rig.rate``, ``rig.rtt`` or ``rig.qdisc`` just
work because the steps are computed from the composed ``rig`` values.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from importlib import resources
from typing import Any

import yaml
from omegaconf import OmegaConf

from antler.config.parse import ConfigError, parse
from antler.node.metric import Bitrate, Duration, Probability
from antler.node.nodespec import Node
from antler.rig.kernel import RigError, check_qdisc, choose_emulator, kernel_release, qdiscs

KIND = "dumbbell"
DEV_LEFT, DEV_MID_LEFT, DEV_MID_RIGHT, DEV_RIGHT = "l-mid", "m-left", "m-right", "r-mid"
TUN_FWD, TUN_RET = "d-fwd", "d-ret"
IFB_FWD = "ifb-fwd"
TABLE_FWD, TABLE_RET = 100, 101
TUN_TXQUEUELEN = 10000
"""TUN_TXQUEUELEN lets the TUN devices queue bursts while the delay link is busy (the default 500 drops)."""
NETEM_LIMIT = 100000
"""NETEM_LIMIT is netem's queue in packets: it holds a whole delay's worth of packets (netem's default is 1000)."""
LIMIT_IN_PACKETS = ("pfifo", "pfifo_head_drop", "fq_codel", "codel", "pie", "fq_pie", "fq", "sfq", "netem")
"""LIMIT_IN_PACKETS are the qdiscs whose ``limit`` parameter counts packets, so rig.limit applies."""


@dataclass(frozen=True)
class Addresses:
    """Addresses are the rig's IPv4 addresses, all in 10.77.0.0/16, with a /24 per side."""

    left: str
    mid_left: str
    mid_right: str
    right: str

    def validate(self) -> None:
        """Validate raises ValueError for an address outside 10.77.0.0/16, or a side whose two addresses differ in /24."""
        for name in ("left", "mid_left", "mid_right", "right"):
            a = getattr(self, name)
            parts = a.split(".")
            if len(parts) != 4 or parts[:2] != ["10", "77"] or not all(p.isdigit() and int(p) < 256 for p in parts):
                raise ValueError(f"addr.{name} {a!r} must be an IPv4 address in 10.77.0.0/16")
        if _net(self.left) != _net(self.mid_left) or _net(self.right) != _net(self.mid_right):
            raise ValueError("addr.left and addr.mid_left, and addr.right and addr.mid_right, must share a /24")


@dataclass(frozen=True)
class RigNodes:
    """RigNodes are the rig's three node specs; experiments use the same ones in their child runs."""

    left: Node
    mid: Node
    right: Node


@dataclass(frozen=True)
class Dumbbell:
    """Dumbbell is the dumbbell rig's parameters, the ``rig`` key of an experiment's config.

    Its defaults are written once, in the packaged ``conf/rig/dumbbell.yaml``
    (see :func:`with_defaults`), which Hydra composes and users override.
    """

    kind: str
    rate: Bitrate
    qdisc: str
    limit: int
    rtt: Duration
    loss: Probability
    emulator: str
    offloads: bool
    seed: int | None
    python: str
    netns_prefix: str
    addr: Addresses
    nodes: RigNodes

    def validate(self) -> None:
        """Validate checks the values that need no kernel to check, raising ValueError naming the bad one."""
        if self.kind != KIND:
            raise ValueError(f"rig kind {self.kind!r} is not {KIND!r}")
        if not self.qdisc.split():
            raise ValueError("qdisc is empty (use e.g. pfifo)")
        if self.limit < 0:
            raise ValueError(f"limit {self.limit} is negative")
        if self.emulator not in ("auto", "netem", "tun"):
            raise ValueError(f"emulator {self.emulator!r} must be auto, netem or tun")
        ids = [self.nodes.left.id, self.nodes.mid.id, self.nodes.right.id]
        if len(set(ids)) != 3:
            raise ValueError(f"the rig's nodes need distinct IDs, got {ids}")
        for n in (self.nodes.left, self.nodes.mid, self.nodes.right):
            if not n.netns.create:
                raise ValueError(f"node {n.id!r} needs netns: {{create: true}} so the rig is deleted with the test")

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


def with_defaults(data: Any) -> Any:
    """With_defaults returns rig data with what it leaves out taken from the packaged conf/rig/dumbbell.yaml.

    That file is the one place the rig's defaults are written; its
    interpolations are resolved after the merge, so default nodes are named
    after the data's ``netns_prefix``. Merging is Hydra's (mappings key by
    key), so data Hydra composed comes back equal. Data that is not a
    mapping is returned as it is, for the parser to refuse with its path.
    """
    if not isinstance(data, dict):
        return data
    merged = OmegaConf.merge({"rig": _packaged_defaults()}, {"rig": data})
    plain = OmegaConf.to_container(merged, resolve=True)
    assert isinstance(plain, dict)
    return plain["rig"]


@functools.cache
def _packaged_defaults() -> dict[str, Any]:
    text = (resources.files("antler") / "conf" / "rig" / "dumbbell.yaml").read_text()
    defaults: dict[str, Any] = yaml.safe_load(text)
    return defaults


def params(data: Any, path: str = "rig") -> Dumbbell:
    """Params parses rig config data, completed by :func:`with_defaults`, into Dumbbell parameters, raising ConfigError."""
    return parse(Dumbbell, with_defaults(data), path)


def check(rig: Dumbbell) -> str:
    """Check verifies the kernel can build the rig and returns its delay emulator, raising ConfigError.

    The emulator is ``netem`` or ``tun``, or ``none`` when the rig adds
    neither delay nor loss.
    """
    try:
        check_qdisc(rig.qdisc_kind)
        if rig.rate.bps:
            check_qdisc("htb", "the bottleneck shaper")
        emulator = choose_emulator(rig.emulator)
    except RigError as e:
        # The message names its key (rig.qdisc, rig.emulator) and what the kernel has.
        raise ConfigError("", str(e)) from None
    return emulator if rig.rtt.ns or rig.loss_probability else "none"


def setup_runs(data: Any) -> list[dict[str, Any]]:
    """Setup_runs returns the run-tree steps that build the rig, as plain run data (a list of runs)."""
    rig = params(data)
    emulator = check(rig)
    nodes = _node_data(data)
    a = rig.addr
    ns_left, ns_right = rig.nodes.left.netns_name, rig.nodes.right.netns_name
    summary = (
        f"rig {KIND}: rate {rig.rate if rig.rate.bps else 'unshaped'} qdisc {' '.join(rig.qdisc_args())} "
        f"rtt {rig.rtt} loss {rig.loss_probability * 100:g}% emulator {emulator}"
    )
    mid: list[dict[str, Any]] = [
        _sys("echo", summary),
        _sys(f"ip link add {DEV_MID_LEFT} type veth peer name {DEV_LEFT} netns {ns_left}"),
        _sys(f"ip link add {DEV_MID_RIGHT} type veth peer name {DEV_RIGHT} netns {ns_right}"),
        _sys(f"ip addr add {a.mid_left}/24 dev {DEV_MID_LEFT}"),
        _sys(f"ip addr add {a.mid_right}/24 dev {DEV_MID_RIGHT}"),
        _sys(f"ip link set {DEV_MID_LEFT} up"),
        _sys(f"ip link set {DEV_MID_RIGHT} up"),
        *_offloads(rig, DEV_MID_LEFT, DEV_MID_RIGHT),
        *_bottleneck(rig),
    ]
    if emulator == "netem":
        mid += _netem(rig)
    elif emulator == "tun":
        mid += _tun(rig)
    # Forwarding last: no packet crosses mid before the delay is in place.
    mid.append(_sys("sysctl -w net.ipv4.ip_forward=1"))
    left = [
        _sys(f"ip addr add {a.left}/24 dev {DEV_LEFT}"),
        _sys(f"ip link set {DEV_LEFT} up"),
        _sys(f"ip route add {_net(a.right)}.0/24 via {a.mid_left}"),
        *_offloads(rig, DEV_LEFT),
    ]
    right = [
        _sys(f"ip addr add {a.right}/24 dev {DEV_RIGHT}"),
        _sys(f"ip link set {DEV_RIGHT} up"),
        _sys(f"ip route add {_net(a.left)}.0/24 via {a.mid_right}"),
        *_offloads(rig, DEV_RIGHT),
    ]
    if rig.loss_probability < 0.5:
        # Left reaches right before the test starts; this also fills the ARP
        # caches, so the test's first packets see no resolution delay.
        left.append(_sys(f"ping -c 3 -i 0.05 -W 2 -q {a.right}"))
    return [
        _child(nodes["mid"], mid),
        _child(nodes["right"], right),
        _child(nodes["left"], left),
    ]


def teardown_runs(data: Any) -> list[dict[str, Any]]:
    """Teardown_runs returns the steps that log the bottleneck's counters and delete the rig's links."""
    params(data)  # bad rig data is refused here too, with its path
    nodes = _node_data(data)
    return [
        _child(
            nodes["mid"],
            [
                _sys(f"tc -s qdisc show dev {DEV_MID_RIGHT}"),
                _sys(f"ip link del {DEV_MID_LEFT}"),
                _sys(f"ip link del {DEV_MID_RIGHT}"),
            ],
        )
    ]


def facts(data: Any) -> dict[str, Any]:
    """Facts describes the rig as built on this kernel, for meta.json: emulator, shaper, qdiscs."""
    rig = params(data)
    emulator = check(rig)
    return {
        "kind": KIND,
        "emulator": emulator,
        "rate_bps": rig.rate.bps,
        "shaper": "htb" if rig.rate.bps else "none",
        "qdisc": " ".join(rig.qdisc_args()),
        "rtt_ms": rig.rtt.ns / 1e6,
        "loss": rig.loss_probability,
        "offloads": rig.offloads,
        "kernel": kernel_release(),
        "kernel_qdiscs": sorted(qdiscs()),
    }


def _bottleneck(rig: Dumbbell) -> list[dict[str, Any]]:
    dev = DEV_MID_RIGHT
    if not rig.rate.bps:
        return [_sys(f"tc qdisc add dev {dev} root handle 10:", *rig.qdisc_args())]
    return [
        _sys(f"tc qdisc add dev {dev} root handle 1: htb default 1"),
        _sys(
            f"tc class add dev {dev} parent 1: classid 1:1 htb rate {rig.rate.bps}bit ceil {rig.rate.bps}bit quantum 1514"
        ),
        _sys(f"tc qdisc add dev {dev} parent 1:1 handle 10:", *rig.qdisc_args()),
    ]


def _netem(rig: Dumbbell) -> list[dict[str, Any]]:
    """_netem delays and drops forward traffic on an ifb fed from m-left's ingress, and delays the return on m-left."""
    delay = f"{rig.one_way().ns // 1000}us"
    loss = rig.loss_probability
    fwd = ["delay", delay, "limit", str(NETEM_LIMIT)] + (["loss", f"{loss * 100:g}%"] if loss else [])
    return [
        _sys(f"ip link add {IFB_FWD} type ifb"),
        _sys(f"ip link set {IFB_FWD} up"),
        _sys(f"tc qdisc add dev {IFB_FWD} root netem", *fwd),
        _sys(f"tc qdisc add dev {DEV_MID_LEFT} handle ffff: ingress"),
        _sys(
            f"tc filter add dev {DEV_MID_LEFT} parent ffff: protocol all u32 match u32 0 0 "
            f"action mirred egress redirect dev {IFB_FWD}"
        ),
        _sys(f"tc qdisc add dev {DEV_MID_LEFT} root netem delay {delay} limit {NETEM_LIMIT}"),
    ]


def _tun(rig: Dumbbell) -> list[dict[str, Any]]:
    """_tun routes each direction through its TUN device, held by the delay link process."""
    one_way = str(rig.one_way())
    python = rig.python or sys.executable
    link_args = [
        "--link",
        f"{TUN_FWD}:{one_way}:{rig.loss}",  # a percentage: a bare 1 would be refused
        "--link",
        f"{TUN_RET}:{one_way}",
    ]
    if rig.seed is not None:
        link_args += ["--seed", str(rig.seed)]
    return [
        _sys(f"ip tuntap add dev {TUN_FWD} mode tun"),
        _sys(f"ip tuntap add dev {TUN_RET} mode tun"),
        _sys(f"ip link set {TUN_FWD} up txqueuelen {TUN_TXQUEUELEN}"),
        _sys(f"ip link set {TUN_RET} up txqueuelen {TUN_TXQUEUELEN}"),
        # Packets re-enter from the TUN devices with sources reachable only via
        # the veths, which strict reverse-path filtering would drop.
        _sys(
            "sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 "
            f"net.ipv4.conf.{TUN_FWD}.rp_filter=0 net.ipv4.conf.{TUN_RET}.rp_filter=0"
        ),
        _sys(f"ip route add default dev {TUN_FWD} table {TABLE_FWD}"),
        _sys(f"ip route add default dev {TUN_RET} table {TABLE_RET}"),
        _sys(f"ip rule add iif {DEV_MID_LEFT} lookup {TABLE_FWD} priority {TABLE_FWD}"),
        _sys(f"ip rule add iif {DEV_MID_RIGHT} lookup {TABLE_RET} priority {TABLE_RET}"),
        {"system": {"args": [python, "-m", "antler.rig.delay", "run", *link_args], "background": True}},
        _sys(python, "-m antler.rig.delay wait", TUN_FWD, TUN_RET, "--timeout 20s"),
    ]


def _offloads(rig: Dumbbell, *devs: str) -> list[dict[str, Any]]:
    if rig.offloads:
        return []
    # Segmentation and receive offloads turn packets into 64 KB super-packets
    # that queue and shape unlike real ones; a kernel that refuses is logged.
    return [
        {"system": {"command": f"ethtool -K {d} tso off gso off gro off", "ignore_errors": True, "stdout": "quiet"}}
        for d in devs
    ]


def _sys(command: str, *more: str) -> dict[str, Any]:
    return {"system": {"command": " ".join([command, *more])}}


def _child(node: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"child": {"node": node, "serial": runs}}


def _node_data(data: Any) -> dict[str, Any]:
    """_node_data returns each node's config data as given (or by default), so it equals the experiment's own node values."""
    nodes = with_defaults(data)["nodes"]
    return {name: nodes[name] for name in ("left", "mid", "right")}


def _net(addr: str) -> str:
    return addr.rsplit(".", 1)[0]
