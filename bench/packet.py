#!/usr/bin/env python3
"""Benchmark: packet_client/packet_server against irtt and ping between two namespaces.

Run as root from the repository: ``.venv/bin/python -m bench.packet``. It
builds two namespaces joined by a veth (10.77.42.1 and .2), then:

1. ``ping`` RTT on the path (the floor for RTT).
2. ``pairs`` times, alternately: our echo flow and ``irtt`` at the same
   interval and packet size. For both it prints the send-time error against
   the schedule (median, p99, max in µs), RTT (median, p99 in µs) and loss.
3. A rate sweep: the highest rate one echo flow sustains with full recording
   and < 0.1% loss, beside irtt at the same rate.

Our server runs in its own process in the server namespace; our client runs
in this process on a namespaced node thread, as the tool runs it. Send-time
error is exact for ours (``t_ns - sched_t_ns``, taken just before sendto).
irtt does not record its schedule and skips slots it misses (``timer
misses``), so its per-packet error is taken modulo the interval from its
first send (which underestimates errors beyond one interval; its misses are
printed too), and its own ``timer_error`` mean is shown beside.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from antler.config.test import parse_run
from antler.node.items import Batch, Item, PacketInfo
from antler.node.root import do
from antler.node.schemas import SCHEMAS
from antler.report.analyze import packet_flows
from bench.common import ROOT
from tests.lab.netns import netns_factory, sh

CLIENT_ADDR, SERVER_ADDR = "10.77.42.1", "10.77.42.2"
OUR_PORT, IRTT_PORT = 7790, 2112


@contextlib.contextmanager
def namespaces() -> Iterator[tuple[str, str]]:
    """Yield a client and a server namespace joined by a veth (CLIENT_ADDR, SERVER_ADDR), deleted on exit."""
    with netns_factory() as made:
        a, b = made.new("bpc"), made.new("bps")
        made.link(a, f"{CLIENT_ADDR}/24", b, f"{SERVER_ADDR}/24")
        yield a.name, b.name


def nsexec(ns: str) -> list[str]:
    """Return the command prefix that runs a command in the namespace ns."""
    return ["ip", "netns", "exec", ns]


def stats(x: np.ndarray) -> tuple[float, float, float]:
    """Return median, p99 and max."""
    if not len(x):
        return (np.nan, np.nan, np.nan)
    return float(np.median(x)), float(np.percentile(x, 99)), float(np.max(x))


def ping(a: str, count: int = 300) -> tuple[float, float]:
    """Return ping's RTT median and p99 in µs on the path."""
    out = sh(*nsexec(a), "ping", "-n", "-c", str(count), "-i", "0.01", SERVER_ADDR).stdout
    rtts = np.array([float(m) * 1000 for m in re.findall(r"time=([0-9.]+) ms", out)])
    med, p99, _ = stats(rtts)
    return med, p99


SERVER_CODE = """
import asyncio, sys
from antler.node.root import do
from antler.config.test import parse_run
from antler.node.items import LogEntry
def sink(item):
    if isinstance(item, LogEntry):
        print(item.text, flush=True)
tree = {"serial": [{"packet_server": {"listen_addr": ":%d"}}, {"sleep": "1h"}]}
asyncio.run(do(parse_run(tree), sink))
"""


