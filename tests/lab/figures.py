"""Figures the reliability tests measure, for docs/reliability.md (``make reliability``).

A test calls :func:`record` with its promise, what it counted or measured and
the value (``lost=True`` for a figure that counts what was lost: flows,
packets, seconds of data, processes left); with ``ANTLER_RELIABILITY_FIGURES``
naming a file, each figure is appended to it as a JSON line, and so are the
outcome of every test of the session and the session's own facts
(:func:`outcome`, :func:`session`, called from tests/conftest.py).
``make reliability`` then renders them with ``python -m
tests.lab.reliability_report FIGURES.jsonl > docs/reliability.md``; without the
variable, nothing is written.

Promises (the keys of :data:`tests.lab.reliability_report.PROMISES`): ``leaks``,
``lost``, ``hangs``, ``config``, ``hostile``, ``load``, ``secrets``.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

FIGURES_ENV = "ANTLER_RELIABILITY_FIGURES"
"""FIGURES_ENV names the JSON-lines file figures are appended to."""


def record(promise: str, what: str, value: float | int | str, unit: str = "", *, lost: bool = False) -> None:
    """Append one figure (promise, what, value, unit; lost if it counts a loss) to the figures file, if one is named."""
    line: dict[str, Any] = {"promise": promise, "what": what, "value": value, "unit": unit, "at": time.time()}
    if lost:
        line["lost"] = True
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    if test:
        line["test"] = test
    _append(line)


def outcome(test: str, result: str, seconds: float) -> None:
    """Append how a test ended (passed, failed, skipped) and its seconds, if a figures file is named."""
    _append({"test": test, "outcome": result, "seconds": round(seconds, 1), "at": time.time()})


def session(**facts: Any) -> None:
    """Append the facts of a test session (``long``: ANTLER_RELIABILITY_LONG was set), if a figures file is named."""
    _append({"session": facts, "at": time.time()})


def _append(line: dict[str, Any]) -> None:
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
