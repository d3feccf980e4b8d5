"""The steps that build the emulated path and tear it down: addresses, routes, bottleneck, delay, forwarding.

The path's parameters and its picture are in :mod:`antler.rig.path`.

Each direction has its own bottleneck (:func:`antler.rig.path.lanes`):
htb + its qdisc at mid_right's egress for forward traffic and at
mid_left's egress for reverse traffic, or, with rig.bottleneck userspace
(:func:`antler.rig.path.bottleneck`), that direction's TUN link itself,
which serialises at the rate (or a trace's opportunities) from its queue
discipline before it delays (:mod:`antler.rig.bottleneck`).

Delay and loss come from ``netem`` where the kernel has it, else from the
userspace delay link (:mod:`antler.rig.delay`): two persistent TUN devices in
mid, ``d-fwd`` for traffic from left and ``d-ret`` for traffic from right,
chosen by policy routing on the incoming interface. Either way each
direction's delay comes before its bottleneck queue, and loss applies towards right only
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

import json
from typing import Any

from antler.node.metric import Duration
from antler.rig.lanes import Lane
from antler.rig.path import (
    PREFIX_LEN,
    TCP_ECN,
    Addresses,
    Ifaces,
    Path,
    bottleneck,
    config_dir,
    lanes,
    sender_delays,
)
from antler.rig.schedule import Devices, plan

TUN_FWD, TUN_RET = "d-fwd", "d-ret"
IFB_FWD, IFB_RET = "ifb-fwd", "ifb-ret"
CONTROL = "antler-delay-control"
"""CONTROL names the delay link's control socket (abstract, so one per network namespace): a schedule's changes."""
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


def mid_setup(
    path: Path,
    ifaces: Ifaces,
    addr: Addresses,
    emulator: str,
    records: str = "",
    events: str = "",
    senders: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Build the bottleneck and the delay on mid's two interfaces (already addressed and up).

    records is the file at mid where a userspace bottleneck keeps its
    per-packet records until tear-down (:func:`mid_teardown` collects it);
    events is where a schedule's process keeps its changes (started here,
    waiting for :func:`schedule_go`). senders are the addresses of a
    multi-sender dumbbell's left nodes (rig.senders), each given a forward
    TUN link with its own delay (the first sender's is ``d-fwd``).
    """
    steps = [*offloads(path, ifaces.mid_left, ifaces.mid_right)]
    fwd, ret = lanes(path)
    for lane, dev in ((fwd, ifaces.mid_right), (ret, ifaces.mid_left)):
        if lane.where == "kernel":
            steps += _bottleneck(lane, dev)
    if records and fwd.where == "kernel":
        # The forward bottleneck's qdisc, sampled once both are built.
        steps.append(_qdisc_sampler(path, ifaces.mid_right, qdisc_file(records)))
    forwarding = [ifaces.mid_left, ifaces.mid_right]
    if emulator == "netem":
        steps += _netem(path, ifaces)
    elif emulator == "tun":
        steps += _tun(path, ifaces, addr, records, senders)
        forwarding += [TUN_FWD, TUN_RET, *(sender_tun(i) for i in range(2, len(senders) + 1))]
    # Forwarding last, and only between the path's own interfaces: no packet
    # crosses mid before the delay is in place, and none to or from any other.
    steps.append(sys_step("sysctl -w", *(f"net.ipv4.conf.{_sysctl_dev(d)}.forwarding=1" for d in forwarding)))
    if path.schedule and events:
        fwd, ret = lanes(path)
        actions = plan(path.schedule, fwd, ret, emulator, schedule_devices(ifaces))
        args = [path.python_exe, "-m", "antler.rig.schedule_run", "run", "--events", events]
        args += ["--control", CONTROL, "--plan", json.dumps(actions, separators=(",", ":"))]
        steps += [sys_step(f"rm -f {events} {events}.go"), {"system": {"args": args, "background": True}}]
    return steps


def schedule_go(path: Path, events: str) -> list[dict[str, Any]]:
    """Return the set-up's last step when the path has a schedule: its time zero (see :mod:`antler.rig.schedule_run`)."""
    return [sys_step(f"touch {events}.go")] if path.schedule and events else []


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


def _bottleneck(lane: Lane, dev: str) -> list[dict[str, Any]]:
    if not lane.rate_bps:
        return [sys_step(f"tc qdisc add dev {dev} root handle 10:", lane.qdisc)]
    bps = lane.rate_bps
    return [
        sys_step(f"tc qdisc add dev {dev} root handle 1: htb default 1"),
        sys_step(f"tc class add dev {dev} parent 1: classid 1:1 htb rate {bps}bit ceil {bps}bit quantum 1514"),
        sys_step(f"tc qdisc add dev {dev} parent 1:1 handle 10:", lane.qdisc),
    ]


