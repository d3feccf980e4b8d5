"""Benchmark: local and SSH nodes (issue 12): start-up, and the cost of streaming samples over the wire.

Part 1, start-up: the time from command start (``antler-ray run``) to the
first runner's output (a ``date +%s.%N`` on the first node), for a test on

- no node (``hello``-like, the command's own floor),
- 1 local node in a namespace it creates,
- 8 local nodes, each in a namespace it creates,
- 1 SSH node through a real sshd on 127.0.0.1 (tests/lab/sshd.py), with the node
  code uploaded (a fresh cache) and with it already on the host, on each
  host Python of ``--ssh-python``: ``venv`` (this one) and ``bare`` (a
  package-free Python 3.9 started with ``-I``, as a fresh host has;
  tests/lab/pythons.py),

each run ``--rounds`` times, interleaved; medians.

Part 2, streaming: one TCP upload over a veth between two namespaces with
``sample_io_interval: 0`` (a stream_io sample per read and write, so hundreds
of thousands of samples per second) between two local nodes (samples cross
the stdio wire as Arrow batches) and between two Ray nodes (drained from the
actors), side by side, alternating who goes first, with the runner's default
read/write size and with 4 KB ones (ten times the samples). It prints each
run's receiver goodput, samples per second and the CPU time its two node
processes spent per GB moved, and the median ratios local/Ray: what moving the
samples over the wire costs, against Ray.

Usage (root, from the repository root): ``.venv/bin/python -m bench.launch``
(``--rounds 3 --pairs 3 --seconds 5 --part both --ssh-python venv,bare``). Only 127.0.0.1 and 10.77.14.0/24
inside the benchmark's own namespaces are used; everything is deleted after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from antler.config.test import parse_run
from antler.node import Batch, Duration, Item, Node, do
from antler.node.launch import Launchers
from antler.node.launch.ssh.upload import CACHE_ENV
from antler.node.run import NodeHandle
from tests.lab.netns import Netns, netns_factory, netns_list, unique_name
from tests.lab.pythons import find_bare_python
from tests.lab.sshd import sshd

CLIENT_IP, SERVER_IP = "10.77.14.1", "10.77.14.2"


def experiment(name: str, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a test whose first node prints the time, then every other node sleeps 10 ms."""
    if not nodes:
        run: dict[str, Any] = {"system": {"command": "date +%s.%N"}}
    else:
        first, *rest = nodes
        run = {
            "serial": [
                {"child": {"node": first, "system": {"command": "date +%s.%N"}}},
                *({"child": {"node": n, "sleep": "10ms"}} for n in rest),
            ]
        }
    return {"test": {"id": {"experiment": name}, "run": run}}


def first_runner(folder: Path, name: str, start_wall: float) -> float:
    """Return the time from command start to the first runner's `date` output, from log.txt."""
    log = (folder / "results" / "latest" / f"experiment-{name}" / "log.txt").read_text()
    for line in log.splitlines():
        if " system: " in line:
            return float(line.rsplit(" ", 1)[1]) - start_wall
    raise SystemExit(f"no output of the first runner in log.txt:\n{log}")


