"""The steps that build the emulated path and tear it down: addresses, routes, bottleneck, delay, forwarding.

The path's parameters and its picture are in :mod:`antler.rig.path`.

The bottleneck is htb + rig.qdisc at mid_right's egress, or, with
rig.bottleneck userspace (:func:`antler.rig.path.bottleneck`), the forward
TUN link itself, which serialises at rig.rate from its queue discipline
before it delays (:mod:`antler.rig.bottleneck`).

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

from typing import Any

from antler.rig.path import PREFIX_LEN, TCP_ECN, Addresses, Ifaces, Path, bottleneck, config_dir

TUN_FWD, TUN_RET = "d-fwd", "d-ret"
IFB_FWD = "ifb-fwd"
TABLE_FWD, TABLE_RET = 100, 101
TUN_TXQUEUELEN = 10000
"""TUN_TXQUEUELEN lets the TUN devices queue bursts while the delay link is busy (the default 500 drops)."""
NETEM_LIMIT = 100000
"""NETEM_LIMIT is netem's queue in packets: it holds a whole delay's worth of packets (netem's default is 1000)."""


# --- set-up


def address(dev: str, addr: str) -> list[dict[str, Any]]:
    """Give an interface its address (in a /24) and bring it up."""
    return [sys_step(f"ip addr add {addr}/{PREFIX_LEN} dev {dev}"), sys_step(f"ip link set {dev} up")]


def end_setup(path: Path, dev: str, addr: str, far_net: str, via: str) -> list[dict[str, Any]]:
    """Configure left or right: its address, and the route to the far side's subnet through mid."""
    return [
        *address(dev, addr),
        sys_step(f"ip route add {far_net} via {via} dev {dev}"),
        *offloads(path, dev),
        *ecn(path),
    ]


def ecn(path: Path) -> list[dict[str, Any]]:
    """Set net.ipv4.tcp_ecn as rig.ecn asks (on: 1, TCP sends ECT(0) and asks for ECN; accecn: 3), else nothing."""
    value = TCP_ECN[path.ecn]
    return [] if value is None else [sys_step(f"sysctl -w net.ipv4.tcp_ecn={value}")]


def mid_setup(path: Path, ifaces: Ifaces, addr: Addresses, emulator: str, records: str = "") -> list[dict[str, Any]]:
    """Build the bottleneck and the delay on mid's two interfaces (already addressed and up).

    records is the file at mid where a userspace bottleneck keeps its
    per-packet records until tear-down (:func:`mid_teardown` collects it).
    """
    steps = [*offloads(path, ifaces.mid_left, ifaces.mid_right)]
    if bottleneck(path) == "kernel":
        steps += _bottleneck(path, ifaces.mid_right)
        if records:
            steps.append(_qdisc_sampler(path, ifaces.mid_right, qdisc_file(records)))
    forwarding = [ifaces.mid_left, ifaces.mid_right]
    if emulator == "netem":
        steps += _netem(path, ifaces)
    elif emulator == "tun":
        steps += _tun(path, ifaces, addr, records)
        forwarding += [TUN_FWD, TUN_RET]
    # Forwarding last, and only between the path's own interfaces: no packet
    # crosses mid before the delay is in place, and none to or from any other.
    steps.append(sys_step("sysctl -w", *(f"net.ipv4.conf.{_sysctl_dev(d)}.forwarding=1" for d in forwarding)))
    return steps


def warmup(path: Path, addr_right: str) -> list[dict[str, Any]]:
    """Ping right from left: the path works, and the ARP caches are full before the test's first packet."""
    if path.loss_probability >= 0.5:
        return []
    return [sys_step(f"ping -c 3 -i 0.05 -W 2 -q {addr_right}")]


def qdisc_file(records: str) -> str:
    """Return where a kernel bottleneck's qdisc samples are kept at mid until tear-down (beside the queue records)."""
    return records.removesuffix(".bin") + ".qdisc.jsonl"


def _qdisc_sampler(path: Path, dev: str, file: str) -> dict[str, Any]:
    """_qdisc_sampler samples dev's qdiscs every rig.qdisc_interval until tear-down (:mod:`antler.rig.qdisc_stats`)."""
    args = [
        path.python_exe,
        "-m",
        "antler.rig.qdisc_stats",
        "record",
        dev,
        file,
        "--interval",
        str(path.qdisc_interval),
    ]
    return {"system": {"args": args, "background": True}}


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


def _tun(path: Path, ifaces: Ifaces, addr: Addresses, records: str = "") -> list[dict[str, Any]]:
    """_tun routes each direction through its TUN device, held by the delay link process."""
    one_way = str(path.one_way())
    # The loss as a percentage: the link refuses a bare 1, which reads two ways.
    link_args = ["--link", f"{TUN_FWD}:{one_way}:{path.loss}", "--link", f"{TUN_RET}:{one_way}"]
    if path.seed is not None:
        link_args += ["--seed", str(path.seed)]
    if bottleneck(path) == "userspace":
        # The forward link is the bottleneck: it sends at rig.rate from the queue, then delays.
        link_args += ["--bottleneck", TUN_FWD, "--rate", f"{path.rate.bps}bit", "--qdisc", " ".join(path.qdisc_args())]
        if records:
            link_args += ["--records", records]
        if path.qdisc_kind.startswith("py:") and config_dir() is not None:
            link_args += ["--config-dir", str(config_dir())]
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
    """Turn segmentation and receive offloads off on devs, unless rig.offloads keeps them."""
    if path.offloads:
        return []
    # Segmentation and receive offloads turn packets into 64 KB super-packets
    # that queue and shape unlike real ones; a kernel that refuses is logged.
    return [
        {"system": {"command": f"ethtool -K {d} tso off gso off gro off", "ignore_errors": True, "stdout": "quiet"}}
        for d in devs
    ]


# --- tear-down


def mid_teardown(path: Path, ifaces: Ifaces, emulator: str, records: str = "") -> list[dict[str, Any]]:
    """Log the bottleneck's counters, then undo mid_setup, last step first.

    A userspace bottleneck's records (the file mid_setup was given) become
    the test's queue.parquet once the delay link has ended and written them;
    a kernel bottleneck's qdisc samples (beside them) become qdisc.parquet.
    """
    steps = [sys_step(f"tc -s qdisc show dev {ifaces.mid_right}")]
    if records and bottleneck(path) == "kernel":
        # The sampler's last sample comes after the traffic, so its counters are those tc -s just logged.
        file = qdisc_file(records)
        steps.append(sys_step(path.python_exe, f"-m antler.rig.qdisc_stats stop {file}"))
        args = [path.python_exe, "-m", "antler.rig.qdisc_stats", "parquet", file]
        steps.append({"system": {"args": args, "stdout": "qdisc.parquet", "stderr": "", "ignore_errors": True}})
    for c in mid_removals(path, ifaces, emulator):
        steps.append(sys_step(c))
        if records and " -m antler.rig.delay stop " in c and bottleneck(path) == "userspace":
            steps.append(queue_records_step(path, records))
    return steps


def queue_records_step(path: Path, records: str) -> dict[str, Any]:
    """Return the step that turns the link's records file into the test's queue.parquet (a failure is logged)."""
    args = [path.python_exe, "-m", "antler.rig.queue_records", records]
    return {"system": {"args": args, "stdout": "queue.parquet", "stderr": "", "ignore_errors": True}}


def mid_removals(path: Path, ifaces: Ifaces, emulator: str) -> list[str]:
    """Return the commands that undo mid_setup (the delay link is stopped before its devices go)."""
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
    if bottleneck(path) == "kernel":
        cmds.append(f"tc qdisc del dev {ifaces.mid_right} root")
    return cmds


def end_removals(dev: str, addr: str, far_net: str, via: str, path: Path | None = None) -> list[str]:
    """Return the commands that undo end_setup (tcp_ecn back to the kernel's default 2 if path's rig.ecn set it)."""
    cmds = [f"ip route del {far_net} via {via} dev {dev}", f"ip addr del {addr}/{PREFIX_LEN} dev {dev}"]
    if path is not None and TCP_ECN[path.ecn] is not None:
        cmds.append("sysctl -w net.ipv4.tcp_ecn=2")
    return cmds


# --- run-tree data


def sys_step(command: str, *more: str) -> dict[str, Any]:
    """Return a ``system`` run of a command line (split on spaces, as the system runner does)."""
    return {"system": {"command": " ".join([command, *more])}}


def child(node: Any, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a child run of runs, in order, on a node."""
    return {"child": {"node": node, "serial": runs}}


def _sysctl_dev(dev: str) -> str:
    # sysctl reads "." as its separator: a VLAN's "eth1.100" is written "eth1/100".
    return dev.replace(".", "/")
