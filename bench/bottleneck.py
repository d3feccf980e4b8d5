"""Benchmark of the userspace bottleneck against the kernel's htb + pfifo, side by side in one run.

For each rate (50, 100 and 200 Mbit/s by default) it runs ``+experiment=cubic``
through the kernel's bottleneck (htb + pfifo) and through the userspace one
(pfifo and fq_codel), each with the TUN delay link (so the path differs only
in where the queue is), and reports per rate and bottleneck:

- the tcp flow's goodput and its ratio to the kernel's;
- the forward link's release lateness (median and p99, as the upper edge of
  the bucket of the link's histogram they fall in, µs);
- the CPU the delay link process used (user + system, percent of one core
  over its life), from its last log line.

It ends with the highest rate at which the userspace pfifo's goodput is
within 3 % of the kernel's. Run as root from the repository root:
``.venv/bin/python -m bench.bottleneck [--seconds 30] [--rates 50,100,200]``.
The machine is shared: read ratios between rows of one run.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from antler.results import TestResult, load
from bench.common import ROOT

LATE = re.compile(r"link d-fwd:.*?release lateness .*?\[(.*?)\]")
CPU = re.compile(r"delay: cpu ([\d.]+)s user ([\d.]+)s system over ([\d.]+)s")
PATHS = [("kernel pfifo", ["rig.bottleneck=kernel", "rig.emulator=tun"], "pfifo")]
PATHS += [(f"userspace {q}", ["rig.bottleneck=userspace"], q) for q in ("pfifo", "fq_codel")]


def lateness_us(log: str) -> tuple[float, float]:
    """Return the forward link's median and p99 release lateness (µs): the upper edges of their histogram buckets."""
    m = LATE.search(log)
    if m is None:
        return float("nan"), float("nan")
    buckets = [
        (float("inf") if e == "inf" else float(e), int(n)) for e, n in re.findall(r"<(\w+?)us:(\d+)", m.group(1))
    ]
    total = sum(n for _, n in buckets)
    out = []
    for q in (0.5, 0.99):
        seen = 0
        for edge, n in buckets:
            seen += n
            if seen >= q * total:
                out.append(edge)
                break
    return out[0], out[1]


def cpu_pct(log: str) -> float:
    """Return the delay link's CPU use (user + system) as a percentage of one core over its life, from its log."""
    m = CPU.search(log)
    return float("nan") if m is None else 100 * (float(m.group(1)) + float(m.group(2))) / float(m.group(3))


def run(where: Path, seconds: int, rates: list[int], extra: list[str], qdisc: str) -> list[TestResult]:
    """Run the cubic experiment at each rate through one bottleneck; return its tests."""
    args = ["-m", "+experiment=cubic", f"duration={seconds}s", f"rig.qdisc={qdisc}", *extra]
    args.append("rig.rate=" + ",".join(f"{r}mbit" for r in rates))
    cmd = [
        sys.executable,
        "-c",
        "import sys; from antler.cli import main; sys.exit(main(sys.argv[1:]))",
        "run",
        "-a",
        *args,
    ]
    subprocess.run(cmd, cwd=where, check=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    return list(load(where / "results" / "latest").values())


def main() -> int:
    """Run the benchmark and print its table (Markdown)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--rates", default="50,100,200", help="Mbit/s, comma-separated")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    rows = []
    for name, extra, qdisc in PATHS:
        with tempfile.TemporaryDirectory(prefix="bench-bottleneck-") as d:
            for t in run(Path(d), args.seconds, rates, extra, qdisc):
                flows = pd.read_parquet(t.path / "flows.parquet")
                log = (t.path / "log.txt").read_text()
                median, p99 = lateness_us(log)
                rows.append(
                    {
                        "rate_mbps": t.meta["rig"]["rate_bps"] / 1e6,
                        "bottleneck": name,
                        "goodput_mbps": float(flows[flows["flow"] == "tcp"]["goodput_mbps"].iloc[0]),
                        "lateness_us_median": median,
                        "lateness_us_p99": p99,
                        "link_cpu_pct": cpu_pct(log),
                    }
                )
    table = pd.DataFrame(rows).sort_values(["rate_mbps", "bottleneck"])
    kernel = table[table["bottleneck"] == "kernel pfifo"].set_index("rate_mbps")["goodput_mbps"]
    table["ratio"] = table["goodput_mbps"] / table["rate_mbps"].map(kernel)
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for rec in table.itertuples(index=False):
        print("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in rec) + " |")
    up = table[(table["bottleneck"] == "userspace pfifo") & ((table["ratio"] - 1).abs() <= 0.03)]
    print(f"\nhighest rate with the userspace pfifo's goodput within 3 % of the kernel's: "
          f"{up['rate_mbps'].max() if len(up) else 'none'} Mbit/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
