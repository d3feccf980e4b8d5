"""The reliability report: docs/reliability.md, rendered from the figures the reliability tests record.

Usage (what ``make reliability`` runs after the tests)::

    python -m tests.lab.reliability_report FIGURES.jsonl > docs/reliability.md

FIGURES.jsonl is what the tests appended with ANTLER_RELIABILITY_FIGURES set
(tests/lab/figures.py): figures (promise, what, value, unit, lost) and, from
tests/conftest.py, each test's outcome and a line for the session. The
report has a section per promise of issue 17, in :data:`PROMISES` order:
the promise, the tests that tried it and how they ended, how it was tried
(every figure, with the test that measured it) and what was lost (the
figures that count a loss and are not zero, and every test that failed).
A promise no figure or test speaks of says so: it was not tried.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Promise:
    """One promise of the issue: its key in the figures, its title, what it says, the tests that try it.

    ``tests`` are test node ID prefixes (a file, or a file and a test name).
    """

    key: str
    title: str
    says: str
    tests: tuple[str, ...]


PROMISES = (
    Promise(
        "leaks",
        "Nothing leaks",
        "After any test (passed, failed, timed out, interrupted, or its driver killed with SIGKILL), nothing it "
        "created remains: namespace, veth, qdisc, rule, child process, Ray actor, listening socket. What a dead "
        "invocation left is reclaimed by the next run with a log line saying so; what a live one owns is never "
        "touched. Every test of the suite runs under the leak check of tests/conftest.py.",
        ("tests/test_leaks.py", "tests/test_reclaim.py"),
    ),
    Promise(
        "lost",
        "Nothing is lost",
        "SIGINT during a test exits 130 within 10 s, keeps the result under a dated folder whose meta.json says "
        "interrupted, with every sample flushed before the signal (at most 1 s missing); a second SIGINT exits at "
        "once without a traceback; SIGKILL leaves readable data up to the last flush, kept under *-interrupted by "
        "the next run; a sweep killed at test k keeps tests 1..k-1 whole.",
        ("tests/test_interrupt.py", "tests/test_incremental.py::test_an_interrupted_sweep"),
    ),
    Promise(
        "hangs",
        "Nothing hangs",
        "A closed or slow terminal never stops, hangs or fails a test. A node that stops answering, a server that "
        "never accepts, a peer that vanishes mid-flow, a command that ignores SIGINT and a test past its timeout "
        "each end within the timeout plus 10 s with an Error naming what was stuck; a stream server that lost a "
        "client keeps serving new ones.",
        ("tests/test_hangs.py", "tests/test_terminal.py"),
    ),
    Promise(
        "config",
        "Bad config never reaches the network",
        "Generated run trees and configs, valid and broken (unknown keys, two fields of a union, missing or "
        "ambiguous units, bad flow IDs, addresses of the wrong family, out-of-range probabilities and rates): every "
        "broken one fails validation with exit 2 and a message naming its path, and no valid one does.",
        ("tests/test_config_property.py",),
    ),
    Promise(
        "hostile",
        "Hostile traffic is harmless",
        "The stream and packet servers, fuzzed with random and mutated headers for a fixed budget: no crash, no "
        "unbounded memory, records stay consistent, and with HMAC on, unsigned and forged traffic is dropped and "
        "counted.",
        ("tests/test_fuzz.py",),
    ),
    Promise(
        "load",
        "Load held",
        "200 concurrent stream clients against one server and 50 packet flows on one node complete with every "
        "flow recorded and nothing lost in the recording.",
        ("tests/test_load.py",),
    ),
    Promise(
        "secrets",
        "Secrets stay secret",
        "The HMAC key never appears in any result file, log line, meta.json, sysinfo page or child environment "
        "dump, even with sysinfo recording every environment variable.",
        ("tests/test_secrets.py",),
    ),
)
"""PROMISES are the promises of issue 17, in the order the report shows them."""


@dataclass(frozen=True)
class Figure:
    """One recorded figure: what was counted or measured, its value and unit, and by which test."""

    promise: str
    what: str
    value: float | int | str
    unit: str = ""
    lost: bool = False
    test: str = ""


@dataclass(frozen=True)
class Outcome:
    """How one test ended: passed, failed or skipped, and its seconds."""

    test: str
    result: str
    seconds: float = 0.0


@dataclass
class Figures:
    """Everything a figures file holds: figures, test outcomes, the session's facts."""

    figures: list[Figure] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)
    last_at: float = 0.0


