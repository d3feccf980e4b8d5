"""Benchmark: one TCP stream flow over veth between two namespaces, ours against iperf3.

Run as root from the repository root: ``python -m bench.stream`` (options:
``--seconds 10 --pairs 3``). It prints, for each pair of runs taken side by
side, the goodput of ``stream_client`` and of ``iperf3`` on the same path, and
the CPU time each spent per gigabyte moved (both ends), then the medians and
the ratios ours/iperf3. A second part measures the cost of sampling
(``sample_io_interval: 1ms``, ``tcp_info_interval: 10ms``) as a goodput ratio
against a run that samples once a second.

Goodput is the receiver's: bytes read over the receiver's time to its last
byte, for ours; ``end.sum_received`` for iperf3. Only 10.77.9.0/24 inside the
benchmark's own namespaces is used; they are deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from antler.config.test import parse_run
from antler.node import Batch, Duration, Item, StreamInfo, do
from antler.node.launch import Launchers
from tests.lab.netns import Netns, NetnsFactory, netns_factory, netns_list

CLIENT_IP, SERVER_IP = "10.77.9.1", "10.77.9.2"
IPERF_PORT = 5299
LAUNCHERS = Launchers()
"""LAUNCHERS starts our nodes as Ray actors (the tool's default), one embedded Ray for every run."""


@dataclass
class Measure:
    """One run's receiver goodput and the CPU it cost."""

    goodput_mbps: float
    cpu_s: float
    bytes: int

    @property
    def cpu_s_per_gb(self) -> float:
        return self.cpu_s / (self.bytes / 1e9) if self.bytes else float("nan")


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ours(a: Netns, b: Netns, seconds: float, sample_io: str = "100ms", tcp_info: str = "0") -> Measure:
    """Run one upload with stream_server / stream_client and measures it."""

    def node(which: str, ns: Netns) -> dict[str, Any]:
        return {"id": which, "netns": {"name": ns.name, "create": False}}

    transfer = {
        "flow": "bench",
        "duration": f"{seconds}s",
        "cca": "cubic",
        "sample_io_interval": sample_io,
        "tcp_info_interval": tcp_info,
    }
    run = parse_run(
        {
            "serial": [
                {
                    "child": {
                        "node": node("server", b),
                        "stream_server": {"listen_addr": f"{SERVER_IP}:0", "listen_addr_key": "srv"},
                    }
                },
                {"child": {"node": node("client", a), "stream_client": {"addr_key": "srv", "upload": transfer}}},
            ]
        }
    )
    items: list[Item] = []
    cpu0 = _cpu_self()
    ok = asyncio.run(do(run, items.append, launch=LAUNCHERS, timeout=Duration.parse(f"{seconds + 30}s")))
    cpu = _cpu_self() - cpu0
    if not ok:
        raise RuntimeError(f"our run failed: {[i for i in items if not isinstance(i, (Batch, StreamInfo))]}")
    last_t, last_total = 0, 0
    for item in items:
        if isinstance(item, Batch) and item.kind == "stream_io":
            cols = item.batch.to_pydict()
            for srv, sent, t, total in zip(
                cols["server"], cols["sent"], cols["t_ns"], cols["total_bytes"], strict=True
            ):
                if srv and not sent and total >= last_total:
                    last_t, last_total = t, total
    return Measure(last_total * 8 / (last_t / 1e9) / 1e6, cpu, last_total)


def iperf3(a: Netns, b: Netns, seconds: float) -> Measure:
    """Run one iperf3 upload on the same path and measures it."""
    cpu0 = _cpu_children()
    server = subprocess.Popen(
        ["ip", "netns", "exec", b.name, "iperf3", "-s", "-1", "-B", SERVER_IP, "-p", str(IPERF_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        proc = subprocess.run(
            [
                "ip", "netns", "exec", a.name,
                "iperf3", "-c", SERVER_IP, "-p", str(IPERF_PORT), "-t", str(seconds), "-C", "cubic", "-J",
            ],
            capture_output=True,
            text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(f"iperf3 failed ({proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-500:]}")
        out = proc.stdout
    finally:
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    end = json.loads(out)["end"]["sum_received"]
    return Measure(end["bits_per_second"] / 1e6, _cpu_children() - cpu0, int(end["bytes"]))


class Veth:
    """The benchmark's two namespaces and their link, rebuilt if something deleted them.

    On a machine shared with other test runs, a leak check elsewhere may
    delete namespaces it did not make; a run then starts on a fresh pair.
    """

    def __init__(self, factory: NetnsFactory) -> None:
        self.factory = factory
        self.a: Netns | None = None
        self.b: Netns | None = None

    def pair(self) -> tuple[Netns, Netns]:
        existing = netns_list()
        if self.a is None or self.b is None or not {self.a.name, self.b.name} <= existing:
            if self.a is not None:
                print("  (namespaces vanished; rebuilding the path)")
                self.factory.close()
            self.a, self.b = self.factory.new("bsa"), self.factory.new("bsb")
            self.factory.link(self.a, f"{CLIENT_IP}/24", self.b, f"{SERVER_IP}/24")
        return self.a, self.b


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--skip-sampling", action="store_true", help="only compare with iperf3")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/stream.py needs root (namespaces)", file=sys.stderr)
        return 2
    with netns_factory() as f:
        veth = Veth(f)
        print(f"one cubic upload over veth, {args.seconds:g}s per run, {args.pairs} pairs, {os.cpu_count()} CPUs")
        print(
            f"{'pair':>4} {'ours Mb/s':>10} {'iperf3 Mb/s':>12} {'ratio':>6} {'ours CPU s/GB':>14} {'iperf3 CPU s/GB':>16}"
        )
        mine, theirs = [], []
        for k in range(args.pairs):
            # Alternate who goes first, so drift in the machine's load falls on both.
            if k % 2 == 0:
                m, t = ours(*veth.pair(), args.seconds), iperf3(*veth.pair(), args.seconds)
            else:
                t, m = iperf3(*veth.pair(), args.seconds), ours(*veth.pair(), args.seconds)
            mine.append(m)
            theirs.append(t)
            print(
                f"{k + 1:>4} {m.goodput_mbps:>10.0f} {t.goodput_mbps:>12.0f} {m.goodput_mbps / t.goodput_mbps:>6.3f}"
                f" {m.cpu_s_per_gb:>14.3f} {t.cpu_s_per_gb:>16.3f}"
            )
        ratio = statistics.median(m.goodput_mbps / t.goodput_mbps for m, t in zip(mine, theirs, strict=True))
        cpu_ratio = statistics.median(m.cpu_s_per_gb / t.cpu_s_per_gb for m, t in zip(mine, theirs, strict=True))
        print(f"median goodput ratio ours/iperf3: {ratio:.3f} (target >= 0.95)")
        print(f"median CPU-per-GB ratio ours/iperf3: {cpu_ratio:.3f} (target <= 1.2)")
        if args.skip_sampling:
            return 0
        print("sampling cost: sample_io_interval 1ms + tcp_info_interval 10ms against 1s sampling")
        ratios = []
        for k in range(args.pairs):
            if k % 2 == 0:
                base = ours(*veth.pair(), args.seconds, sample_io="1s")
                sampled = ours(*veth.pair(), args.seconds, sample_io="1ms", tcp_info="10ms")
            else:
                sampled = ours(*veth.pair(), args.seconds, sample_io="1ms", tcp_info="10ms")
                base = ours(*veth.pair(), args.seconds, sample_io="1s")
            ratios.append(sampled.goodput_mbps / base.goodput_mbps)
            print(
                f"{k + 1:>4} sampled {sampled.goodput_mbps:>8.0f} Mb/s  baseline {base.goodput_mbps:>8.0f} Mb/s  ratio {ratios[-1]:.3f}"
            )
        print(f"median sampling goodput ratio: {statistics.median(ratios):.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
