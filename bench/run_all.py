"""Run every benchmark in turn (`make bench`, or `python -m bench.run_all` from the repository root); each prints its figures.

They measure side by side in one run, so their ratios hold on a noisy
machine; still, run them on an otherwise idle one. Record what they print in
bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys

from bench.common import ROOT

BENCHES = ("stream", "packet", "delay", "startup", "launch", "analyze", "sweep", "bottleneck")


def main() -> int:
    """Run each benchmark script and return non-zero if any failed."""
    failed = []
    for name in BENCHES:
        print(f"== bench.{name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], check=False, cwd=ROOT).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
