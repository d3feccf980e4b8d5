"""The rig as it really is, read back while it is up: sysctls, offloads and qdiscs in each of its namespaces.

What decides a result is what the kernel had, not what the config asked
for: a qdisc that is not the one configured, offloads left on, another
default congestion control. :func:`read_rig` reads them in each namespace
(``tc -s qdisc show``, ``ethtool -k``, the sysctls under /proc/sys as a
thread in that namespace sees them) for meta.json's ``provenance.rig``.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

from antler.node.launch.netns import NetnsError, enter

SYSCTLS = (
    "net.ipv4.tcp_congestion_control",
    "net.ipv4.tcp_ecn",
    "net.core.default_qdisc",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.netdev_max_backlog",
    "net.core.rmem_default",
    "net.core.rmem_max",
)
"""SYSCTLS are the sysctls that decide a result (issue 26's list, and the receive buffer sizes behind socket drops)."""
OFFLOADS = (
    "tcp-segmentation-offload",
    "generic-segmentation-offload",
    "generic-receive-offload",
    "large-receive-offload",
    "rx-gro-list",
)
"""OFFLOADS are the ethtool features that make a queue lumpy (each reads ``on``, ``off`` or ``off [fixed]``)."""


def _run(*argv: str, timeout_s: float = 10) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as e:
        return f"(failed: {e})"
    return done.stdout if done.returncode == 0 else f"(failed: {done.stderr.strip()})"


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def host_sysctls() -> dict[str, str]:
    """Return SYSCTLS as this thread's namespace has them ("" for one it lacks)."""
    out = {}
    for name in SYSCTLS:
        try:
            out[name] = " ".join(_sysctl_path(name).read_text().split())
        except OSError:
            out[name] = ""
    return out


def netns_sysctls(netns: str) -> dict[str, str]:
    """Return SYSCTLS inside a named namespace; one the namespace does not have is the host's, marked ``(host)``.

    Read from a thread that enters the namespace (setns is per thread, so
    this process stays where it is). Raises NetnsError if it cannot enter.
    """
    found: dict[str, str] = {}
    error: list[NetnsError] = []

    def read() -> None:
        try:
            enter(netns)
        except NetnsError as e:
            error.append(e)
            return
        found.update(host_sysctls())

    t = threading.Thread(target=read, name=f"sysctl-{netns}", daemon=True)
    t.start()
    t.join(10)
    if error:
        raise error[0]
    host = host_sysctls()
    return {k: v if v else f"{host.get(k, '')} (host)" for k, v in found.items()}


def links(netns: str) -> list[str]:
    """Return the interfaces of a namespace other than lo, as ``ip -br link`` lists them."""
    names = []
    for line in _run("ip", "-n", netns, "-br", "link").splitlines():
        if not line or line.startswith("("):
            continue
        name = line.split()[0].split("@")[0]
        if name != "lo":
            names.append(name)
    return names


def offloads(netns: str, dev: str) -> dict[str, str]:
    """Return the OFFLOADS of one interface in a namespace, from ``ethtool -k``."""
    out = {}
    for line in _run("ip", "netns", "exec", netns, "ethtool", "-k", dev).splitlines():
        key, _, value = line.strip().partition(":")
        if key in OFFLOADS:
            out[key] = value.strip()
    return out


def qdisc_lines(netns: str) -> list[str]:
    """Return the qdiscs installed in a namespace, one ``tc qdisc show`` line each (counters left out)."""
    return [line.strip() for line in _run("tc", "-n", netns, "qdisc", "show").splitlines() if line.strip()]


def qdisc_installed(netns: str, dev: str, kind: str) -> bool:
    """Report whether a qdisc of the given kind is installed on dev in the namespace."""
    return any(line.split()[1:2] == [kind] for line in qdisc_lines(netns) if f" dev {dev} " in f"{line} ")


def read_rig(namespaces: dict[str, str]) -> dict[str, Any]:
    """Return what the rig's namespaces have, by role (``left``, ``mid``, ``right``).

    ``namespaces`` maps each role to its namespace name. The result:
    ``{"sysctls": {role: {name: value}}, "offloads": {"role/dev": {feature:
    on|off}}, "qdiscs": {role: [tc lines]}}``. A namespace that is gone
    gives ``{"error": ...}`` in place of its sysctls.
    """
    sysctls: dict[str, Any] = {}
    offs: dict[str, dict[str, str]] = {}
    qds: dict[str, list[str]] = {}
    for role, ns in namespaces.items():
        try:
            sysctls[role] = netns_sysctls(ns)
        except NetnsError as e:
            sysctls[role] = {"error": str(e)}
            continue
        for dev in links(ns):
            offs[f"{role}/{dev}"] = offloads(ns, dev)
        qds[role] = qdisc_lines(ns)
    return {"namespaces": dict(namespaces), "sysctls": sysctls, "offloads": offs, "qdiscs": qds}