def startup(rounds: int, ssh_pythons: tuple[str, ...] = ("venv",)) -> None:
    """Run part 1 and print its figures; ssh_pythons are the SSH host's interpreters (``venv``, ``bare``)."""
    commands = {"venv": sys.executable, "bare": find_bare_python()}
    for which in ssh_pythons:
        if not commands.get(which):
            raise SystemExit(f"no {which} python for the SSH node here")
    cli = str(Path(sys.executable).with_name("antler-ray"))
    with tempfile.TemporaryDirectory(prefix="bench-launch-") as tmp:
        folder = Path(tmp)
        with sshd(folder / "sshd") as server:
            env = {**os.environ, "HOME": str(server.home), CACHE_ENV: str(folder / "cache")}
            env.pop("RAY_ADDRESS", None)
            tests: dict[str, list[dict[str, Any]]] = {
                "none": [],
                "local1": [
                    {"id": "l0", "launcher": {"local": {}}, "netns": {"name": unique_name("bl"), "create": True}}
                ],
                "local8": [
                    {"id": f"l{k}", "launcher": {"local": {}}, "netns": {"name": unique_name("bl"), "create": True}}
                    for k in range(8)
                ],
            }
            for which in ssh_pythons:
                ssh = {"launcher": {"ssh": {"destination": server.destination, "python": commands[which]}}}
                suffix = "" if which == "venv" else f"-{which}"
                tests[f"ssh1-upload{suffix}"] = [{"id": "s0", **ssh}]
                tests[f"ssh1-cached{suffix}"] = [{"id": "s0", **ssh}]
            (folder / "experiment").mkdir()
            for name, nodes in tests.items():
                exp = experiment(name, nodes)
                (folder / "experiment" / f"{name}.yaml").write_text("# @package _global_\n" + yaml.safe_dump(exp))
            rows: dict[str, list[float]] = {}
            for r in range(rounds):
                figures = {}
                for name in tests:
                    if name.startswith("ssh1-upload"):
                        shutil.rmtree(folder / "cache", ignore_errors=True)
                    argv = [cli, "run", "-a", "--config-dir", str(folder), f"+experiment={name}"]
                    start_wall, start = time.time(), time.monotonic()
                    done = subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True)
                    took = time.monotonic() - start
                    if done.returncode != 0:
                        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout}{done.stderr}")
                    figures[f"{name}: to first runner s"] = first_runner(folder, name, start_wall)
                    figures[f"{name}: command s"] = took
                print(f"round {r + 1}: " + "; ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
                for k, v in figures.items():
                    rows.setdefault(k, []).append(v)
            shutil.rmtree(folder / "cache", ignore_errors=True)
    print(f"\nstart-up, median of {rounds} rounds")
    for k, vs in rows.items():
        print(f"  {k:36s} {statistics.median(vs):7.2f}")


@dataclass
class Flow:
    """One run's receiver goodput, samples per second, and the CPU its two node processes spent per GB."""

    goodput_mbps: float
    samples_per_s: float
    node_cpu_s_per_gb: float


def flow(launchers: Launchers, launcher: dict[str, Any], a: str, b: str, seconds: float, buf_len: int) -> Flow:
    """Run one upload with a sample per read and write, and measures it.

    The node processes' CPU time (user + system, both ends, from launch to
    close; for a Ray node its actor's worker) is read just before each closes,
    so it holds the sampling and the shipping of the samples, not only the
    flow; on a busy machine it is steadier than goodput.
    """

    def node(which: str, ns: str) -> dict[str, Any]:
        return {"id": which, "netns": {"name": ns}, "launcher": launcher}

    transfer: dict[str, Any] = {"flow": "bench", "duration": f"{seconds}s", "sample_io_interval": "0"}
    if buf_len:
        transfer["buf_len"] = buf_len
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
    cpu: list[float] = []

    async def launch(node_spec: Node, sink: Any, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        handle = await launchers(node_spec, sink, nodes)
        proc = psutil.Process(handle.facts["pid"])  # type: ignore[attr-defined]
        close = handle.close

        async def timed_close() -> None:
            t = proc.cpu_times()
            cpu.append(t.user + t.system)
            await close()

        handle.close = timed_close  # type: ignore[method-assign]
        return handle

    items: list[Item] = []
    ok = asyncio.run(do(run, items.append, launch=launch, timeout=Duration.parse(f"{seconds + 60}s")))
    if not ok:
        raise RuntimeError(f"the run failed: {[i for i in items if not isinstance(i, Batch)][-5:]}")
    launchers.take_facts()
    samples, last_t, last_total = 0, 0, 0
    for item in items:
        if isinstance(item, Batch) and item.kind == "stream_io":
            samples += item.batch.num_rows
            cols = item.batch.to_pydict()
            for srv, sent, t, total in zip(
                cols["server"], cols["sent"], cols["t_ns"], cols["total_bytes"], strict=True
            ):
                if srv and not sent and total >= last_total:
                    last_t, last_total = t, total
    return Flow(last_total * 8 / (last_t / 1e9) / 1e6, samples / seconds, sum(cpu) / (last_total / 1e9))


def streaming(pairs: int, seconds: float, buf_lens: list[int]) -> None:
    """Run part 2 and print its figures, for each read/write size (0: the runner's default)."""
    launchers = Launchers()
    kinds: dict[str, dict[str, Any]] = {"local": {"local": {}}, "ray": {"ray": {}}}
    try:
        with netns_factory() as f:
            pair: list[Netns] = []

            def path() -> tuple[str, str]:
                # On a machine shared with other test runs, a leak check elsewhere
                # may delete namespaces it did not make: the next run gets a new pair.
                if not pair or not {pair[0].name, pair[1].name} <= netns_list():
                    f.close()
                    pair[:] = [f.new("bfa"), f.new("bfb")]
                    f.link(pair[0], f"{CLIENT_IP}/24", pair[1], f"{SERVER_IP}/24")
                return pair[0].name, pair[1].name

            launchers.start([Node(id="warm-up")])  # Ray starts once, before the first pair
            for buf_len in buf_lens:
                size = f"buf_len {buf_len}" if buf_len else "default buf_len"
                print(f"\none upload over veth, sample_io_interval 0, {size}, {seconds:g}s per run, {pairs} pairs")
                print(
                    f"{'pair':>4} {'local Mb/s':>11} {'samples/s':>10} {'CPU s/GB':>9}"
                    f" {'ray Mb/s':>9} {'samples/s':>10} {'CPU s/GB':>9} {'goodput':>8} {'CPU/GB':>7}"
                )
                ratios, cpu_ratios = [], []
                for k in range(pairs):
                    order = ["local", "ray"] if k % 2 == 0 else ["ray", "local"]
                    got = {name: flow(launchers, kinds[name], *path(), seconds, buf_len) for name in order}
                    loc, ray = got["local"], got["ray"]
                    ratios.append(loc.goodput_mbps / ray.goodput_mbps)
                    cpu_ratios.append(loc.node_cpu_s_per_gb / ray.node_cpu_s_per_gb)
                    print(
                        f"{k + 1:>4} {loc.goodput_mbps:>11.0f} {loc.samples_per_s:>10.0f} {loc.node_cpu_s_per_gb:>9.3f}"
                        f" {ray.goodput_mbps:>9.0f} {ray.samples_per_s:>10.0f} {ray.node_cpu_s_per_gb:>9.3f}"
                        f" {ratios[-1]:>8.3f} {cpu_ratios[-1]:>7.3f}",
                        flush=True,
                    )
                print(
                    f"median ratios local/ray ({size}): goodput {statistics.median(ratios):.3f}, "
                    f"node CPU per GB {statistics.median(cpu_ratios):.3f}"
                )
    finally:
        launchers.close()


def main(argv: list[str] | None = None) -> int:
    """Run both parts."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--buf-len", default="0,4096", help="read/write sizes of the flows, comma-separated (0: default)")
    ap.add_argument("--part", choices=("startup", "streaming", "both"), default="both")
    ap.add_argument("--ssh-python", default="venv,bare", help="the SSH node's pythons, comma-separated: venv, bare")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/launch.py needs root (namespaces, sshd)", file=sys.stderr)
        return 2
    if args.part in ("startup", "both"):
        startup(args.rounds, tuple(args.ssh_python.split(",")))
    if args.part in ("streaming", "both"):
        streaming(args.pairs, args.seconds, [int(b) for b in args.buf_len.split(",")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
