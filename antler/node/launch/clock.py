"""Clocks of launched nodes: which kernel a node runs on, and its clock's offset to its launcher's.

An offset is estimated as antler does for one-way delays across hosts: the
launcher reads the node's wall clock a few times and keeps the round trip
that took least time, taking the node's reading to be from the middle of it.
Two processes under one kernel (same boot ID) share a clock, so a node on the
launcher's own host has offset 0 by construction, whatever the estimate says.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

CLOCK_ROUNDS = 5
"""CLOCK_ROUNDS is how many round trips estimate a node's clock offset; the fastest one wins."""


def boot_id() -> str:
    """Identify the running kernel: two processes with the same one share a clock."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


async def clock_offset(read_clock: Callable[[], Awaitable[int]], node_boot_id: str) -> dict[str, Any]:
    """Estimate a node's clock offset from the fastest of CLOCK_ROUNDS reads of its clock.

    ``read_clock`` returns the node's wall clock in ns since the epoch. The
    result holds ``clock_offset_ns`` (node clock minus this one; 0 on the same
    kernel), ``clock_offset_measured_ns``, ``clock_rtt_ns`` and ``same_clock``,
    as meta.json records them.
    """
    best_rtt: int | None = None
    best_offset = 0
    for _ in range(CLOCK_ROUNDS):
        t0 = time.time_ns()
        remote = await read_clock()
        t1 = time.time_ns()
        rtt = t1 - t0
        if best_rtt is None or rtt < best_rtt:
            best_rtt, best_offset = rtt, remote - (t0 + t1) // 2
    same_clock = node_boot_id == boot_id()
    return {
        "clock_offset_ns": 0 if same_clock else best_offset,
        "clock_offset_measured_ns": best_offset,
        "clock_rtt_ns": best_rtt,
        "same_clock": same_clock,
    }


def relative_to(facts: dict[str, Any], launcher: dict[str, Any]) -> dict[str, Any]:
    """Re-base the facts of a node launched by another node on this process's clock.

    The node's offset was measured against its launcher's clock; adding the
    launcher's own offset gives it against this one's (0 again if the node
    shares this kernel).
    """
    out = dict(facts)
    out.setdefault("parent", launcher.get("id"))
    if out.get("boot_id") == boot_id():
        out["clock_offset_ns"], out["same_clock"] = 0, True
    else:
        out["clock_offset_ns"] = int(out.get("clock_offset_ns") or 0) + int(launcher.get("clock_offset_ns") or 0)
        out["same_clock"] = False
    return out
