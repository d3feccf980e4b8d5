"""Benchmark of the userspace delay link: its RTT error and CPU use, idle and at 50 Mbit/s.

Builds the dumbbell's own set-up steps (antler.rig.dumbbell.setup_runs) with
rate 0 (unshaped, so no queue builds) and rtt 20 ms, runs them with
``ip netns exec``, and measures for each variant of the delay link, side by
side in one run:

- the ping RTT (median, 99th percentile) minus the configured RTT, idle and
  while iperf3 sends 50 Mbit/s of UDP from left to right;
- the delay process's CPU use during the loaded pings (percent of one core);
- the release lateness the delay process reports.

A row with rtt 0 (no delay link) gives the path's own RTT for reference.
Run as root: ``.venv/bin/python -m bench.delay``. The machine is shared, so
read ratios between rows of one run, not absolute figures.
"""

from __future__ import annotations

import os
import re
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from antler.rig.dumbbell import setup_runs
from tests.lab.netns import NetnsFactory, sh

RTT_MS = 20.0
LOAD = "50M"
PINGS_IDLE, PINGS_LOAD = 200, 300
TICK = os.sysconf("SC_CLK_TCK")

VARIANTS: list[tuple[str, float, list[str]]] = [
    ("no delay link (rtt 0)", 0.0, []),
    ("spin 300us, normal priority", RTT_MS, ["--spin", "300us", "--realtime", "0"]),
    ("spin 0, normal priority", RTT_MS, ["--spin", "0", "--realtime", "0"]),
    ("spin 300us, SCHED_FIFO 10", RTT_MS, ["--spin", "300us", "--realtime", "10"]),
    ("spin 50us, SCHED_FIFO (default)", RTT_MS, []),
    ("spin 0, SCHED_FIFO 10", RTT_MS, ["--spin", "0", "--realtime", "10"]),
]


class Rig:
    """One dumbbell under test, in namespaces of the lab's (deleted by close)."""

    def __init__(self) -> None:
        self.made = NetnsFactory()
        self.names: dict[str, str] = {}

    def enter(self, node: str) -> list[str]:
        """Return the command prefix that runs a command in node's namespace."""
        return ["ip", "netns", "exec", self.names[node]]

    def build(self, rtt_ms: float, extra: list[str]) -> subprocess.Popen[str] | None:
        """Make the namespaces and run the rig's set-up steps; it returns the delay process."""
        self.names = {n: self.made.new(f"bd{n[0]}").name for n in ("left", "mid", "right")}
        rig: dict[str, Any] = {
            "rate": "0",
            "rtt": f"{rtt_ms:g}ms",
            "emulator": "tun",
            "nodes": {n: {"id": n, "netns": {"name": name, "create": True}} for n, name in self.names.items()},
        }
        delay: subprocess.Popen[str] | None = None
        for child in setup_runs(rig):
            node = child["child"]["node"]["id"]
            for step in child["child"]["serial"]:
                s = step["system"]
                argv = s.get("command", "").split() + list(s.get("args", []))
                if s.get("background"):
                    delay = subprocess.Popen(
                        [*self.enter(node), *argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    )
                else:
                    r = sh(*self.enter(node), *argv, check=False)
                    if r.returncode and not s.get("ignore_errors"):
                        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.strip()}")
        return delay

    def close(self) -> None:
        """Delete the namespaces."""
        self.made.close()


def cpu_seconds(pid: int) -> float:
    """Return a process's user+system CPU time so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def ping(rig: Rig, count: int) -> list[float]:
    """Return the RTTs (ms) of count pings from left to right, 10 ms apart."""
    out = sh(*rig.enter("left"), "ping", "-c", str(count), "-i", "0.01", "10.77.2.2").stdout
    return [float(t) for t in re.findall(r"time=([0-9.]+) ms", out)]


def pct(values: list[float], p: float) -> float:
    """Return the p-th percentile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def measure(name: str, rtt_ms: float, extra: list[str]) -> dict[str, Any]:
    """Build a rig with one variant of the delay link and measures it idle and loaded."""
    rig = Rig()
    delay = None
    server = None
    try:
        delay = rig.build(rtt_ms, extra)
        idle = ping(rig, PINGS_IDLE)
        server = subprocess.Popen(
            [*rig.enter("right"), "iperf3", "-s", "-1", "-B", "10.77.2.2"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)
        client = subprocess.Popen(
            [*rig.enter("left"), "iperf3", "-c", "10.77.2.2", "-u", "-b", LOAD, "-l", "1400", "-t", "6"],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        c0, t0 = (cpu_seconds(delay.pid) if delay else 0.0), time.monotonic()
        loaded = ping(rig, PINGS_LOAD)
        c1, t1 = (cpu_seconds(delay.pid) if delay else 0.0), time.monotonic()
        out, _ = client.communicate(timeout=30)
        m = re.search(r"([0-9.]+) Mbits/sec\s+[0-9.]+ ms\s+\d+/\d+ \(([0-9.e+-]+)%\)\s+receiver", out)
        stats = ""
        if delay is not None:
            delay.send_signal(signal.SIGINT)
            stats = delay.communicate(timeout=10)[0]
            delay = None
        late = re.search(r"link d-fwd.*?mean ([0-9.]+)us max ([0-9]+)us", stats)
        return {
            "name": name,
            "idle_med": statistics.median(idle) - rtt_ms,
            "idle_p99": pct(idle, 99) - rtt_ms,
            "load_med": statistics.median(loaded) - rtt_ms,
            "load_p99": pct(loaded, 99) - rtt_ms,
            "cpu": 100 * (c1 - c0) / (t1 - t0),
            "mbps": float(m.group(1)) if m else float("nan"),
            "loss": float(m.group(2)) if m else float("nan"),
            "late": f"{late.group(1)}/{late.group(2)}" if late else "-",
        }
    finally:
        for p in (delay, server):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        rig.close()


def main() -> int:
    """Run every variant and print the table."""
    if os.geteuid() != 0:
        print("bench/delay.py needs root (namespaces, TUN)", file=sys.stderr)
        return 1
    print(f"delay link at rtt {RTT_MS:g} ms, load {LOAD}bit/s UDP left->right, rig.rate=0 (no queue)")
    print("errors are ping RTT minus configured RTT, in ms; late = fwd release lateness mean/max in us")
    print(
        f"{'variant':32} {'idle med':>8} {'idle p99':>8} {'load med':>8} {'load p99':>8} {'cpu %':>6} "
        f"{'Mbit/s':>6} {'loss %':>6} {'late':>10}"
    )
    for name, rtt, extra in VARIANTS:
        r = measure(name, rtt, extra)
        print(
            f"{r['name']:32} {r['idle_med']:8.3f} {r['idle_p99']:8.3f} {r['load_med']:8.3f} {r['load_p99']:8.3f} "
            f"{r['cpu']:6.0f} {r['mbps']:6.1f} {r['loss']:6.2f} {r['late']:>10}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
