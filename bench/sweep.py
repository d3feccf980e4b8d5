"""A sweep on one host against the same sweep on two, on one Ray cluster (issue 13).

Starts a Ray cluster of two raylets on this machine (hosts ``a`` and ``b``,
token auth on, as ``ray start`` does), then runs the same eight-test sweep of
``+experiment=cubic`` (``cca`` x ``rig.rtt``, 5 s each: ``lead=1s
duration=4s``) with ``sweep.hosts=[a]`` and with ``sweep.hosts=all``, rounds
alternating. Prints for each: the wall time of the command beyond its own
``import ray`` + ``ray.init`` + ``ray.shutdown`` (timed inside the same
process, as bench/startup.py does), the ratio two hosts / one host, the
per-test overhead (wall time per test on a host minus the test's 5 s), the
goodput range of the cubic/reno flows (the science must hold while two tests
share the 2 cores), and where a test's time goes on one host, from its
meta.json and log (medians over the eight tests):

- launch: the test starts -> its first set-up command logs (node actors);
- set-up: -> the packet server listens (the rig's commands, the servers);
- flows: -> the echo client's summary (the 5 s of flows and their close);
- teardown: -> the delay link's last words at cleanup (rig tear-down commands);
- close: -> the test's end (cancelers, node close, Parquet files written);
- gap: -> the next test on that host starts.

Usage: ``.venv/bin/python bench/sweep.py [rounds]`` (default 1). Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import psutil

TESTS = ["cca=cubic,reno", "rig.rtt=10ms,20ms,30ms,40ms"]
TEST_S = 5.0
LEAD, DURATION = "1s", "4s"
TIMED_CLI = """
import sys, time
t0 = time.monotonic()
import ray

spent = [time.monotonic() - t0]


def timed(f):
    def call(*args, **kwargs):
        t = time.monotonic()
        try:
            return f(*args, **kwargs)
        finally:
            spent[0] += time.monotonic() - t

    return call


ray.init, ray.shutdown = timed(ray.init), timed(ray.shutdown)
from antler.cli import main

