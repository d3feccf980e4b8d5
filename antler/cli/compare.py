"""``antler-ray compare OLD NEW``: two result folders' tests side by side, with a verdict per metric."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from antler import exitcode
from antler.cli.registry import command
from antler.results.store import ResultsError


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", help="the result folder to compare against (or a test folder)")
    p.add_argument("new", help="the result folder compared (or a test folder)")
    p.add_argument("--html", metavar="FILE", help="also write the comparison as a page to FILE")
    p.add_argument(
        "--fail-on",
        choices=["worse"],
        help="exit 1 when any metric got worse beyond its noise (for CI)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.05,
        help="without repetitions, the relative change that is beyond noise (default 0.05, 5 %%)",
    )


@command("compare", "compare two result folders' tests by ID: values, change and verdict per metric", _compare_args)
def cmd_compare(a: argparse.Namespace) -> int:
    """Print the comparison of two result folders; exit 1 with --fail-on worse when a metric got worse."""
    from antler.report.compare_page import HEADINGS, compare_html, comparison_rows
    from antler.results.compare import compare

    for path in (a.old, a.new):
        if not Path(path).exists():
            raise ResultsError(f"no results at {path}")
    if a.tolerance < 0:
        print(f"antler-ray: --tolerance {a.tolerance} must be >= 0", file=sys.stderr)
        return exitcode.CONFIG
    table = compare(a.old, a.new, a.tolerance)
    rows = comparison_rows(table)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADINGS)] if rows else []
    if not rows:
        print("nothing to compare: no test of one folder has metrics")
    else:
        for r in [HEADINGS, *rows]:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
        counts = table["verdict"].value_counts().to_dict()
        print(", ".join(f"{c} {v}" for v, c in sorted(counts.items())))
    if a.html:
        Path(a.html).write_text(compare_html(table, str(a.old), str(a.new)))
        print(f"comparison page in {a.html}")
    worse = table[table["verdict"] == "worse"] if len(table) else table
    if a.fail_on == "worse" and len(worse):
        return exitcode.FAILED
    return exitcode.OK
