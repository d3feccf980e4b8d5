"""Runs every benchmark in turn (`make bench`); each prints its own figures.

They measure side by side in one run, so their ratios hold on a noisy
machine; still, run them on an otherwise idle one. Record what they print in
bench/README.md.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ("stream.py", "packet.py", "delay.py", "startup.py", "launch.py", "analyze.py", "sweep.py")


def main() -> int:
    """Run each benchmark script and return non-zero if any failed."""
    here = Path(__file__).parent
    failed = []
    for name in BENCHES:
        print(f"== bench/{name}", flush=True)
        if subprocess.run([sys.executable, str(here / name)], check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
