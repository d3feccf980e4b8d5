"""The testbed rig: the dumbbell on real hosts, a sender, a middlebox and a receiver on a test network.

::

    host left  ifaces.left ─── ifaces.mid_left  host mid  ifaces.mid_right ─── ifaces.right  host right
               addr.left        addr.mid_left             addr.mid_right       addr.right
                                   │  delay (rtt/2 each way), loss towards right
                                   └─ bottleneck at mid_right's egress: htb rate + qdisc
    (and a management network beside it, which Ray and SSH use and the rig never touches)

``rig.hosts.{left,mid,right}`` name cluster hosts (their ``host:NAME``
resource, see cluster.yaml) and ``rig.ifaces`` the test-network interfaces
on them, cabled left - mid - right. The rig gives those interfaces the
addresses of ``rig.addr`` and builds the same bottleneck and delay at mid
as the namespace dumbbell, with the same steps (:mod:`antler.rig.path_steps`)
and parameters (:mod:`antler.rig.path`): ``rate``, ``qdisc``, ``limit``, ``rtt``, ``loss``,
``emulator``. So ``+experiment=cubic rig=testbed rig.hosts.left=...`` runs
the dumbbell's experiments unchanged on the hardware.

Set-up, in order:

1. on every host, before any is changed, check (``python -m
   antler.rig.testbed check``): each interface exists and carries no IPv4
   address but the rig's own, so the rig never runs a command on an
   interface in use, such as the management one; on mid, the kernel has the
   qdisc and the delay emulator (chosen on the driver's host: the check says
   so if mid's kernel lacks it);
2. on each host, remove what a test that failed before its tear-down may
   have left of this rig (only the rig's own addresses, routes, qdiscs and
   devices);
3. address the interfaces, route each side's subnet through mid, build the
   bottleneck and the delay at mid, forward between mid's two interfaces.

Tear-down undoes step 3 in reverse (a ``serial`` stops at a failure, so a
failed test leaves the rig in place until the next set-up removes it).
Interfaces keep their offload settings (off, unless ``rig.offloads``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from antler.node.spec import parse, to_plain
from antler.rig import path, path_steps
from antler.rig.kernel import RigError, check_qdisc, choose_emulator
from antler.rig.path import Addresses, Ifaces, Nodes
from antler.rig.path_steps import child, sys_step

KIND = "testbed"
ROLES = ("left", "mid", "right")


@dataclass(frozen=True)
class Hosts:
    """Name the cluster hosts (their ``host:NAME`` resource) that play left, mid and right."""

    left: str
    mid: str
    right: str

    def validate(self) -> None:
        """Require three distinct host names."""
        names = [self.left, self.mid, self.right]
        for role, name in zip(ROLES, names, strict=True):
            if name in ("", "???"):
                raise ValueError(f"hosts.{role} is required (a cluster host's name, as in its host:NAME resource)")
        if len(set(names)) != 3:
            raise ValueError(f"hosts.left, hosts.mid and hosts.right must be three different hosts, got {names}")


@dataclass(frozen=True)
class Testbed(path.Path):
    """The testbed rig's parameters, the ``rig`` key of an experiment's config.

    Its defaults are written once, in the packaged ``conf/rig/testbed.yaml``.
    """

    __test__ = False  # not a pytest test class, whatever its name

    kind: str
    hosts: Hosts
    ifaces: Ifaces
    addr: Addresses
    nodes: Nodes

    def validate(self) -> None:
        """Check the values that need no host to check."""
        if self.kind != KIND:
            raise ValueError(f"rig kind {self.kind!r} is not {KIND!r}")
        self.validate_path()  # hosts, ifaces and nodes check themselves as they are parsed
        if self.senders:
            raise path.FieldError("senders", "several senders are the dumbbell's (namespaces on one host)")


def params(data: Any, where: str = "rig") -> Testbed:
    """Parse rig config data, completed from conf/rig/testbed.yaml, into Testbed parameters, raising ConfigError."""
    return parse(Testbed, path.with_defaults(KIND, data), where)


def check(rig: Testbed) -> str:
    """Verify the driver's kernel can build the rig and return its emulator, raising ConfigError.

    Mid checks its own kernel again at set-up (a testbed's hosts usually run
    one kernel; where mid's lacks what this one has, the set-up fails there,
    naming what it has).
    """
    return path.check(rig)


EVENTS = "/tmp/antler-events-testbed.jsonl"
"""EVENTS is where mid's schedule process keeps its changes until tear-down (one rig per mid host)."""