@contextlib.contextmanager
def our_server(b: str) -> Iterator[None]:
    """Run a packet_server in its own process in namespace b."""
    p = subprocess.Popen(
        [*nsexec(b), sys.executable, "-c", SERVER_CODE % OUR_PORT],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if "listening" in line:
                break
        yield
    finally:
        p.terminate()
        p.wait(10)


def run_ours(a: str, interval_s: float, length: int, seconds: float) -> dict[str, Any]:
    """Run one echo flow in namespace a (a client process, as the root node) and return its figures."""
    cmd = [*nsexec(a), sys.executable, "-m", "bench.packet", "--client-run", str(interval_s), str(length), str(seconds)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    r: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return r


def client_run(interval_s: float, length: int, seconds: float) -> dict[str, Any]:
    """Run our client flow in this process and return its figures (the --client-run mode)."""
    items: list[Item] = []
    wait = f"{round(interval_s * 1e9)}ns"
    sender = {"wait": [wait], "length": [length], "duration": f"{seconds}s", "echo": True}
    tree = {
        "packet_client": {"flow": "bench", "addr": f"{SERVER_ADDR}:{OUR_PORT}", "sender": [{"unresponsive": sender}]}
    }
    ok = asyncio.run(do(parse_run(tree), items.append))
    assert ok, [i for i in items if not isinstance(i, Batch)]
    batches = [i.batch for i in items if isinstance(i, Batch) and i.kind == "packet_io"]
    io = pa.Table.from_batches(batches, schema=SCHEMAS["packet_io"]).to_pandas()
    info = pd.DataFrame([vars(i) for i in items if isinstance(i, PacketInfo)])
    f = packet_flows(info, io).iloc[0]
    tx = io[~io.server & io.sent]
    err = (tx.t_ns - tx.sched_t_ns).to_numpy() / 1e3
    rtt = _rtt_us(io)
    t = np.sort(tx.t_ns.to_numpy())
    return {
        "err": stats(err),
        "rtt": stats(rtt)[:2],
        "loss_pct": float(f.loss_pct),
        "sent": int(f.sent),
        "rate": (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 else 0.0,
        "cpu_note": f"cpu {time.process_time():.1f}s",
    }


def _rtt_us(io: pd.DataFrame) -> np.ndarray:
    c = io[~io.server]
    m = c[c.sent][["seq", "t_ns"]].merge(c[~c.sent].drop_duplicates("seq")[["seq", "t_ns"]], on="seq")
    return (m.t_ns_y - m.t_ns_x).to_numpy() / 1e3


@contextlib.contextmanager
def irtt_server(b: str) -> Iterator[None]:
    """Run ``irtt server`` in namespace b with no minimum interval."""
    p = subprocess.Popen(
        [*nsexec(b), "irtt", "server", "-b", f"{SERVER_ADDR}:{IRTT_PORT}", "-i", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        p.terminate()
        p.wait(10)


def run_irtt(a: str, interval_s: float, length: int, seconds: float) -> dict[str, Any]:
    """Run ``irtt client`` from namespace a and return its figures."""
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "irtt.json"
        interval = f"{round(interval_s * 1e9)}ns"
        sh(
            *nsexec(a), "irtt", "client", "-i", interval, "-l", str(length), "-d", f"{seconds}s",
            "-Q", "-o", str(out), f"{SERVER_ADDR}:{IRTT_PORT}",
        )  # fmt: skip
        data = json.loads(out.read_text())
    rts = data["round_trips"]
    send = np.array([r["timestamps"]["client"]["send"]["monotonic"] for r in rts], dtype=np.int64)
    lost = np.array([r["lost"] != "false" for r in rts])
    rtt = np.array([r["delay"].get("rtt", 0) for r, lo in zip(rts, lost, strict=True) if not lo]) / 1e3
    step = round(interval_s * 1e9)
    err = ((send - send[0]) % step) / 1e3
    s = data["stats"]
    t = np.sort(send)
    return {
        "err": stats(err),
        "rtt": stats(rtt)[:2],
        "loss_pct": float(s["packet_loss_percent"]),
        "sent": int(s["packets_sent"]),
        "rate": (len(t) - 1) / ((t[-1] - t[0]) / 1e9) if len(t) > 1 else 0.0,
        "cpu_note": f"irtt timer_error mean {s['timer_error'].get('mean', 0) / 1e3:.0f} µs, misses {s['timer_misses']}",
    }


def fmt(name: str, r: dict[str, Any]) -> str:
    e, rtt = r["err"], r["rtt"]
    return (
        f"{name:6} send err µs median {e[0]:7.1f} p99 {e[1]:8.1f} max {e[2]:8.0f} | "
        f"RTT µs median {rtt[0]:6.0f} p99 {rtt[1]:7.0f} | loss {r['loss_pct']:.3f}% sent {r['sent']} "
        f"({r['rate']:.0f}/s) {r['cpu_note']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=0.001, help="seconds")
    ap.add_argument("--length", type=int, default=100)
    ap.add_argument("--rates", default="5000,10000,20000,30000,40000")
    ap.add_argument("--rate-seconds", type=float, default=3.0)
    ap.add_argument("--client-run", nargs=3, type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client_run:
        interval_s, length, seconds = args.client_run
        print(json.dumps(client_run(interval_s, int(length), seconds)))
        return
    print(f"# bench/packet.py  {time.strftime('%Y-%m-%d %H:%M')}  load {os.getloadavg()[0]:.2f}  cpus {os.cpu_count()}")
    with namespaces() as (a, b), our_server(b), irtt_server(b):
        pmed, pp99 = ping(a)
        print(f"ping   RTT µs median {pmed:.0f} p99 {pp99:.0f}")
        ours_all, irtt_all = [], []
        for k in range(args.pairs):
            ours = run_ours(a, args.interval, args.length, args.seconds)
            theirs = run_irtt(a, args.interval, args.length, args.seconds)
            ours_all.append(ours)
            irtt_all.append(theirs)
            print(f"pair {k + 1}")
            print("  " + fmt("ours", ours))
            print("  " + fmt("irtt", theirs))
        for name, rs in (("ours", ours_all), ("irtt", irtt_all)):

            def med(key: str, i: int, rs: list[dict[str, Any]] = rs) -> float:
                return float(np.median([r[key][i] for r in rs]))

            print(
                f"median of pairs {name}: send err µs median {med('err', 0):.1f} p99 {med('err', 1):.1f} "
                f"max {med('err', 2):.0f}; RTT µs median {med('rtt', 0):.0f} p99 {med('rtt', 1):.0f}; "
                f"loss {np.median([r['loss_pct'] for r in rs]):.3f}%"
            )
        print(f"RTT median ours - ping: {np.median([r['rtt'][0] for r in ours_all]) - pmed:.0f} µs")
        best = 0
        for rate in (int(r) for r in args.rates.split(",")):
            ours = run_ours(a, 1 / rate, args.length, args.rate_seconds)
            theirs = run_irtt(a, 1 / rate, args.length, args.rate_seconds)
            print(f"rate {rate}/s")
            print("  " + fmt("ours", ours))
            print("  " + fmt("irtt", theirs))
            if ours["loss_pct"] < 0.1 and ours["rate"] >= 0.99 * rate:
                best = rate
        print(f"highest rate with < 0.1% loss (ours): {best}/s")


if __name__ == "__main__":
    main()
