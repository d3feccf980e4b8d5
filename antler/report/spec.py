"""The report pipelines' config, ``test.during`` and ``test.after``, as in antler, and the built-in after steps.

Each pipeline has a ``default`` list (antler's DuringDefault/AfterDefault) and
a ``report`` list a test adds after it; a test replaces the defaults by setting
``default``. A step is a mapping with exactly one key, the report's name::

    test:
      after:
        report:
          - charts_time_series: {flow_label: {bulk: "CUBIC upload"}, to: [bulk.html]}
          - encode: {file: ["*.pcap"], extension: .zst, destructive: true}

Each step is one class (antler.report.step): its fields are its config, and
it knows its outputs and how to run on a test's data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from antler.node.metric import Duration
from antler.node.spec import check_regex
from antler.report.chartspec import FCTOptions, FlowSeries, TimeSeriesOptions
from antler.report.step import Report, Step, StepContext, register
from antler.results.codec import ENCODED

__all__ = [
    "DEFAULT_AFTER",
    "After",
    "Analyze",
    "ChartsFCT",
    "ChartsTimeSeries",
    "During",
    "EmitLog",
    "EmitSysInfo",
    "Encode",
    "FlowSeries",
    "IndexSpec",
    "Report",
]


@register("analyze")
@dataclass(frozen=True)
class Analyze(Step):
    """Computes per-flow metrics into ``to`` and the series the charts use.

    ``interval`` is the goodput interval of the time series; unset, it
    follows the path: four of the rig's RTTs, at least 100 ms
    (antler.report.analyze.streams.default_interval_s).
    """

    to: str = "flows.parquet"
    interval: Duration | None = None

    def outputs(self) -> set[str]:
        """Return the flows table's name and the summary table's (antler.report.summary_file)."""
        from antler.report.summary_file import SUMMARY_FILE

        return {self.to, SUMMARY_FILE}

    def run(self, ctx: StepContext) -> list[Path]:
        """Analyse the test (the later steps use it), write its flows and summary tables; raise FileExistsError if one exists."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from antler.report.analyze import analyze
        from antler.report.summary_file import write_summary

        ctx.analysis_made = analyze(ctx.test, self.interval.seconds if self.interval is not None else None)
        path = ctx.path / self.to
        if path.exists():
            raise FileExistsError(f"{path} exists; reports never overwrite")
        table = pa.Table.from_pandas(ctx.analysis_made.flows, preserve_index=False)
        pq.write_table(table, path, compression="zstd")
        return [path, write_summary(ctx.analysis_made, path.parent)]


@register("emit_log")
@dataclass(frozen=True)
class EmitLog(Step):
    """Writes the test's log entries and errors, sorted by time, to each of ``to`` ("-" is stdout).

    A file that exists already (the writer's own log.txt) is left as it is.
    """

    to: tuple[str, ...] = ("log.txt",)

    def outputs(self) -> set[str]:
        """Return the log files' names (not stdout)."""
        return {n for n in self.to if n != "-"}

    def run(self, ctx: StepContext) -> list[Path]:
        """Write the log (see antler.report.logs.emit_log)."""
        from antler.report.logs import emit_log

        return emit_log(ctx.test, self.to)


@register("emit_sysinfo")
@dataclass(frozen=True)
class EmitSysInfo(Step):
    """Renders each node's system information as an HTML page; ``{node}`` is its ID."""

    to: str = "sysinfo_{node}.html"

    def outputs(self) -> set[str]:
        """Return the pages' name pattern (any node)."""
        return {self.to.replace("{node}", "*")}

    def run(self, ctx: StepContext) -> list[Path]:
        """Write the pages (see antler.report.sysinfo.emit_sysinfo)."""
        from antler.report.sysinfo import emit_sysinfo

        return emit_sysinfo(ctx.path, self.to)


@register("charts_time_series")
@dataclass(frozen=True)
class ChartsTimeSeries(TimeSeriesOptions, Step):
    """Draws goodput (left axis) and delay (right axis) against time (the options: TimeSeriesOptions)."""

    def outputs(self) -> set[str]:
        """Return the chart's pages and images."""
        return {n for n in self.to if n != "-"}

    def charts(self) -> tuple[str, ...]:
        """Return the chart's pages and images."""
        return self.to

    def run(self, ctx: StepContext) -> list[Path]:
        """Draw the chart with the rig in its title; nothing when there is nothing to draw."""
        from antler.report.charts import charts_time_series

        spec = replace(self, title=ctx.title(self.title))
        # None: nothing to draw (no flows, or no samples), so no empty chart.
        if charts_time_series(ctx.analysis(), spec, ctx.path, ctx.subtitle, ctx.root, ctx.banner) is None:
            return []
        return [ctx.path / n for n in self.to]


@register("charts_fct")
@dataclass(frozen=True)
class ChartsFCT(FCTOptions, Step):
    """Draws flow completion time against length (the options: FCTOptions)."""

    def outputs(self) -> set[str]:
        """Return the chart's pages and images."""
        return {n for n in self.to if n != "-"}

    def charts(self) -> tuple[str, ...]:
        """Return the chart's pages and images."""
        return self.to

    def run(self, ctx: StepContext) -> list[Path]:
        """Draw the chart with the rig in its title; nothing when no flow completed."""
        from antler.report.charts import charts_fct

        spec = replace(self, title=ctx.title(self.title))
        if charts_fct(ctx.analysis(), spec, ctx.path, ctx.subtitle, ctx.root, ctx.banner) is None:
            return []
        return [ctx.path / n for n in self.to]


@register("encode")
@dataclass(frozen=True)
class Encode(Step):
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

    def outputs(self) -> set[str]:
        """Return nothing: the encoded copies are the test's data, not reports made afresh."""
        return set()

    def run(self, ctx: StepContext) -> list[Path]:
        """Encode the files (see antler.report.encode.encode)."""
        from antler.report.encode import encode

        return encode(ctx.path, self.file, self.extension, self.level, self.destructive)


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
    antler.config.root.check_index).
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
