"""Running the after pipeline: reports made from a test's stored data, when it ends and by ``antler-ray report``."""

from __future__ import annotations

import re
import sys
import traceback
from dataclasses import replace
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from antler.config.parse import parse
from antler.report.analyze import Analysis, analyze
from antler.report.assets import result_root
from antler.report.spec import After
from antler.results.tables import TestResult


class AfterRun:
    """Runs one test's after pipeline, keeping the analysis for the charts that follow it.

    ``root`` is the result folder holding the test, where the chart pages
    find plotly.js; by default the folder above the test's stored path
    (see antler.report.assets.result_root).
    """

    def __init__(self, directory: Path, out: TextIO = sys.stdout, root: Path | None = None) -> None:
        self.test = TestResult(directory)
        self.root = root if root is not None else result_root(directory, str(self.test.meta.get("path") or ""))
        self.out = out
        self.analysis: Analysis | None = None
        self.errors: list[str] = []
        self.written: list[Path] = []

    def run(self, after: After) -> list[str]:
        """Execute every step; a failing step is reported and the rest still run."""
        for step in after.steps():
            name, cfg = step.step()
            try:
                getattr(self, f"_{name}")(cfg)
            except Exception as e:
                message = f"report {name} failed: {type(e).__name__}: {e}"
                self.errors.append(message)
                print(f"{self.test.path.name}: {message}", file=self.out)
                if not isinstance(e, (ValueError, OSError, KeyError)):
                    traceback.print_exc(file=self.out)
        return self.errors

    def _get_analysis(self) -> Analysis:
        if self.analysis is None:
            self.analysis = analyze(self.test)
        return self.analysis

    def _subtitle(self) -> str:
        return self.test.id_text

    def _title(self, title: str) -> str:
        """_title adds the rig to a chart's title: its delay emulator, and its hosts, must never be a surprise."""
        rig = self.test.meta.get("rig")
        if not rig:
            return title
        parts = [str(rig.get("kind", "rig"))]
        hosts, ifaces = rig.get("hosts"), rig.get("ifaces") or {}
        if hosts:
            # The testbed's path: host (interfaces) for left, mid and right.
            mid = f"{ifaces.get('mid_left', '?')}|{ifaces.get('mid_right', '?')}"
            parts[0] += (
                f" {hosts.get('left')} ({ifaces.get('left', '?')}) → {hosts.get('mid')} ({mid})"
                f" → {hosts.get('right')} ({ifaces.get('right', '?')})"
            )
        if rig.get("rate_bps"):
            rate = f"{rig['rate_bps'] / 1e6:g} Mbit/s"
            if changes_rate((self.test.meta.get("config") or {}).get("test")):
                # The rate built is only where the test started (issue 30).
                rate += " at the start, changed during the test"
            parts.append(f"{rate} {rig.get('qdisc', '')}".rstrip())
        if rig.get("rtt_ms"):
            parts.append(f"RTT {rig['rtt_ms']:g} ms")
        if rig.get("loss"):
            parts.append(f"loss {100 * rig['loss']:g}%")
        parts.append(f"delay by {rig.get('emulator', '?')}")
        return f"{title} ({', '.join(parts)})"

    def _analyze(self, cfg: Any) -> None:
        self.analysis = analyze(self.test, cfg.interval.seconds if cfg.interval is not None else None)
        path = self.test.path / cfg.to
        if path.exists():
            raise FileExistsError(f"{path} exists; reports never overwrite")
        pq.write_table(pa.Table.from_pandas(self.analysis.flows, preserve_index=False), path, compression="zstd")
        self.written.append(path)

    def _emit_log(self, cfg: Any) -> None:
        from antler.report.logs import emit_log

        self.written += emit_log(self.test, cfg.to)

    def _emit_sysinfo(self, cfg: Any) -> None:
        from antler.report.sysinfo import emit_sysinfo

        self.written += emit_sysinfo(self.test.path, cfg.to)

    def _charts_time_series(self, cfg: Any) -> None:
        from antler.report.charts import charts_time_series

        a = self._get_analysis()
        spec = replace(cfg, title=self._title(cfg.title))
        # None: nothing to draw (no flows, or no samples), so no empty chart.
        if charts_time_series(a, spec, self.test.path, self._subtitle(), self.root) is not None:
            self.written += [self.test.path / n for n in cfg.to]

    def _charts_fct(self, cfg: Any) -> None:
        from antler.report.charts import charts_fct

        a = self._get_analysis()
        spec = replace(cfg, title=self._title(cfg.title))
        if charts_fct(a, spec, self.test.path, self._subtitle(), self.root) is not None:
            self.written += [self.test.path / n for n in cfg.to]

    def _encode(self, cfg: Any) -> None:
        from antler.report.encode import encode

        self.written += encode(self.test.path, cfg.file, cfg.extension, cfg.level, cfg.destructive)


_TC_RATE = re.compile(r"\btc\s+(class|qdisc)\s+(change|replace)\b.*\brate\b")


def changes_rate(node: Any) -> bool:
    """Tell whether a test config (``test`` of meta.json) changes a link's rate as it runs.

    A ``system`` command that changes or replaces a tc class or qdisc with a
    ``rate`` (antler's ratedrop) does; the rig's rate is then where the test
    started, not what it ran at throughout.
    """
    if isinstance(node, dict):
        system = node.get("system")
        if isinstance(system, dict) and _TC_RATE.search(str(system.get("command", ""))):
            return True
        return any(changes_rate(v) for k, v in node.items() if k != "after")
    if isinstance(node, list):
        return any(changes_rate(v) for v in node)
    return False


def run_after(directory: Path, after: After, out: TextIO = sys.stdout, root: Path | None = None) -> list[str]:
    """Run the after pipeline on a stored test; returns the error messages of failed steps.

    ``root`` is the result folder holding the test (default: found from the
    test's stored path, see AfterRun).
    """
    return AfterRun(directory, out, root).run(after)


def after_of(meta: dict[str, Any]) -> After:
    """Return the after pipeline stored in a test's meta.json config (defaults if none)."""
    test = (meta.get("config") or {}).get("test") or {}
    return parse(After, test.get("after"), "test.after")


def report_outputs(after: After) -> set[str]:
    """List the file names (and name patterns) the after pipeline writes."""
    names: set[str] = set()
    for step in after.steps():
        name, cfg = step.step()
        if name == "analyze":
            names.add(cfg.to)
        elif name in ("charts_time_series", "charts_fct", "emit_log"):
            names.update(n for n in cfg.to if n != "-")
        elif name == "emit_sysinfo":
            names.add(cfg.to.replace("{node}", "*"))
    return names


def report_output(rel: Path, outputs: set[str]) -> bool:
    """Tell whether a test folder's file (path relative to it) is one of outputs (names or patterns)."""
    return any(fnmatch(rel.as_posix(), pat) for pat in outputs)