def setup_runs(data: Any) -> list[dict[str, Any]]:
    """Return the run-tree steps that build the rig on its hosts, as plain run data."""
    rig = params(data)
    emulator = check(rig)
    nodes = path.node_data(KIND, data)
    a, i = rig.addr, rig.ifaces
    py = rig.python_exe
    if path.bottleneck(rig) == "kernel":
        kernel_args = f"--qdisc {rig.qdisc_kind} --shaper {'htb' if rig.rate.bps else 'none'} --emulator {emulator}"
    else:
        kernel_args = f"--emulator {emulator}"  # the userspace bottleneck needs no qdisc of mid's kernel
    checks = [
        child(nodes["mid"], [
            sys_step("echo", path.summary(KIND, rig, emulator), f"on {rig.hosts.mid}"),
            _check(py, [(i.mid_left, a.mid_left), (i.mid_right, a.mid_right)], kernel_args),
        ]),
        child(nodes["right"], [_check(py, [(i.right, a.right)])]),
        child(nodes["left"], [_check(py, [(i.left, a.left)])]),
    ]  # fmt: skip
    mid = [
        _reset(_mid_removals(rig, emulator)),
        *path_steps.address(i.mid_left, a.mid_left),
        *path_steps.address(i.mid_right, a.mid_right),
        *path_steps.mid_setup(rig, i, a, emulator, events=EVENTS),
    ]
    right = [
        _reset(path_steps.end_removals(i.right, a.right, a.net("left"), a.mid_right)),
        *path_steps.end_setup(rig, i.right, a.right, a.net("left"), a.mid_right),
    ]
    left = [
        _reset(path_steps.end_removals(i.left, a.left, a.net("right"), a.mid_left)),
        *path_steps.end_setup(rig, i.left, a.left, a.net("right"), a.mid_left),
        *path_steps.warmup(rig, a.right),
    ]
    # Every host is checked before any is changed: a refusal leaves all three as they were.
    runs = [*checks, child(nodes["mid"], mid), child(nodes["right"], right), child(nodes["left"], left)]
    go = path_steps.schedule_go(rig, EVENTS)
    return runs + ([child(nodes["mid"], go)] if go else [])


def teardown_runs(data: Any) -> list[dict[str, Any]]:
    """Return the steps that log the bottleneck's counters and undo the set-up on every host."""
    rig = params(data)
    emulator = check(rig)
    nodes = path.node_data(KIND, data)
    a, i = rig.addr, rig.ifaces
    mid = [*path_steps.mid_teardown(rig, i, emulator, events=EVENTS), *(sys_step(c) for c in _mid_addresses(rig))]
    left = [sys_step(c) for c in path_steps.end_removals(i.left, a.left, a.net("right"), a.mid_left, rig)]
    right = [sys_step(c) for c in path_steps.end_removals(i.right, a.right, a.net("left"), a.mid_right, rig)]
    return [child(nodes["mid"], mid), child(nodes["left"], left), child(nodes["right"], right)]


def facts(data: Any) -> dict[str, Any]:
    """Describe the rig for meta.json: its hosts and interfaces, and the path as built."""
    rig = params(data)
    emulator = check(rig)
    return {
        "kind": KIND,
        "hosts": to_plain(rig.hosts),
        "ifaces": to_plain(rig.ifaces),
        "addr": {name: getattr(rig.addr, name) for name in path.ROLES},
        **path.facts(rig, emulator),
    }


def _mid_addresses(rig: Testbed) -> list[str]:
    a, i = rig.addr, rig.ifaces
    return [
        f"ip addr del {a.mid_right}/{path.PREFIX_LEN} dev {i.mid_right}",
        f"ip addr del {a.mid_left}/{path.PREFIX_LEN} dev {i.mid_left}",
    ]


