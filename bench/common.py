"""What the benchmarks share beyond tests/lab: the repository root, the environment, the timed command.

Run a benchmark from the repository root as a module (``python -m bench.X``),
so ``antler``, ``tests.lab`` and ``bench`` import without editing sys.path.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""ROOT is the repository the benchmarks run from (their working directory for child processes)."""

TIMED_CLI = """
import sys, time
t0 = time.monotonic()
import ray

spent = [time.monotonic() - t0]  # importing Ray is Ray's own cost too: the bare command pays it


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

code = main(sys.argv[1:])
print(f"RAY_SECONDS {spent[0]:.3f} WALL {time.monotonic() - t0:.3f}", file=sys.stderr)
sys.exit(code)
"""
"""TIMED_CLI runs the command (``python -c TIMED_CLI ARGS``) with its own ``import ray``, ray.init and ray.shutdown
timed in the same process; its last stderr line is ``RAY_SECONDS s WALL s`` (see :func:`timed_cli_seconds`)."""


def timed_cli_seconds(output: str) -> tuple[float, float]:
    """Return (Ray's own seconds, the command's wall seconds) from the output of a TIMED_CLI command.

    Raises ValueError when the output has no ``RAY_SECONDS`` line (the command died before its end).
    """
    if "RAY_SECONDS " not in output:
        raise ValueError(f"no RAY_SECONDS line in the command's output:\n{output[-3000:]}")
    words = output.rsplit("RAY_SECONDS ", 1)[1].split()
    return float(words[0]), float(words[2])


def env_without(*names: str) -> dict[str, str]:
    """Return this process's environment without the variables names (e.g. RAY_ADDRESS, so the tool embeds Ray)."""
    return {k: v for k, v in os.environ.items() if k not in names}