t1 = time.monotonic()
code = main(sys.argv[1:])
print(f"RAY_SECONDS {spent[0]:.3f} WALL {time.monotonic() - t0:.3f}", file=sys.stderr)
sys.exit(code)
"""


def free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def ray_start(args: list[str], log: Path, ports: list[int]) -> subprocess.Popen[bytes]:
    names = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
             "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")  # fmt: skip
    port_args = [a for name, p in zip(names, ports, strict=True) for a in (name, str(p))]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    ray_bin = str(Path(sys.executable).with_name("ray"))
    return subprocess.Popen(
        [ray_bin, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats",
         "--object-store-memory", str(100 * 2**20), "--min-worker-port", "0", "--max-worker-port", "0",
         *port_args, *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    except psutil.Error:
        tree = [proc.pid]
    for pid in reversed(tree):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    proc.wait(10)


def wait_for_hosts(address: str) -> None:
    code = (
        "import ray, time\n"
        f"ray.init(address={address!r}, logging_level='ERROR')\n"
        "from antler.node.launch.ray.cluster import cluster_hosts\n"
        "end = time.time() + 90\n"
        "while sorted(cluster_hosts()) != ['a', 'b'] and time.time() < end: time.sleep(0.5)\n"
        "print(sorted(cluster_hosts()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "token"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=150)
    if out.stdout.strip() != "['a', 'b']":
        raise SystemExit(f"the cluster did not come up: {out.stderr[-2000:]}")


def sweep(address: str, hosts: str, root: Path) -> tuple[float, float]:
    """Run the eight tests on hosts into root; it returns (wall s, Ray's own s)."""
    argv = [sys.executable, "-c", TIMED_CLI, "run", "-a", "-m", "+experiment=cubic", *TESTS, f"lead={LEAD}",
            f"duration={DURATION}", f"rig.netns_prefix=bsw{os.getpid() % 10000}-", f"sweep.hosts={hosts}",
            f"ray.address={address}", f"results.root_dir={root}"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"sweep on {hosts} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    words = done.stderr.split("RAY_SECONDS")[-1].split()
    return float(words[2]), float(words[0])


def phases(root: Path) -> tuple[dict[str, float], list[float]]:
    """Return the median seconds of each phase of a test, and every flow's goodput."""
    from antler.results import load

    res = load(root / "latest")
    rows: list[dict[str, float]] = []
    goodputs: list[float] = []
    by_host: dict[str, list[tuple[float, float]]] = {}
    for test in res.values():
        log = test["log"]
        t = {k: pd.Timestamp(v).timestamp() for k, v in (("start", test.meta["started"]), ("end", test.meta["ended"]))}
        times = log["time"].map(lambda x: x.timestamp())
        text = log["text"]
        listen = times[text.str.contains("listening on") & (log["tag"] == "packet_server")].min()
        summary = times[text.str.contains("echo requests answered")].min()
        holding = times[text.str.startswith("delay: holding")].max()
        rows.append(
            {
                "launch": times.min() - t["start"],
                "set-up": listen - times.min(),
                "flows": summary - listen,
                "teardown": holding - summary,
                "close": t["end"] - holding,
            }
        )
        by_host.setdefault(test.meta["placement"]["host"], []).append((t["start"], t["end"]))
        flows = pd.read_parquet(test.path / "flows.parquet")
        goodputs += flows[flows["kind"] == "stream"]["goodput_mbps"].tolist()
    gaps = [b[0] - a[1] for runs in by_host.values() for a, b in zip(sorted(runs), sorted(runs)[1:], strict=False)]
    out = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out["gap"] = statistics.median(gaps) if gaps else 0.0
    return out, goodputs


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    n = 2 * 4
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    ports = free_ports(14)
    temp = Path("/tmp") / f"bs{os.getpid()}"
    procs = [
        ray_start(
            [
                "--head",
                "--port",
                str(ports[0]),
                "--temp-dir",
                str(temp),
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(ports[1]),
                "--resources",
                json.dumps({"host:a": 1}),
            ],
            work / "head.log",
            ports[2:8],
        )
    ]
    address = f"127.0.0.1:{ports[0]}"
    try:
        procs.append(
            ray_start(["--address", address, "--resources", json.dumps({"host:b": 1})], work / "b.log", ports[8:14])
        )
        wait_for_hosts(address)
        print(f"cluster of two raylets at {address}; {n} tests of {TEST_S:g}s (lead {LEAD}, duration {DURATION})")
        print(
            f"{'round':>5} {'hosts':>6} {'wall s':>7} {'ray s':>6} {'per test s':>10} {'overhead s':>10} goodput Mb/s"
        )
        results: dict[str, list[float]] = {"[a]": [], "all": []}
        broken: list[dict[str, float]] = []
        for r in range(1, rounds + 1):
            for hosts in ("[a]", "all") if r % 2 else ("all", "[a]"):
                root = work / f"r{r}-{hosts.strip('[]')}"
                wall, ray_s = sweep(address, hosts, root)
                spent = wall - ray_s
                results[hosts].append(spent)
                per_host = 1 if hosts == "[a]" else 2
                per_test = spent * per_host / n
                ph, goodputs = phases(root)
                if hosts == "[a]":
                    broken.append(ph)
                print(
                    f"{r:>5} {hosts:>6} {spent:>7.1f} {ray_s:>6.1f} {per_test:>10.2f} {per_test - TEST_S:>10.2f} "
                    f"{min(goodputs):.1f}-{max(goodputs):.1f}"
                )
        one, two = statistics.median(results["[a]"]), statistics.median(results["all"])
        print(f"two hosts / one host: {two:.1f} / {one:.1f} s = {two / one:.2f} (target <= 0.6)")
        print(f"per-test overhead on one host: {one / n - TEST_S:.2f} s (target <= 1.5)")
        print("where a test's time goes on one host (median s): " + ", ".join(
            f"{k} {statistics.median(b[k] for b in broken):.2f}" for k in broken[0]))  # fmt: skip
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                stop(p)
        subprocess.run(["rm", "-rf", str(temp), str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
