"""The live output of an invocation: log lines as they arrive, each test's start and end, the sweep's status line."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from tqdm import tqdm

from antler.node.items import DIAGNOSTICS_TAG, Error, Item, LogEntry


class Live:
    """Prints log entries and errors as they arrive, each test's start and end, and the sweep's progress.

    With tests running at once on several hosts, each line starts with the
    host of its test (``[b]``). On a terminal a status line stays under the
    output, redrawn twice a second: done/total, failed, each running test and
    the time left.
    """

    def __init__(self, out: TextIO, parallel: bool = False) -> None:
        self.out = out
        self.parallel = parallel
        self.bar: tqdm[Any] | None = None
        self.status: Callable[[], str] | None = None

    def line(self, text: str) -> None:
        """Print one line above the status line (redrawn with the sweep's state as of now).

        It never raises: the terminal is not the test (the command's output
        goes through antler.terminal, which neither blocks nor fails; this
        guards any other stream a caller gave).
        """
        try:
            if self.bar is not None:
                if self.status is not None:
                    self.bar.set_description_str(self.status(), refresh=False)
                self.bar.write(text, file=self.out)
            else:
                print(text, file=self.out, flush=True)
        except (OSError, ValueError):
            pass

    def item(self, item: Item, host: str = "") -> None:
        """Print a log entry or error (a launcher's diagnostics stay in the log: the tool's error leads)."""
        if isinstance(item, LogEntry) and item.tag == DIAGNOSTICS_TAG:
            return
        if isinstance(item, (LogEntry, Error)):
            t = item.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
            text = item.text if isinstance(item, LogEntry) else f"error: {item.message}"
            where = f"[{host}] " if self.parallel and host else ""
            self.line(f"{where}{t} {item.node_id} {item.tag}: {text}")


@dataclass
class _Running:
    """_Running is a test in progress, for the status line."""

    label: str
    start: float
    expected_s: float


@dataclass
class Progress:
    """A sweep's state for its status line: done/total, failed, the running tests, the time left.

    A test's wall time is estimated as its expected run time (the run tree's
    sleeps and flow durations) plus the mean overhead of the tests done so far
    (:data:`FIRST_OVERHEAD_S` before any is); the time left spreads the queued
    tests' estimates over the hosts' room, after the running ones end.
    """

    total: int
    capacity: int = 1
    done: int = 0
    failed: int = 0
    queued_s: list[float] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)
    overheads: list[float] = field(default_factory=list)

    def begin(self, key: int, label: str, expected_s: float) -> None:
        """Record a test that started."""
        self.running[key] = _Running(label, time.monotonic(), expected_s)
        if expected_s in self.queued_s:
            self.queued_s.remove(expected_s)

    def end(self, key: int, ok: bool) -> None:
        """Record a test that ended."""
        r = self.running.pop(key)
        self.done += 1
        self.failed += 0 if ok else 1
        self.overheads.append(max(0.0, time.monotonic() - r.start - r.expected_s))

    def eta_s(self) -> float:
        """Estimate the seconds until every test has run."""
        overhead = sum(self.overheads) / len(self.overheads) if self.overheads else FIRST_OVERHEAD_S
        now = time.monotonic()
        ends = sorted(max(0.0, r.expected_s + overhead - (now - r.start)) for r in self.running.values())
        queued = sum(q + overhead for q in self.queued_s)
        capacity = max(1, self.capacity)
        return max(ends[-1] if ends else 0.0, (sum(ends) + queued) / capacity)

    def text(self) -> str:
        """Return the status line: ``3/8 done, 1 failed; a: cca=cubic 0:12/0:30, b: ...; about 1:20 left``."""
        now = time.monotonic()
        running = ", ".join(f"{r.label} {_clock(now - r.start)}/{_clock(r.expected_s)}" for r in self.running.values())
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total} done{failed}; {running or 'none running'}; about {_clock(self.eta_s())} left"


FIRST_OVERHEAD_S = 3.0
"""FIRST_OVERHEAD_S is the overhead a test is assumed to have (start, set-up, reports) until one has run."""


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m:02d}:{s:02d}"
