"""What the kernel offers a rig: which qdiscs it has, and so which delay emulator to use.

Qdiscs are found by trying them: in a scratch network namespace each known
kind is added to ``lo`` with ``tc``. The kernel answers "Specified qdisc kind
is unknown" for a kind it lacks (no built-in code and no module to load); any
other answer, success or a complaint about the parameters, means it has it.
The answer is cached for the life of the process (a sweep detects once).
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess

UNKNOWN_KIND = "qdisc kind is unknown"
"""UNKNOWN_KIND is the kernel's answer (extack) to adding a qdisc it does not have."""

# Kinds to look for, with parameters that tc accepts, so that only the kernel
# can refuse them. Classful and multiqueue ones may be refused on lo for other
# reasons, which still shows the kernel has them.
QDISC_PROBES: dict[str, str] = {
    "pfifo": "pfifo limit 1000",
    "bfifo": "bfifo limit 100000",
    "pfifo_head_drop": "pfifo_head_drop limit 1000",
    "pfifo_fast": "pfifo_fast",
    "htb": "htb",
    "tbf": "tbf rate 1mbit burst 10k latency 50ms",
    "hfsc": "hfsc",
    "drr": "drr",
    "qfq": "qfq",
    "prio": "prio",
    "netem": "netem delay 1ms",
    "fq": "fq",
    "fq_codel": "fq_codel",
    "fq_pie": "fq_pie",
    "codel": "codel",
    "cake": "cake",
    "sfq": "sfq",
    "sfb": "sfb",
    "red": "red limit 400000 min 30000 max 90000 avpkt 1000 burst 55 bandwidth 10mbit probability 0.02",
    "choke": "choke limit 1000 bandwidth 10mbit",
    "pie": "pie",
    "hhf": "hhf",
    "dualpi2": "dualpi2",
    "skbprio": "skbprio",
    "multiq": "multiq",
    "plug": "plug",
}

_scratch = itertools.count()


class RigError(Exception):
    """A rig that cannot be built as configured on this kernel, with the reason."""


@functools.cache
def qdiscs() -> frozenset[str]:
    """Return the qdisc kinds this kernel has, among those in QDISC_PROBES.

    Raises RigError without ``tc`` and ``ip`` (iproute2).
    """
    if shutil.which("tc") is None or shutil.which("ip") is None:
        raise RigError("tc and ip (iproute2) are needed to detect qdiscs")
    # Named as tests/lab/netns.unique_name names them: prefix, pid, counter.
    ns = f"rq{os.getpid() % 100000}-{next(_scratch)}"
    _run("ip", "netns", "add", ns)
    try:
        found = set()
        for kind, args in QDISC_PROBES.items():
            r = _run("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "handle", "1:", *args.split(), check=False)
            if r.returncode == 0:
                found.add(kind)
                _run("tc", "-n", ns, "qdisc", "del", "dev", "lo", "root", check=False)
            elif UNKNOWN_KIND not in r.stderr:
                found.add(kind)
        return frozenset(found)
    finally:
        _run("ip", "netns", "del", ns, check=False)


@functools.cache
def tcp_ecn_accepts(value: int) -> bool:
    """Report whether this kernel's net.ipv4.tcp_ecn takes value (3 is AccECN, Linux 6.18+ with it built).

    Written in a scratch namespace, so the host's setting is never touched.
    """
    ns = f"rq{os.getpid() % 100000}-{next(_scratch)}"
    _run("ip", "netns", "add", ns)
    try:
        return _run("ip", "netns", "exec", ns, "sysctl", "-w", f"net.ipv4.tcp_ecn={value}", check=False).returncode == 0
    finally:
        _run("ip", "netns", "del", ns, check=False)


def has_tun() -> bool:
    """Report whether TUN devices can be opened (/dev/net/tun)."""
    return os.path.exists("/dev/net/tun")


def choose_emulator(wanted: str = "auto") -> str:
    """Pick the delay emulator: ``netem`` where the kernel has it, else ``tun``.

    ``wanted`` may force one (``netem`` or ``tun``); forcing one the kernel
    cannot run is a RigError.
    """
    if wanted not in ("auto", "netem", "tun"):
        raise RigError(f"rig.emulator {wanted!r} must be auto, netem or tun")
    if wanted in ("auto", "netem") and "netem" in qdiscs():
        return "netem"
    if wanted == "netem":
        raise RigError(f"rig.emulator is netem but this kernel lacks netem; it has: {', '.join(sorted(qdiscs()))}")
    if not has_tun():
        raise RigError("no delay emulator: the kernel lacks netem and /dev/net/tun is missing")
    return "tun"


def check_qdisc(kind: str, what: str = "rig.qdisc") -> None:
    """Raise a RigError naming the kernel's qdiscs if it lacks kind."""
    have = qdiscs()
    if kind not in have:
        known = "" if kind in QDISC_PROBES else " (not a qdisc antler knows)"
        raise RigError(f"{what} {kind!r}: this kernel lacks it{known}; it has: {', '.join(sorted(have))}")


def kernel_release() -> str:
    """Return the running kernel's release (uname -r)."""
    return os.uname().release


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RigError(f"{' '.join(argv)}: {e}") from None
    if check and r.returncode != 0:
        raise RigError(f"{' '.join(argv)}: {r.stderr.strip() or f'exit status {r.returncode}'}")
    return r
