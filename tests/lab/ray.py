"""A Ray cluster of raylets on this machine, for tests and benchmarks: free ports, `ray start`, stop, wait for hosts."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil


def free_ports(n: int) -> Iterator[int]:
    """Yield n distinct TCP ports free on loopback right now.

    All n are bound at once: ports taken one at a time, each socket closed
    before the next, can repeat (a head raylet once got the same port for two
    components and never started).
    """
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        ports = [int(s.getsockname()[1]) for s in socks]
    yield from ports


def ray_env() -> dict[str, str]:
    """Return this process's environment without RAY_ADDRESS (so a child joins the cluster it is told to)."""
    return {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}


def ray_start(
    args: list[str], log: Path, free: Iterator[int], extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `ray start --block` on 127.0.0.1 (one CPU, 100 MiB of object store, ports from free), output to log."""
    ports = [
        "--node-manager-port", str(next(free)),
        "--object-manager-port", str(next(free)),
        "--dashboard-agent-listen-port", str(next(free)),
        "--dashboard-agent-grpc-port", str(next(free)),
        "--runtime-env-agent-port", str(next(free)),
        "--metrics-export-port", str(next(free)),
        "--min-worker-port", "0", "--max-worker-port", "0",
    ]  # fmt: skip
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats", "--object-store-memory", str(100 * 2**20), *ports, *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=ray_env() | (extra_env or {}), start_new_session=True,
    )  # fmt: skip


def ray_stop(proc: subprocess.Popen[bytes]) -> None:
    """End a `ray start --block` and every process under it, by PID."""
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.Error:
        tree = [proc.pid]
    for pid in reversed(tree):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    proc.wait(10)


def wait_for_hosts(address: str, want: set[str], cwd: Path, extra_env: dict[str, str] | None = None) -> None:
    """Wait (90 s at most), from a fresh process, until the cluster at address has exactly the hosts want.

    Raises AssertionError naming the hosts found, with the child's stderr, when it does not.
    """
    code = (
        "import ray, time, sys\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "from antler.node.launch.ray.cluster import cluster_hosts\n"
        "end = time.time() + 90\n"
        f"while not {sorted(want)!r} == sorted(cluster_hosts()) and time.time() < end: time.sleep(0.5)\n"
        "print(sorted(cluster_hosts()))\n"
    )
    env = ray_env() | (extra_env or {})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150, cwd=cwd)
    assert out.stdout.strip() == repr(sorted(want)), f"hosts {out.stdout.strip()}: {out.stderr[-2000:]}"
