"""Logs of stored results: the time-sorted log entries and errors of a test."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from antler.results.tables import TestResult


def log_lines(test: TestResult) -> list[str]:
    """Return the test's log entries and errors as text lines, sorted by time."""
    log = test["log"]
    errors = test["errors"]
    frames = []
    if len(log):
        frames.append(
            pd.DataFrame({"time": log["time"], "node_id": log["node_id"], "tag": log["tag"], "text": log["text"]})
        )
    if len(errors):
        frames.append(
            pd.DataFrame(
                {
                    "time": errors["time"],
                    "node_id": errors["node_id"],
                    "tag": errors["tag"],
                    "text": "error: " + errors["message"].astype(str),
                }
            )
        )
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True).sort_values("time", kind="stable")
    stamp = df["time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (stamp + " " + df["node_id"] + " " + df["tag"] + ": " + df["text"]).tolist()


def emit_log(test: TestResult, to: tuple[str, ...]) -> list[Path]:
    """Write the sorted log to each destination ("-" is stdout); existing files are kept."""
    lines = log_lines(test)
    written = []
    for name in to:
        if name == "-":
            for line in lines:
                print(line, file=sys.stdout)
            continue
        path = test.path / name
        if path.exists():
            continue  # the writer's own log.txt, written when the test ended
        with open(path, "x") as f:
            f.writelines(line + "\n" for line in lines)
        written.append(path)
    return written
