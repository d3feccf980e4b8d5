"""The report pipelines' config: ``test.during`` and ``test.after``, as in antler.

Each pipeline has a ``default`` list (antler's DuringDefault/AfterDefault) and
a ``report`` list a test adds after it; a test replaces the defaults by setting
``default``. A step is a mapping with exactly one key, the report's name::

    test:
      after:
        report:
          - charts_time_series: {flow_label: {bulk: "CUBIC upload"}, to: [bulk.html]}
          - encode: {file: ["*.pcap"], extension: .zst, destructive: true}
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from antler.node.metric import Duration
from antler.node.nodespec import check_regex, set_fields
from antler.results.codec import ENCODED


@dataclass(frozen=True)
class Analyze:
    """Computes per-flow metrics into ``to`` and the series the charts use.

    ``interval`` is the goodput interval of the time series; unset, it
    follows the path: four of the rig's RTTs, at least 100 ms
    (antler.report.analyze.streams.default_interval_s).
    """

    to: str = "flows.parquet"
    interval: Duration | None = None


@dataclass(frozen=True)
class EmitLog:
    """Writes the test's log entries and errors, sorted by time, to each of ``to`` ("-" is stdout).

    A file that exists already (the writer's own log.txt) is left as it is.
    """

    to: tuple[str, ...] = ("log.txt",)


@dataclass(frozen=True)
class EmitSysInfo:
    """Renders each node's system information as an HTML page; ``{node}`` is its ID."""

    to: str = "sysinfo_{node}.html"


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
class ChartsTimeSeries:
    """Draws goodput (left axis) and delay (right axis) against time.

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
class ChartsFCT:
    """Draws flow completion time against length (log axis), one series per FlowSeries.

    Without ``series`` every stream flow is one series; with it, flows matching
    none of the patterns are left out.
    """

    to: tuple[str, ...] = ("fct.html", "fct.png")
    title: str = "Flow Completion Time vs Length"
    series: tuple[FlowSeries, ...] = ()
    flow_label: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    image_options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Encode:
    """Compresses the files matching ``file`` (globs) to ``extension`` (.zst, .gz or .xz).

    With ``destructive`` the original is removed once its encoded copy is
    complete. An encoded file that exists already is never overwritten.
    """

    file: tuple[str, ...] = ()
    extension: str = ".zst"
    destructive: bool = False
    level: int | None = None

    def validate(self) -> None:
        """Raise ValueError for an extension without a codec."""
        if self.extension not in ENCODED:
            raise ValueError(f"extension must be one of {', '.join(ENCODED)}, not {self.extension!r}")


@dataclass(frozen=True)
class Report:
    """One step of the after pipeline: exactly one field set."""

    analyze: Analyze | None = None
    emit_log: EmitLog | None = None
    emit_sysinfo: EmitSysInfo | None = None
    charts_time_series: ChartsTimeSeries | None = None
    charts_fct: ChartsFCT | None = None
    encode: Encode | None = None

    def validate(self) -> None:
        """Raise ValueError unless exactly one report is set."""
        set_ = set_fields(self)
        if len(set_) != 1:
            choices = ", ".join(f.name for f in fields(Report))
            raise ValueError(f"a report step has exactly one of {choices}; found {', '.join(set_) or 'none'}")

    def step(self) -> tuple[str, Any]:
        """Return the report's name and config."""
        name = set_fields(self)[0]
        return name, getattr(self, name)


DEFAULT_AFTER: tuple[Report, ...] = (
    Report(analyze=Analyze()),
    Report(emit_log=EmitLog()),
    Report(emit_sysinfo=EmitSysInfo()),
    Report(charts_time_series=ChartsTimeSeries()),
    Report(charts_fct=ChartsFCT()),
    # Packet captures a test saves are the bulky files; Parquet is compressed already.
    Report(encode=Encode(file=("*.pcap", "*.pcapng"), extension=".zst", destructive=True)),
)
"""DEFAULT_AFTER is antler's AfterDefault: the reports every test gets unless it replaces them."""


@dataclass(frozen=True)
class After:
    """The pipeline run from the stored data when a test ends, and by ``antler-ray report``."""

    default: tuple[Report, ...] = DEFAULT_AFTER
    report: tuple[Report, ...] = ()

    def steps(self) -> tuple[Report, ...]:
        """List the reports in the order they run."""
        return self.default + self.report


@dataclass(frozen=True)
class During:
    """What happens to items while the test runs (antler's DuringDefault: save files, log to stdout).

    ``save_files`` stores FileData in the test folder; ``emit_log`` lists where
    log entries and errors go as they arrive: "-" is the terminal, any other
    value a file in the test folder.
    """

    save_files: bool = True
    emit_log: tuple[str, ...] = ("-",)


@dataclass(frozen=True)
class IndexSpec:
    """Configures index.html of a result folder, the comparison page (the ``index`` key of the config).

    ``compare`` lists the flow metrics (flows.parquet columns, see
    antler.report.analyze.FLOW_COLUMNS) each charted against the swept ID
    key ``x`` (empty: the first varying key other than group_by), one line
    per flow and value of the other varying keys; a single name is a list of
    one. ``group_by`` is the test ID key whose values head the groups of the
    tests' images (empty: the first key that varies). The charts draw the
    flows matching ``flow`` (a regex, searched in each flow ID; it must match
    a flow of every test that has flows, see
    antler.config.compose.check_index).
    """

    group_by: str = ""
    compare: tuple[str, ...] = ("goodput_mbps", "rtt_ms_p99", "loss_pct")
    x: str = ""
    flow: str = ".*"

    def validate(self) -> None:
        """Raise ValueError for an empty metric name, or if ``flow`` does not compile as a regex."""
        if any(not m for m in self.compare):
            raise ValueError(f"compare names flows.parquet columns; got {list(self.compare)!r}")
        check_regex("flow", self.flow)
