"""What the comparison page shows of each test, read from its folder, and how the page orders and groups tests.

A :class:`TestSummary` holds a test's flows table (flows.parquet, else
analysed afresh), its status, its first error and the charts its reports
made. The ID keys whose values differ between tests (:func:`varying_keys`)
say what was swept: the page groups tests by one (:func:`group_key`) and
charts against another (:func:`x_key`), swept values in numeric order
(:func:`sort_key`). The page itself is :mod:`antler.report.index`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from antler.node.spec import ConfigError
from antler.report.spec import IndexSpec
from antler.results.ids import id_sort_key
from antler.results.tables import Results, TestResult
from antler.testid import varying_id_keys

_BROWSER_IMAGES = (".png", ".svg")


def varying_keys(results: Results) -> list[str]:
    """List the test ID keys whose values differ between tests, in ID order."""
    return varying_id_keys(t.id for t in results.values())


def sort_key(value: str) -> tuple[int, float, str]:
    """Order swept values by magnitude (10ms, 40ms, 1s; 100 before 1000), else as text after them."""
    return id_sort_key(value)


def flows_of(test: TestResult) -> pd.DataFrame:
    """Return a test's flows.parquet, or analyses the test when there is none.

    Raises what analysis raises for tables it cannot read (see antler.report.analyze.analyze).
    """
    path = test.path / "flows.parquet"
    if path.exists():
        return pd.read_parquet(path)
    from antler.report.analyze import analyze

    return analyze(test).flows


REPETITION_KEYS = frozenset({"rep"})
"""REPETITION_KEYS are ID keys that number repetitions of one combination: never a chart's x nor a group."""


def check_index_keys(spec: IndexSpec, keys: list[str], path: str = "index") -> None:
    """Raise ConfigError when ``index.x`` or ``index.group_by`` names no varying ID key, or a repetition key.

    ``keys`` are the results' varying ID keys (:func:`varying_keys`). The
    charts draw the metric against ``x`` and a line per ``group_by`` value;
    a key that does not vary gives one point, and with repetitions the
    charts take each combination's mean and interval across them, so the
    repetition key is no axis (issue 30: ``index.x=rep`` ended in a
    KeyError traceback).
    """
    choices = [k for k in keys if k not in REPETITION_KEYS]
    for name, value in (("x", spec.x), ("group_by", spec.group_by)):
        if not value:
            continue
        if value in REPETITION_KEYS and value in keys:
            raise ConfigError(
                f"{path}.{name}",
                f"{value!r} numbers the repetitions, which the charts take the mean and interval over; "
                f"choose one of: {', '.join(choices) or 'none (only the repetitions vary)'}",
            )
        if value not in keys:
            raise ConfigError(
                f"{path}.{name}",
                f"{value!r} is not an ID key that varies here; choose one of: {', '.join(choices) or 'none'}",
            )


def group_key(keys: list[str], spec: IndexSpec) -> str:
    """Return the ID key the index groups tests by: ``spec.group_by``, else the first varying key not a repetition."""
    return spec.group_by or next((k for k in keys if k not in REPETITION_KEYS), "")


def x_key(keys: list[str], spec: IndexSpec) -> str:
    """Return the ID key the charts' x axis sweeps: ``spec.x``, else the first varying key not grouped by.

    With one varying key it is that key, so a two-key sweep draws a line per
    flow and group value across the other key, not single dots. A repetition
    key (``rep``) is never chosen: the repetitions of one combination are
    not a quantity to draw a metric against (issue 30).
    """
    group_by = group_key(keys, spec)
    candidates = [k for k in keys if k not in REPETITION_KEYS]
    return spec.x or next((k for k in candidates if k != group_by), candidates[0] if candidates else "")


@dataclass(frozen=True)
class Chart:
    """A chart a test's reports made: its page and its image (paths in the test folder), either may be None."""

    name: str
    page: Path | None
    image: Path | None


@dataclass
class TestSummary:
    """What the comparison page shows of one test.

    ``flows`` is its flows table (None when it could not be read or made:
    ``problem`` says why); ``first_error`` the message of its first error
    (by time), else of its first failed report, else "".
    """

    __test__ = False  # not a pytest test class, despite its name

    key: str
    test: TestResult
    flows: pd.DataFrame | None
    status: str
    first_error: str
    charts: list[Chart] = field(default_factory=list)
    problem: str = ""

    @property
    def ok(self) -> bool:
        """Whether the test passed."""
        return self.status == "ok"


def summarize(test: TestResult, key: str) -> TestSummary:
    """Read what the page shows of one test: its flows, status, first error and chart."""
    flows: pd.DataFrame | None = None
    problem = ""
    try:
        flows = flows_of(test)
    except Exception as e:  # a test whose tables are damaged is shown with why, never dropped
        problem = f"no flows: {type(e).__name__}: {e}"
    return TestSummary(
        key=key,
        test=test,
        flows=flows,
        status=str(test.meta.get("status") or "unknown"),
        first_error=first_error(test),
        charts=charts_of(test),
        problem=problem,
    )


def first_error(test: TestResult) -> str:
    """Return a test's first error by time as ``node tag: message``, else its first failed report, else its failed expectations, else ""."""
    try:
        errors = test.arrow("errors").sort_by("time").slice(0, 1).to_pylist()
    except Exception as e:  # an unreadable errors table is itself the first thing to say
        return f"errors.parquet unreadable: {type(e).__name__}: {e}"
    if errors:
        first = errors[0]
        return f"{first['node_id']} {first['tag']}: {first['message']}"
    reports = test.meta.get("report_errors") or []
    if reports:
        return str(reports[0])
    unmet = test.meta.get("failed_expectations") or []
    return "expectation failed: " + "; ".join(map(str, unmet)) if unmet else ""


def charts_of(test: TestResult) -> list[Chart]:
    """List the charts a test's after reports made (those whose page or image is in its folder)."""
    from antler.report.pipeline import after_of
    from antler.report.spec import After

    try:
        after = after_of(test.meta)
    except ValueError:
        after = After()  # a config this code no longer parses: look for the default charts
    out = []
    for report in after.steps():
        _, step = report.step()
        found = [test.path / n for n in step.charts() if (test.path / n).is_file()]
        pages = [p for p in found if p.suffix == ".html"]
        images = [p for p in found if p.suffix in _BROWSER_IMAGES]
        if pages or images:
            shown = pages[0] if pages else images[0]
            out.append(Chart(name=shown.stem, page=pages[0] if pages else None, image=images[0] if images else None))
    return out