def _mid_removals(rig: Testbed, emulator: str) -> list[str]:
    # Whatever emulator the failed test used: remove both kinds' leftovers.
    cmds = [c for e in ("tun", "netem") for c in path_steps.mid_removals(rig, rig.ifaces, e)]
    # The kernel bottlenecks', whichever ran before.
    cmds += [f"tc qdisc del dev {rig.ifaces.mid_right} root", f"tc qdisc del dev {rig.ifaces.mid_left} root"]
    return list(dict.fromkeys(cmds)) + _mid_addresses(rig)


def _check(python: str, ifaces: list[tuple[str, str]], kernel_args: str = "") -> dict[str, Any]:
    """_Check is the step that refuses a host whose interfaces are in use (or whose kernel lacks what mid needs)."""
    args = " ".join(f"--iface {dev} --own {addr}/{path.PREFIX_LEN}" for dev, addr in ifaces)
    return sys_step(python, f"-m antler.rig.testbed check {args} {kernel_args}".rstrip())


def _reset(cmds: list[str]) -> dict[str, Any]:
    """_Reset is one quiet step that runs the removals, each allowed to find nothing to remove."""
    script = "; ".join(f"{c} >/dev/null 2>&1" for c in cmds) + "; true"
    return {"system": {"args": ["sh", "-c", script], "stdout": "quiet", "stderr": "quiet"}}


# --- the check run on each host at set-up


def check_host(
    ifaces: list[str], own: list[str] | None = None, qdisc: str = "", shaper: str = "none", emulator: str = "none"
) -> list[str]:
    """Return what keeps this host from playing its part (empty: nothing).

    Each interface must exist and carry no IPv4 address but the rig's own
    (``own``, ADDR/LEN, left by a test that failed before its tear-down): an
    interface with another address is in use (the management interface
    always has one). With qdisc, shaper or emulator the kernel must have them.
    """
    problems = []
    # Asked of the kernel over netlink (ip), not read from /sys: a process that
    # only entered a network namespace still sees its parent's /sys/class/net.
    links = _ip_json("link")
    names = sorted(str(link.get("ifname")) for link in links)
    addrs = {str(link.get("ifname")): link.get("addr_info", []) for link in _ip_json("-4", "addr")}
    for dev in ifaces:
        if dev not in names:
            problems.append(f"interface {dev!r} does not exist on this host (it has: {', '.join(names)})")
            continue
        other = [f"{a['local']}/{a['prefixlen']}" for a in addrs.get(dev, [])]
        other = [a for a in other if a not in (own or [])]
        if other:
            problems.append(
                f"interface {dev!r} has {', '.join(other)}, which the rig did not assign: it may be in use "
                "(the management interface?); the test interfaces must carry no IPv4 address"
            )
    try:
        if qdisc:
            check_qdisc(qdisc)
        if shaper == "htb":
            check_qdisc("htb", "the bottleneck shaper")
        if emulator in ("netem", "tun"):
            choose_emulator(emulator)  # raises naming what this kernel has
    except RigError as e:
        problems.append(f"{e} (kernel {os.uname().release})")
    return problems


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    data: list[dict[str, Any]] = json.loads(out.stdout or "[]")
    return data


def main(argv: list[str] | None = None) -> int:
    """Return ``python -m antler.rig.testbed check``: exit status 2 and the reasons if this host cannot play its part."""
    p = argparse.ArgumentParser(prog="python -m antler.rig.testbed", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="check this host's test interfaces (and, for mid, its kernel)")
    c.add_argument("--iface", action="append", required=True)
    c.add_argument("--own", action="append", default=[], help="an address (ADDR/LEN) the rig itself assigns")
    c.add_argument("--qdisc", default="")
    c.add_argument("--shaper", default="none", choices=("none", "htb"))
    c.add_argument("--emulator", default="none", choices=("none", "netem", "tun"))
    args = p.parse_args(argv)
    problems = check_host(args.iface, args.own, args.qdisc, args.shaper, args.emulator)
    for problem in problems:
        print(f"testbed: {os.uname().nodename}: {problem}", file=sys.stderr)
    if problems:
        return 2
    print(f"testbed: {os.uname().nodename}: {', '.join(args.iface)} ready (kernel {os.uname().release})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
