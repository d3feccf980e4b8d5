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

The rig makes the veths and addresses; the bottleneck, the delay (netem, or
the userspace TUN delay link) and the routes are the steps every rig takes,
from :mod:`antler.rig.path_steps`; the ``testbed`` rig takes the same ones on
cluster hosts.

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

import os
import tempfile
from dataclasses import dataclass
from typing import Any

from antler.node.nodespec import Node
from antler.node.spec import ConfigError, parse
from antler.rig import path, path_steps
from antler.rig.kernel import kernel_release, qdiscs
from antler.rig.path import Addresses, Ifaces, Nodes
from antler.rig.path_steps import child, sys_step

KIND = "dumbbell"
DEV_LEFT, DEV_MID_LEFT, DEV_MID_RIGHT, DEV_RIGHT = "l-mid", "m-left", "m-right", "r-mid"
DUMBBELL_NET = "10.77."
"""DUMBBELL_NET: the dumbbell's addresses stay in 10.77.0.0/16, inside the namespaces it makes on this host."""


@dataclass(frozen=True)
class Dumbbell(path.Path):
    """The dumbbell rig's parameters, the ``rig`` key of an experiment's config.

    Its defaults are written once, in the packaged ``conf/rig/dumbbell.yaml``
    (see :func:`antler.rig.path.with_defaults`), which Hydra composes and
    users override.
    """

    kind: str
    netns_prefix: str
    addr: Addresses
    ifaces: Ifaces
    nodes: Nodes

    def validate(self) -> None:
        """Check the values that need no kernel to check, raising ValueError naming the bad one."""
        if self.kind != KIND:
            raise ValueError(f"rig kind {self.kind!r} is not {KIND!r}")
        self.validate_path()
        for name in (*path.ROLES, *path.SENDERS):
            if getattr(self.addr, name) and not getattr(self.addr, name).startswith(DUMBBELL_NET):
                raise ValueError(f"addr.{name} {getattr(self.addr, name)!r} must be in 10.77.0.0/16")
        for n in (self.nodes.left, self.nodes.mid, self.nodes.right, *(getattr(self.nodes, s) for s in path.SENDERS)):
            if n is not None and not n.netns.create:
                raise ValueError(f"node {n.id!r} needs netns: {{create: true}} so the rig is deleted with the test")


def params(data: Any, where: str = "rig") -> Dumbbell:
    """Parse rig config data, completed from conf/rig/dumbbell.yaml, into Dumbbell parameters, raising ConfigError."""
    return parse(Dumbbell, path.with_defaults(KIND, data), where)


def check(rig: Dumbbell) -> str:
    """Verify the kernel can build the rig and return its delay emulator, raising ConfigError.

    The emulator is ``netem`` or ``tun``, or ``none`` when the rig adds
    neither delay nor loss.
    """
    return path.check(rig)


def setup_runs(data: Any) -> list[dict[str, Any]]:
    """Return the run-tree steps that build the rig, as plain run data (a list of runs).

    With rig.senders, the left nodes are left1, left2, ... instead of left,
    each with its own veth into a bridge at mid (named as mid_left, holding
    mid_left's address), so the reverse bottleneck at the bridge's egress
    and the forward one at mid_right's are shared by all of them.
    """
    rig = params(data)
    emulator = check(rig)
    nodes = path.node_data(KIND, data)
    a, i = rig.addr, rig.ifaces
    ns_right = rig.nodes.right.netns_name
    senders = sender_names(rig)
    if senders:
        links = [sys_step(f"ip link add {i.mid_left} type bridge")]
        for n, name in enumerate(senders, 1):
            port = f"{i.mid_left}{n}"
            links += [
                sys_step(f"ip link add {port} type veth peer name {i.left} netns {_node(rig, name).netns_name}"),
                sys_step(f"ip link set {port} master {i.mid_left}"),
                sys_step(f"ip link set {port} up"),
                *path_steps.offloads(rig, port),
            ]
    else:
        links = [sys_step(f"ip link add {i.mid_left} type veth peer name {i.left} netns {rig.nodes.left.netns_name}")]
    mid: list[dict[str, Any]] = [
        sys_step("echo", path.summary(KIND, rig, emulator)),
        *links,
        sys_step(f"ip link add {i.mid_right} type veth peer name {i.right} netns {ns_right}"),
        *path_steps.address(i.mid_left, a.mid_left),
        *path_steps.address(i.mid_right, a.mid_right),
        *path_steps.mid_setup(
            rig, i, a, emulator, records_file(rig), events_file(rig), tuple(getattr(a, s) for s in senders)
        ),
    ]
    right = path_steps.end_setup(rig, i.right, a.right, a.net("left"), a.mid_right)
    runs = [child(nodes["mid"], mid), child(nodes["right"], right)]
    for name in senders or ["left"]:
        addr = getattr(a, name)
        left = [*path_steps.end_setup(rig, i.left, addr, a.net("right"), a.mid_left), *path_steps.warmup(rig, a.right)]
        runs.append(child(nodes[name], left))
    go = path_steps.schedule_go(rig, events_file(rig))
    return runs + ([child(nodes["mid"], go)] if go else [])


def sender_names(rig: Dumbbell) -> list[str]:
    """Return the left nodes of rig.senders (left1, left2, ...), or [] for the one left node."""
    return list(path.SENDERS[: len(rig.senders)])


def _node(rig: Dumbbell, name: str) -> Node:
    node = getattr(rig.nodes, name)
    if node is None:
        raise ConfigError(f"rig.nodes.{name}", "missing: rig.senders needs a node for each sender")
    return node


def teardown_runs(data: Any) -> list[dict[str, Any]]:
    """Return the steps that log the bottleneck's counters and delete the rig's links."""
    rig = params(data)
    emulator = check(rig)
    nodes = path.node_data(KIND, data)
    i = rig.ifaces
    ports = [sys_step(f"ip link del {i.mid_left}{n}") for n in range(1, len(rig.senders) + 1)]
    steps = [
        *path_steps.mid_teardown(rig, i, emulator, records_file(rig), events_file(rig)),
        sys_step(f"ip link del {i.mid_left}"),
        *ports,
        sys_step(f"ip link del {i.mid_right}"),
    ]
    return [child(nodes["mid"], steps)]


def records_file(rig: Dumbbell) -> str:
    """Return where mid's userspace bottleneck keeps its queue records until tear-down (one file per rig).

    The file is named by mid's namespace as a whole word (``@`` on both
    sides), so a sweep that runs tests at once on one kernel, which renames
    each test's namespaces wherever they are whole words
    (:func:`antler.invoke.sweep.tree.place`), gives each test a file of its own.
    """
    return os.path.join(tempfile.gettempdir(), f"antler-queue@{rig.nodes.mid.netns_name}@.bin")


def events_file(rig: Dumbbell) -> str:
    """Return where mid's schedule process keeps its changes until tear-down (one file per rig; named as records_file)."""
    return os.path.join(tempfile.gettempdir(), f"antler-events@{rig.nodes.mid.netns_name}@.jsonl")


def facts(data: Any) -> dict[str, Any]:
    """Describe the rig as built on this kernel, for meta.json: emulator, shaper, qdiscs."""
    rig = params(data)
    emulator = check(rig)
    return {
        "kind": KIND,
        **path.facts(rig, emulator),
        "kernel": kernel_release(),
        "kernel_qdiscs": sorted(qdiscs()),
    }
