"""Provenance: what a reader needs to reproduce a test, for meta.json ``provenance``.

The host-wide part (:func:`host_provenance`) is read once per process: the
tool's version and git commit (and whether the checkout was dirty), the
kernel release with the qdiscs and congestion controls it has, the
clocksource, the CPU model and frequency governor. The seeds come from the
test's config (:func:`seeds`). What lives in the rig's namespaces (sysctls,
offloads, the qdiscs as installed) is read while the rig is up, by
:mod:`antler.rig.snapshot`, and joins these under ``rig``.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import antler
from antler.report.provenance import short
from antler.rig.kernel import kernel_release, qdiscs

__all__ = ["git_state", "host_provenance", "seeds", "short"]

CCA_FILE = "/proc/sys/net/ipv4/tcp_available_congestion_control"
CLOCKSOURCE_FILE = "/sys/devices/system/clocksource/clocksource0/current_clocksource"
GOVERNOR_FILE = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def git_state(where: Path | None = None) -> dict[str, Any]:
    """Return the git commit of the checkout antler-ray runs from and whether it has uncommitted changes.

    ``{"commit": "3f2a...", "dirty": True, "changed": ["antler/x.py"]}``; an
    installed package that is no checkout gives ``{"commit": "", "dirty": None}``.
    Untracked files do not make it dirty (a results folder in the checkout
    would); a modified tracked file does.
    """
    top = where or Path(antler.__file__).resolve().parents[1]
    try:
        commit = subprocess.run(
            ["git", "-C", str(top), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(top), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"commit": "", "dirty": None}
    return {"commit": commit, "dirty": bool(status), "changed": [line[3:] for line in status][:20]}


def cpu_facts() -> dict[str, Any]:
    """Return the CPU model, the number of CPUs this process may use and the frequency governor."""
    model = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "model": model or platform.processor(),
        "cpus": len(os.sched_getaffinity(0)),
        "governor": _read(GOVERNOR_FILE, "none (no cpufreq)"),
    }


@functools.cache
def host_provenance() -> dict[str, Any]:
    """Return the host-wide provenance of this process's tests (read once; a sweep shares it)."""
    try:
        version = metadata.version("antler-ray")
    except metadata.PackageNotFoundError:
        version = "not installed"
    return {
        "antler_ray": {"version": version, **git_state()},
        "kernel": {
            "release": kernel_release(),
            "qdiscs": sorted(qdiscs()),
            "ccas": _read(CCA_FILE).split(),
        },
        "clocksource": _read(CLOCKSOURCE_FILE, "unknown"),
        "cpu": cpu_facts(),
    }


def seeds(config: Any, at: str = "") -> dict[str, Any]:
    """Return every key named ``seed`` in a resolved config, by its dotted path (``rig.seed``)."""
    found: dict[str, Any] = {}
    if isinstance(config, dict):
        for k, v in config.items():
            path = f"{at}.{k}" if at else str(k)
            if k == "seed" and not isinstance(v, dict | list):
                found[path] = v
            else:
                found.update(seeds(v, path))
    elif isinstance(config, list):
        for i, v in enumerate(config):
            found.update(seeds(v, f"{at}[{i}]"))
    return found
