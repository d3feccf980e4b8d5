"""The report pipelines: the during pipeline, applied to each item as a test runs, and the after pipeline.

The during pipeline (``test.during``, :class:`DuringSink`) stores each item
and prints or writes its log entries and errors as they arrive. The after
pipeline (``test.after``) runs its steps (antler.report.step) on the stored
data when a test ends, and again by ``antler-ray report``.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, TextIO

from antler.node.items import Error, FileData, Item, LogEntry
from antler.node.spec import parse
from antler.report.assets import result_root
from antler.report.spec import After, During
from antler.report.step import StepContext
from antler.results.tables import TestResult


class DuringSink:
    """Applies the during pipeline (``test.during``) to each item, beside the writer that stores it."""

    def __init__(
        self, spec: During, directory: Path, store: Callable[[Item], None], live: Callable[[Item], None]
    ) -> None:
        self.spec = spec
        self._store = store
        self._live = live if "-" in spec.emit_log else None
        self._files = [directory / name for name in spec.emit_log if name != "-"]

    def __call__(self, item: Item) -> None:
        """Store the item (unless a file the spec does not save) and emit it if it is a log entry or error."""
        if isinstance(item, FileData) and not self.spec.save_files:
            return
        self._store(item)
        if isinstance(item, (LogEntry, Error)):
            if self._live is not None:
                self._live(item)
            for path in self._files:
                with open(path, "a") as f:
                    f.write(str(item) + "\n")


class AfterRun(StepContext):
    """Runs one test's after pipeline, keeping the analysis for the charts that follow it.

    ``root`` is the result folder holding the test, where the chart pages
    find plotly.js; by default the folder above the test's stored path
    (see antler.report.assets.result_root).
    """

    def __init__(self, directory: Path, out: TextIO = sys.stdout, root: Path | None = None) -> None:
        test = TestResult(directory)
        super().__init__(
            test, root if root is not None else result_root(directory, str(test.meta.get("path") or "")), out
        )
        self.errors: list[str] = []
        self.written: list[Path] = []

    def run(self, after: After) -> list[str]:
        """Execute every step; a failing step is reported and the rest still run."""
        for report in after.steps():
            name, step = report.step()
            try:
                self.written += step.run(self)
            except Exception as e:
                message = f"report {name} failed: {type(e).__name__}: {e}"
                self.errors.append(message)
                print(f"{self.test.path.name}: {message}", file=self.out)
                if not isinstance(e, (ValueError, OSError, KeyError)):
                    traceback.print_exc(file=self.out)
        return self.errors


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
    return {name for report in after.steps() for name in report.step()[1].outputs()}


def report_output(rel: Path, outputs: set[str]) -> bool:
    """Tell whether a test folder's file (path relative to it) is one of outputs (names or patterns)."""
    return any(fnmatch(rel.as_posix(), pat) for pat in outputs)