def read(lines: Iterable[str]) -> Figures:
    """Parse a figures file's JSON lines (blank lines skipped); it raises ValueError naming a bad line."""
    out = Figures()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            out.last_at = max(out.last_at, float(d.get("at", 0)))
            if "session" in d:
                out.sessions.append(dict(d["session"]))
            elif "outcome" in d:
                out.outcomes.append(Outcome(d["test"], d["outcome"], float(d.get("seconds", 0))))
            else:
                out.figures.append(
                    Figure(
                        d["promise"], d["what"], d["value"], d.get("unit", ""), bool(d.get("lost")), d.get("test", "")
                    )
                )
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"figures line {n}: {e}: {line.strip()[:200]}") from None
    return out


def _belongs(test: str, promise: Promise) -> bool:
    return any(test == t or test.startswith(t) for t in promise.tests)


def _short(test: str) -> str:
    """_Short names a test as file::name[params] without the tests/ folder."""
    return test.removeprefix("tests/") or "-"


def _value(f: Figure) -> str:
    """_Value is a figure's value with its unit, numbers with thousands separators, a unit of 1 in the singular."""
    v, unit = f.value, f.unit
    if isinstance(v, bool) or not isinstance(v, int | float):
        return f"{v} {unit}".strip()
    text = f"{v:,}" if isinstance(v, int) else f"{v:,.2f}".rstrip("0").rstrip(".")
    if v == 1 and len(unit) > 2 and unit.endswith("s"):
        unit = unit[:-2] if unit.endswith("sses") else unit[:-1]  # 1 process, 1 namespace, 1 flow
    return f"{text} {unit}".strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _is_loss(f: Figure) -> bool:
    return f.lost and f.value not in (0, 0.0, "", "0")


def render(figs: Figures) -> str:
    """Return docs/reliability.md for the figures: a summary table, then a section per promise."""
    by_promise = {p.key: [f for f in figs.figures if f.promise == p.key] for p in PROMISES}
    outcomes = {p.key: [o for o in figs.outcomes if _belongs(o.test, p)] for p in PROMISES}
    # A test that recorded figures of a promise tried it, whatever its file.
    for p in PROMISES:
        tested = {f.test for f in by_promise[p.key]}
        known = {o.test for o in outcomes[p.key]}
        outcomes[p.key] += [o for o in figs.outcomes if o.test in tested - known]
    when = datetime.fromtimestamp(figs.last_at, UTC).strftime("%Y-%m-%d %H:%M UTC") if figs.last_at else "unknown"
    long_run = any(s.get("long") for s in figs.sessions)
    passed = sum(o.result == "passed" for o in figs.outcomes)
    failed = [o for o in figs.outcomes if o.result == "failed"]
    out = [
        "# Reliability",
        "",
        "What issue 17 promises, how each promise was tried and what was lost, as the reliability tests measured it.",
        f"Generated by `make reliability` ({when}) with `python -m tests.lab.reliability_report`; do not edit by hand.",
        "",
        f"Counts are those of {'the long run (ANTLER_RELIABILITY_LONG=1)' if long_run else 'the fast run of `make test`'}: "
        f"{len(figs.outcomes)} tests ({passed} passed, {len(failed)} failed, "
        f"{sum(o.result == 'skipped' for o in figs.outcomes)} skipped), {len(figs.figures)} figures.",
        "",
        "| Promise | Tests passed | Figures | Lost |",
        "|---|---:|---:|---|",
    ]
    for p in PROMISES:
        ran, found = outcomes[p.key], by_promise[p.key]
        passed_here = sum(o.result == "passed" for o in ran)
        title = f"[{p.title}](#{_anchor(p.title)})"
        out.append(f"| {title} | {passed_here} of {len(ran)} | {len(found)} | {_lost_summary(found, ran)} |")
    for p in PROMISES:
        out += ["", f"## {p.title}", "", f"> {p.says}", ""]
        ran, found = outcomes[p.key], by_promise[p.key]
        if not ran and not found:
            out.append("Not tried in this run: no test of it ran and none recorded a figure.")
            continue
        out.append(_tests_line(ran))
        out += ["", "**How it was tried:**", ""]
        out += _tried_table(ran, [f for f in found if not f.lost])
        out += ["", "**What was lost:**", ""]
        out += _lost_lines(ran, found)
    return "\n".join(out) + "\n"


