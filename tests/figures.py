"""Figures the reliability tests measure, for docs/reliability.md (``make reliability``).

A test calls :func:`record` with its promise, what it counted or measured and
the value; with ``ANTLER_RELIABILITY_FIGURES`` naming a file, each figure is
appended to it as a JSON line (``make reliability`` then renders them with
``python -m tests.reliability_report``); without it, nothing is written.
"""

from __future__ import annotations

import json
import os
import time

FIGURES_ENV = "ANTLER_RELIABILITY_FIGURES"
"""FIGURES_ENV names the JSON-lines file figures are appended to."""


def record(promise: str, what: str, value: float | int | str, unit: str = "") -> None:
    """Record appends one figure (promise, what, value, unit) to the figures file, if one is named."""
    path = os.environ.get(FIGURES_ENV)
    if not path:
        return
    line = {"promise": promise, "what": what, "value": value, "unit": unit, "at": time.time()}
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    if test:
        line["test"] = test
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