def _netem(path: Path, ifaces: Ifaces) -> list[dict[str, Any]]:
    """_netem delays (and drops) each direction on an ifb fed from the ingress it enters mid by.

    Forward traffic enters by mid_left, reverse by mid_right; the egresses
    stay free for each direction's bottleneck.
    """
    steps = []
    fwd, ret = lanes(path)
    for lane, dev, ifb in ((fwd, ifaces.mid_left, IFB_FWD), (ret, ifaces.mid_right, IFB_RET)):
        words = ["delay", f"{lane.delay_ns // 1000}us", "limit", str(NETEM_LIMIT)]
        words += ["loss", f"{lane.loss * 100:g}%"] if lane.loss else []
        steps += [
            sys_step(f"ip link add {ifb} type ifb"),
            sys_step(f"ip link set {ifb} up"),
            sys_step(f"tc qdisc add dev {ifb} root netem", *words),
            sys_step(f"tc qdisc add dev {dev} handle ffff: ingress"),
            sys_step(
                f"tc filter add dev {dev} parent ffff: protocol all u32 match u32 0 0 "
                f"action mirred egress redirect dev {ifb}"
            ),
        ]
    return steps


def sender_tun(i: int) -> str:
    """Return the forward TUN device of sender i (from 1) of a multi-sender dumbbell."""
    return TUN_FWD if i == 1 else f"{TUN_FWD}{i}"


def _tun(
    path: Path, ifaces: Ifaces, addr: Addresses, records: str = "", senders: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """_tun routes each direction through its TUN device, held by the delay link process.

    Senders after the first get a forward TUN device each, chosen by their
    source address ahead of the rule for mid_left's ingress.
    """
    fwd, ret = lanes(path)
    extra: list[dict[str, Any]] = []
    more = []
    for i, (src, delay_ns) in enumerate(zip(senders, sender_delays(path), strict=False), 1):
        if i == 1:
            continue
        dev, table = sender_tun(i), TABLE_FWD + 10 + i
        more += ["--link", f"{dev}:{Duration(delay_ns)}:{path.loss}"]
        extra += [
            sys_step(f"ip tuntap add dev {dev} mode tun"),
            sys_step(f"ip link set {dev} up txqueuelen {TUN_TXQUEUELEN}"),
            sys_step(f"ip addr add {addr.mid_left}/32 dev {dev}"),
            sys_step(f"sysctl -w net.ipv4.conf.{dev}.rp_filter=2"),
            sys_step(f"ip route add default dev {dev} table {table}"),
            sys_step(f"ip rule add from {src} iif {ifaces.mid_left} lookup {table} priority {table - 20}"),
        ]
    # The loss as a percentage: the link refuses a bare 1, which reads two ways.
    link_args = [
        "--link",
        f"{TUN_FWD}:{Duration(fwd.delay_ns)}:{path.loss}",
        "--link",
        f"{TUN_RET}:{Duration(ret.delay_ns)}",
    ]
    link_args += [*more, "--control", CONTROL]
    if path.seed is not None:
        link_args += ["--seed", str(path.seed)]
    for lane, dev in ((fwd, TUN_FWD), (ret, TUN_RET)):
        if lane.where == "userspace":
            # This direction's link is its bottleneck: it sends at the rate (or the trace) from the queue, then delays.
            pace = f"trace:{lane.trace}" if lane.trace else f"{lane.rate_bps}bit"
            link_args += ["--bottleneck", dev, "--rate", pace, "--qdisc", lane.qdisc]
    if records and fwd.where == "userspace":
        link_args += ["--records", records]
    if any(lane.where == "userspace" and lane.qdisc.startswith("py:") for lane in (fwd, ret)) and config_dir():
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
        *extra,
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


def mid_teardown(
    path: Path, ifaces: Ifaces, emulator: str, records: str = "", events: str = ""
) -> list[dict[str, Any]]:
    """Log the bottleneck's counters, then undo mid_setup, last step first.

    A userspace bottleneck's records (the file mid_setup was given) become
    the test's queue.parquet once the delay link has ended and written them;
    a schedule's events its rig_events.parquet, once its process has ended; a kernel bottleneck's qdisc samples
    (beside the records) become qdisc.parquet.
    """
    steps = [sys_step(f"tc -s qdisc show dev {ifaces.mid_right}"), sys_step(f"tc -s qdisc show dev {ifaces.mid_left}")]
    if path.schedule and events:
        py = path.python_exe
        parquet = [py, "-m", "antler.rig.schedule_run", "parquet", events]
        steps += [
            sys_step(py, f"-m antler.rig.schedule_run stop {events}"),
            {"system": {"args": parquet, "stdout": "rig_events.parquet", "stderr": "", "ignore_errors": True}},
        ]
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
            f"tc qdisc del dev {ifaces.mid_right} ingress",
            f"ip link del {IFB_RET}",
            f"tc qdisc del dev {ifaces.mid_left} ingress",
            f"ip link del {IFB_FWD}",
        ]
    fwd, ret = lanes(path)
    if ret.where == "kernel":
        cmds.append(f"tc qdisc del dev {ifaces.mid_left} root")
    if fwd.where == "kernel":
        cmds.append(f"tc qdisc del dev {ifaces.mid_right} root")
    return cmds


def schedule_devices(ifaces: Ifaces) -> Devices:
    """Return where a schedule's changes act at mid (:func:`antler.rig.schedule.plan`)."""
    return Devices(ifaces.mid_right, ifaces.mid_left, TUN_FWD, TUN_RET, IFB_FWD, IFB_RET, NETEM_LIMIT)


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
