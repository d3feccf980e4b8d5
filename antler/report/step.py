"""A step of the after pipeline: one class that is its config, knows its outputs and runs on a test's data.

As antler's reporters are, a step is one type. It is a frozen dataclass
whose fields are its config (parsed from the step's mapping in
``test.after``), subclassing :class:`Step`, registered under its config name
with :func:`register`::

    @register("count_flows")
    @dataclass(frozen=True)
    class CountFlows(Step):
        to: str = "flow_count.txt"

        def outputs(self) -> set[str]:
            return {self.to}

        def run(self, ctx: StepContext) -> list[Path]:
            path = ctx.path / self.to
            path.write_text(f"{len(ctx.analysis().flows)}\\n")
            return [path]

Once its module is imported, ``- count_flows: {}`` is a step of
``test.after.report``: the pipeline (:mod:`antler.report.pipeline`) runs it,
``antler-ray report`` and incremental runs make its outputs afresh, and the
comparison page shows the files its :meth:`Step.charts` names. The built-in
steps are in :mod:`antler.report.spec`.
"""

from __future__ import annotations

import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TextIO, TypeVar

from antler.report.html import health_banner
from antler.report.provenance import provenance_html

if TYPE_CHECKING:
    from antler.report.analyze import Analysis
    from antler.results.tables import TestResult

S = TypeVar("S", bound="type[Step]")

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


class Step(ABC):
    """A report of the after pipeline; its subclasses are frozen dataclasses whose fields are its config."""

    name: ClassVar[str] = ""
    """The step's key in the config (``charts_fct``), set by :func:`register`."""

    @abstractmethod
    def outputs(self) -> set[str]:
        """Return the names (or fnmatch patterns) of the files the step writes in a test folder.

        A re-run of the reports leaves these out of what it links from the
        source folder, so the step makes them afresh.
        """

    @abstractmethod
    def run(self, ctx: StepContext) -> list[Path]:
        """Run the step on one test and return the files it wrote; raise to fail it (the other steps still run)."""

    def charts(self) -> tuple[str, ...]:
        """Return the names of the chart pages and images the step makes (the comparison page shows them)."""
        return ()


STEPS: dict[str, type[Step]] = {}
"""STEPS maps each step's config name to its class, in the order they were registered."""


def register(name: str) -> Callable[[S], S]:
    """Return a class decorator that registers a Step subclass as the after pipeline's step ``name``.

    Raises ValueError if another class has that name already.
    """

    def add(cls: S) -> S:
        if STEPS.get(name, cls) is not cls:
            raise ValueError(f"report step {name!r} is {STEPS[name].__qualname__} already")
        cls.name = name
        STEPS[name] = cls
        return cls

    return add


class Report(Mapping[str, Step]):
    """One entry of a pipeline's list: a mapping of one step's name to the step, as written (``- analyze: {}``).

    Made as ``Report(Analyze())`` or ``Report(analyze=Analyze())``; parsed by
    antler.node.spec as a one-of mapping over :data:`STEPS`.
    """

    def __init__(self, step: Step | None = None, **named: Step) -> None:
        given = [*([] if step is None else [step]), *named.values()]
        if len(given) != 1:
            raise ValueError(f"a report holds one step, not {len(given)}")
        for key, value in named.items():
            if key != value.name:
                raise ValueError(f"{type(value).__qualname__} is the step {value.name!r}, not {key!r}")
        self._step = given[0]

    @classmethod
    def kinds(cls) -> Mapping[str, type]:
        """Return the registered steps by config name."""
        return STEPS

    @classmethod
    def of(cls, given: dict[str, Any]) -> Report:
        """Return the report of the one step given; raise ValueError for none or several."""
        if len(given) != 1:
            choices = ", ".join(STEPS)
            raise ValueError(f"a report step has exactly one of {choices}; found {', '.join(given) or 'none'}")
        return cls(*given.values())

    def step(self) -> tuple[str, Step]:
        """Return the step's name and the step."""
        return self._step.name, self._step

    def __getitem__(self, key: str) -> Step:
        if key != self._step.name:
            raise KeyError(key)
        return self._step

    def __iter__(self) -> Iterator[str]:
        return iter((self._step.name,))

    def __len__(self) -> int:
        return 1

    def __getattr__(self, name: str) -> Step | None:
        """Return the step if it is the one called name, None for another registered step."""
        if name not in STEPS:
            raise AttributeError(name)
        step: Step = self.__dict__["_step"]
        return step if step.name == name else None

    def __repr__(self) -> str:
        return f"Report({self._step!r})"


class StepContext:
    """What a step runs on: the test, its result folder, where to print, and the analysis steps share.

    ``root`` is the result folder holding the test, where the chart pages
    find plotly.js.
    """

    def __init__(self, test: TestResult, root: Path, out: TextIO = sys.stdout) -> None:
        self.test = test
        self.root = root
        self.out = out
        self.analysis_made: Analysis | None = None

    @property
    def path(self) -> Path:
        """The test's folder."""
        return self.test.path

    @property
    def subtitle(self) -> str:
        """The test's ID as a chart's subtitle."""
        return self.test.id_text

    @property
    def banner(self) -> str:
        """The test's health banner and short provenance for its pages ("" without either)."""
        return health_banner(self.test.meta.get("health")) + provenance_html(self.test.meta.get("provenance"))

    def analysis(self) -> Analysis:
        """Return the test's analysis: the analyze step's, else one made now (default interval) and kept."""
        if self.analysis_made is None:
            from antler.report.analyze import analyze

            self.analysis_made = analyze(self.test)
        return self.analysis_made

    def title(self, title: str) -> str:
        """Return a chart's title with the rig: its delay emulator, and its hosts, must never be a surprise."""
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
        # The rate built is only where the test started when a schedule or a tc command changes it (issue 30).
        changed = changes_rate((self.test.meta.get("config") or {}).get("test")) or any(
            isinstance(step, dict) and step.get("rate_bps") is not None for step in rig.get("schedule") or []
        )
        at_start = " at the start, changed during the test" if changed else ""
        fwd, ret = rig.get("forward"), rig.get("reverse")
        if fwd and ret:
            # Each direction's bottleneck: a download's rate is never a surprise either.
            ways = [_direction(fwd), _direction(ret)]
            parts.append((f"{ways[0]} each way" if ways[0] == ways[1] else f"→ {ways[0]}, ← {ways[1]}") + at_start)
        elif rig.get("rate_bps"):
            where = f" ({rig['bottleneck']})" if rig.get("bottleneck") else ""
            rate = f"{rig['rate_bps'] / 1e6:g} Mbit/s{at_start}"
            parts.append(f"{rate} {rig.get('qdisc', '')}{where}".rstrip())
        if rig.get("rtt_ms"):
            parts.append(f"RTT {rig['rtt_ms']:g} ms")
        if rig.get("loss"):
            parts.append(f"loss {100 * rig['loss']:g}%")
        parts.append(f"delay by {rig.get('emulator', '?')}")
        return f"{title} ({', '.join(parts)})"


def _direction(d: dict[str, Any]) -> str:
    """_direction is one direction of a rig in a title: its rate (or trace) and queue, or unshaped."""
    if d.get("trace"):
        pace = f"trace {str(d['trace']).rsplit('/', 1)[-1]}"
    elif d.get("rate_bps"):
        pace = f"{d['rate_bps'] / 1e6:g} Mbit/s"
    else:
        return "unshaped"
    return f"{pace} {d.get('qdisc', '')} ({d.get('bottleneck', '?')})"
