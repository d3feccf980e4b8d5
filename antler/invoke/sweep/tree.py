"""Placing one test of a parallel sweep: its nodes onto a host, its namespaces under names of its own.

When tests run at once on one kernel (two host names on one machine, or
``sweep.per_host`` > 1), two dumbbell tests would both create ``ar-left``.
:func:`place` returns the test's run tree with

- every Ray node that names no host (``launcher.ray.host``) put on ``host``,
  so the test runs wholly there; nodes that name a host keep it;
- every namespace the test creates (``netns: {create: true}``) renamed
  ``NAME`` + ``suffix``, on the nodes that create it and on those that join it,
  and wherever the name appears as a whole word in a ``system`` command or its
  args (a rig's ``ip link add ... netns ar-left``).

The config is left as it was (so an incremental run still compares equal):
the renaming happens here, at run time, and meta.json records it. Names are
replaced only as whole words (bounded by characters a namespace name cannot
hold), so ``ar-left`` never touches ``ar-left2`` or a device ``l-mid``.
Namespaces a test joins but does not create are the user's, and keep their
names; so do ports of nodes outside namespaces, which tests on one host share.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass, replace
from typing import Any

from antler.node.nodespec import Node, RayLauncher
from antler.node.run import Run, Schedule
from antler.node.runners.system import System

_NAME_CHAR = "A-Za-z0-9_.-"


def place(run: Run, host: str = "", suffix: str = "") -> tuple[Run, dict[str, str]]:
    """Return the run tree placed on host with its created namespaces renamed, and the renaming (old: new)."""
    names = (
        {n.netns_name: f"{n.netns_name}{suffix}" for n in run.nodes() if n.netns.create and n.netns_name}
        if suffix
        else {}
    )
    words = (
        re.compile(
            f"(?<![{_NAME_CHAR}])({'|'.join(map(re.escape, sorted(names, key=len, reverse=True)))})(?![{_NAME_CHAR}])"
        )
        if names
        else None
    )

    def text(s: str) -> str:
        return words.sub(lambda m: names[m.group(1)], s) if words is not None else s

    def node(n: Node) -> Node:
        pinned = n.launcher.ray is not None and n.launcher.ray.host
        if host and n.launcher.name == "ray" and not pinned:
            n = replace(n, launcher=replace(n.launcher, ray=RayLauncher(host=host)))
        ns = n.netns_name
        if ns is not None and ns in names:
            n = replace(n, netns=replace(n.netns, name=names[ns]))
        return n

    def walk(value: Any) -> Any:
        if isinstance(value, Node):
            return node(value)
        if isinstance(value, System):
            return replace(value, command=text(value.command), args=tuple(text(a) for a in value.args))
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        if isinstance(value, (Run, Schedule)) and is_dataclass(value):
            changed = {}
            for f in fields(value):
                old = getattr(value, f.name)
                new = walk(old)
                if new is not old:
                    changed[f.name] = new
            return replace(value, **changed) if changed else value
        return value

    if not host and not names:
        return run, {}
    placed: Run = walk(run)
    return placed, names
