"""The options of the charts: what antler.report.charts draws, and the base of the chart steps' config.

The steps that draw them (``charts_time_series``, ``charts_fct``) are in
antler.report.spec; these options sit below the drawing code, which reads
them, so the steps can call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from antler.node.spec import check_regex


@dataclass(frozen=True)
class FlowSeries:
    """Groups the flows whose ID matches ``pattern`` (a Python regex) into series ``name``."""

    pattern: str = ""
    name: str = ""

    def validate(self) -> None:
        """Raise ValueError for a missing pattern or name, or a pattern that does not compile."""
        if not self.pattern or not self.name:
            raise ValueError("a flow series needs a pattern and a name")
        check_regex("pattern", self.pattern)


@dataclass(frozen=True)
class TimeSeriesOptions:
    """Configures the chart of goodput (left axis) and delay (right axis) against time.

    ``to`` lists outputs: ``.html`` pages (interactive, plotly.js inline) and
    ``.png``/``.svg``/``.pdf`` images (matplotlib). ``delay`` is ``rtt`` or
    ``owd``; ``flow_label`` renames flows in the legend. ``options`` update the
    plotly layout (e.g. ``{title: {text: ...}, height: 500}``) and
    ``image_options`` the matplotlib rcParams. ``max_points`` caps the points
    drawn per flow (min/max per time bucket, so peaks stay); 0 draws all.
    """

    to: tuple[str, ...] = ("timeseries.html", "timeseries.png")
    title: str = "Time Series"
    delay: str = "rtt"
    flow_label: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    image_options: dict[str, Any] = field(default_factory=dict)
    max_points: int = 20_000

    def validate(self) -> None:
        """Raise ValueError for a delay kind other than rtt or owd."""
        if self.delay not in ("rtt", "owd"):
            raise ValueError(f"delay must be rtt or owd, not {self.delay!r}")


@dataclass(frozen=True)
class FCTOptions:
    """Configures the chart of flow completion time against length (log axis), one series per FlowSeries.

    Without ``series`` every stream flow is one series; with it, flows matching
    none of the patterns are left out.
    """

    to: tuple[str, ...] = ("fct.html", "fct.png")
    title: str = "Flow Completion Time vs Length"
    series: tuple[FlowSeries, ...] = ()
    flow_label: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    image_options: dict[str, Any] = field(default_factory=dict)
