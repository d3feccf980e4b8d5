"""Start-up cost of Ray nodes, measured side by side in one run (issue 5).

Prints, per round:
- ``bare ray``: ``python -c "ray.init(); ray.shutdown()"``, the floor any Ray tool pays;
- ``hello``: ``antler-ray run +experiment=hello`` (no child nodes, so no Ray);
- ``hello on a node``: the same two runs on one child node (no namespace), so
  on an embedded Ray: its overhead beyond its own ``ray.init`` +
  ``ray.shutdown`` and beyond the bare-Ray command of the same round;
- ``three nodes``: a test on three nodes, each in its own new namespace, on an
  embedded Ray: command start to its first runner, and the whole command;
- the overhead of the three-node command beyond its own runs and its own
  ``import ray`` + ``ray.init`` + ``ray.shutdown`` (timed inside the same process: the
  machine's noise in Ray's start-up, 8 to 14 s here, cancels out), and beyond
  the bare-Ray command of the same round;
- peak memory of all its processes (RSS summed, and PSS, which counts shared
  pages once), sampled every 100 ms.

Usage: ``.venv/bin/python -m bench.startup [rounds]`` (default 2). Needs root.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from bench.common import TIMED_CLI, env_without, timed_cli_seconds

THREE_NODES = {
    "test": {
        "id": {"experiment": "three"},
        "run": {
            "serial": [
                {"child": {"node": {"id": "bn1", "netns": {"create": True}}, "system": {"command": "date +%s.%N"}}},
                {"child": {"node": {"id": "bn2", "netns": {"create": True}}, "sleep": "10ms"}},
                {"child": {"node": {"id": "bn3", "netns": {"create": True}}, "sleep": "10ms"}},
            ]
        },
    }
}
HELLO_NODE = {
    "test": {
        "id": {"experiment": "hello-node"},
        "run": {
            "child": {
                "node": {"id": "hello"},
                "serial": [{"system": {"command": "echo Hello World!"}}, {"sleep": "100ms"}],
            }
        },
    }
}
HELLO_SECONDS = 0.1
"""HELLO_SECONDS is hello's own work (a 100 ms sleep)."""
RUN_SECONDS = 0.02
"""RUN_SECONDS is the three-node test's own work (two 10 ms sleeps)."""


class PeakMemory:
    """Samples the summed RSS and PSS of a process tree until stopped."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss = 0
        self.pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            rss = pss = 0
            for p in procs:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += getattr(info, "pss", 0)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self._stop.wait(0.1)

    def stop(self) -> None:
        """End sampling."""
        self._stop.set()
        self._thread.join()


def timed(argv: list[str], cwd: Path, memory: bool = False) -> tuple[float, float, PeakMemory | None, str]:
    """Run a command; it returns its start (wall clock), duration, memory and output."""
    start_wall, start = time.time(), time.monotonic()
    proc = subprocess.Popen(
        argv, cwd=cwd, env=env_without("RAY_ADDRESS"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    mem = PeakMemory(proc.pid) if memory else None
    out, _ = proc.communicate()
    took = time.monotonic() - start
    if mem is not None:
        mem.stop()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out}")
    return start_wall, took, mem, out


def first_runner(results: Path, start_wall: float) -> float:
    """Return the time from command start to the first runner's `date` output."""
    log = (results / "latest" / "experiment-three" / "log.txt").read_text()
    for line in log.splitlines():
        if " bn1 system: " in line:
            return float(line.rsplit(" ", 1)[1]) - start_wall
    raise SystemExit(f"no output of the first runner in log.txt:\n{log}")


def main() -> None:
    """Run the rounds and print the figures."""
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cli = str(Path(sys.executable).with_name("antler-ray"))
    bare = [sys.executable, "-c", "import ray; ray.init(include_dashboard=False); ray.shutdown()"]
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        cwd = Path(tmp)
        (cwd / "experiment").mkdir()
        (cwd / "experiment" / "three.yaml").write_text("# @package _global_\n" + yaml.safe_dump(THREE_NODES))
        (cwd / "experiment" / "hello-node.yaml").write_text("# @package _global_\n" + yaml.safe_dump(HELLO_NODE))
        for r in range(rounds):
            _, t_bare, _, _ = timed(bare, cwd)
            _, t_hello, _, _ = timed([cli, "run", "-a", "+experiment=hello"], cwd)
            hello_node = [
                sys.executable,
                "-c",
                TIMED_CLI,
                "run",
                "-a",
                "--config-dir",
                str(cwd),
                "+experiment=hello-node",
            ]
            _, t_hn, _, out_hn = timed(hello_node, cwd)
            t_ray_hn, _ = timed_cli_seconds(out_hn)
            three = [sys.executable, "-c", TIMED_CLI, "run", "-a", "--config-dir", str(cwd), "+experiment=three"]
            w0, t_three, mem, out = timed(three, cwd, memory=True)
            assert mem is not None
            t_ray, _ = timed_cli_seconds(out)
            figures = {
                "bare ray.init+shutdown s": t_bare,
                "hello command s": t_hello,
                "hello on a node: command s": t_hn,
                "hello on a node: overhead beyond its own Ray s": t_hn - t_ray_hn - HELLO_SECONDS,
                "hello on a node: overhead beyond bare Ray s": t_hn - t_bare - HELLO_SECONDS,
                "three nodes: to first runner s": first_runner(cwd / "results", w0),
                "three nodes: command s": t_three,
                "three nodes: its ray.init+shutdown s": t_ray,
                "three nodes: overhead beyond its own Ray s": t_three - t_ray - RUN_SECONDS,
                "three nodes: overhead beyond bare Ray s": t_three - t_bare - RUN_SECONDS,
                "three nodes: peak RSS sum MiB": mem.rss / 2**20,
                "three nodes: peak PSS sum MiB": mem.pss / 2**20,
            }
            print(f"round {r + 1}: " + "; ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
            for k, v in figures.items():
                rows.setdefault(k, []).append(v)
    print("\nmedian of", rounds, "rounds")
    for k, vs in rows.items():
        print(f"  {k:46s} {statistics.median(vs):8.2f}")


if __name__ == "__main__":
    main()