def _lost_lines(ran: list[Outcome], found: list[Figure]) -> list[str]:
    """_Lost_lines says what was lost: the loss figures above zero and the failed tests, then the checks that found none."""
    losses = [f for f in found if _is_loss(f)]
    fails = [o for o in ran if o.result == "failed"]
    none = "; ".join(f"{_cell(f.what)}: {_value(f)}" for f in found if f.lost and not _is_loss(f))
    if not losses and not fails:
        return [f"Nothing: {none}." if none else "Nothing."]
    lines = [f"- {_cell(f.what)}: **{_value(f)}** ({_cell(_short(f.test))})" for f in losses]
    lines += [f"- test failed: `{_cell(_short(o.test))}`" for o in fails]
    if none:
        lines.append(f"- none lost: {none}")
    return lines


def _tried_table(ran: list[Outcome], tried: list[Figure]) -> list[str]:
    """_Tried_table lists each test that tried a promise, how it ended, and the figures it recorded.

    The test is named on its first row only; a test without figures has a row of its own.
    """
    ended = {o.test: o for o in ran}
    order = list(dict.fromkeys([f.test for f in tried] + [o.test for o in ran]))
    rows = ["| Test | What | Value |", "|---|---|---:|"]
    for test in order:
        o = ended.get(test)
        name = f"`{_cell(_short(test))}`" + (f" ({o.result}, {o.seconds:,.0f} s)" if o else "")
        mine = [f for f in tried if f.test == test]
        if not mine:
            rows.append(f"| {name} | (pass or fail is the result) | |")
        for i, f in enumerate(mine):
            rows.append(f"| {name if i == 0 else ''} | {_cell(f.what)} | {_value(f)} |")
    return rows


def _tests_line(ran: list[Outcome]) -> str:
    """_Tests_line says how many tests tried a promise, how they ended, how long they took, from which files."""
    counts = [f"{len(ran)} run"] + [
        f"{n} {result}" for result in ("passed", "failed", "skipped") if (n := sum(o.result == result for o in ran))
    ]
    files = sorted({_short(o.test).split("::")[0] for o in ran})
    where = f" ({', '.join(files)})" if files else ""
    return f"**Tests:** {', '.join(counts)}, {sum(o.seconds for o in ran):,.0f} s in all{where}."


def _lost_summary(found: list[Figure], ran: list[Outcome]) -> str:
    losses = [f for f in found if _is_loss(f)]
    fails = sum(o.result == "failed" for o in ran)
    if not ran and not found:
        return "not tried"
    parts = [f"{_cell(f.what)}: {_value(f)}" for f in losses]
    if fails:
        parts.append(f"{fails} test{'s' if fails > 1 else ''} failed")
    return "; ".join(parts) or "nothing"


def _anchor(title: str) -> str:
    """_Anchor is the link target GitHub gives a heading."""
    return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")


def main(argv: list[str]) -> int:
    """Render the figures files named in argv to stdout; it returns 2 when none is named or one is bad."""
    if not argv:
        print("usage: python -m tests.lab.reliability_report FIGURES.jsonl... > docs/reliability.md", file=sys.stderr)
        return 2
    lines: list[str] = []
    for name in argv:
        try:
            lines += Path(name).read_text().splitlines()
        except OSError as e:
            print(f"reliability_report: {name}: {e.strerror or e}", file=sys.stderr)
            return 2
    try:
        figs = read(lines)
    except ValueError as e:
        print(f"reliability_report: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(render(figs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
