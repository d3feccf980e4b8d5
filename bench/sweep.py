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

Usage: ``.venv/bin/python -m bench.sweep [rounds]`` (default 1). Needs root.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from bench.common import TIMED_CLI, env_without, timed_cli_seconds
from tests.lab.ray import free_ports, ray_start, ray_stop, wait_for_hosts

TESTS = ["cca=cubic,reno", "rig.rtt=10ms,20ms,30ms,40ms"]
TEST_S = 5.0
LEAD, DURATION = "1s", "4s"
TOKEN_AUTH = {"RAY_AUTH_MODE": "token"}
"""TOKEN_AUTH turns on token auth in the raylets, as ``ray start`` does by default."""


def sweep(address: str, hosts: str, root: Path) -> tuple[float, float]:
    """Run the eight tests on hosts into root; it returns (wall s, Ray's own s)."""
    argv = [sys.executable, "-c", TIMED_CLI, "run", "-a", "-m", "+experiment=cubic", *TESTS, f"lead={LEAD}",
            f"duration={DURATION}", f"rig.netns_prefix=bsw{os.getpid() % 10000}-", f"sweep.hosts={hosts}",
            f"ray.address={address}", f"results.root_dir={root}"]  # fmt: skip
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env_without("RAY_AUTH_MODE", "RAY_ADDRESS"), timeout=900
    )
    if done.returncode != 0:
        raise SystemExit(f"sweep on {hosts} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    ray_s, wall_s = timed_cli_seconds(done.stderr)
    return wall_s, ray_s


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
    free = free_ports(14)
    port, client_port = next(free), next(free)
    temp = Path("/tmp") / f"bs{os.getpid()}"
    procs = [
        ray_start(
            [
                "--head",
                "--port",
                str(port),
                "--temp-dir",
                str(temp),
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(client_port),
                "--resources",
                json.dumps({"host:a": 1}),
            ],
            work / "head.log",
            free,
            TOKEN_AUTH,
        )
    ]
    address = f"127.0.0.1:{port}"
    try:
        procs.append(
            ray_start(
                ["--address", address, "--resources", json.dumps({"host:b": 1})], work / "b.log", free, TOKEN_AUTH
            )
        )
        try:
            wait_for_hosts(address, {"a", "b"}, work, TOKEN_AUTH)
        except AssertionError as e:
            raise SystemExit(f"the cluster did not come up: {e}") from e
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
                ray_stop(p)
        subprocess.run(["rm", "-rf", str(temp), str(work)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
