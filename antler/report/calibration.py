"""Calibration findings: what a rig delivers against what it was asked for, each with a plain verdict.

The measurements are made before an invocation's first test
(antler.invoke.calibrate); the rules are issue 26's. Each figure is a
warning, naming it and what to change, when

- the asked bottleneck rate is above half the path's unshaped capacity
  (a TCP flow through the rig with no bottleneck): the emulator, not the
  bottleneck, may then limit the flows;
- the base RTT through the idle rig is off the configured one by more
  than 0.5 ms + 2 %;
- the host's timer is late: the 99th percentile of how late a 1 ms sleep
  wakes (at the real-time priority the packet senders and delay link use)
  is above 500 µs;
- the shaped goodput (a TCP flow through the configured bottleneck) is
  below 85 % of the asked rate;
- the host was busy before anything ran (idle CPU below 5 %).

``calibration.json`` in the result folder holds one entry per rig setting
calibrated; :func:`calibration_html` shows it on the comparison page.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "calibration.json"
CAPACITY_SHARE = 0.5
RTT_SLACK_MS = 0.5
RTT_SLACK_SHARE = 0.02
TIMER_P99_US = 500.0
SHAPED_SHARE = 0.85
IDLE_PCT = 5.0


@dataclass(frozen=True)
class Finding:
    """One calibration figure with its verdict: ``ok`` or ``warning``, and a sentence saying what to do."""

    name: str
    value: float
    unit: str
    verdict: str
    text: str


def judge_calibration(
    rate_bps: int,
    rtt_ms: float,
    unshaped_bps: float | None,
    base_rtt_ms: float | None,
    timer_p99_us: float | None,
    shaped_bps: float | None,
    idle_pct: float | None,
) -> list[Finding]:
    """Return the findings of one rig's calibration (None for a figure not measured: no finding)."""
    out: list[Finding] = []
    if unshaped_bps is not None:
        mbps = unshaped_bps / 1e6
        if rate_bps and rate_bps > CAPACITY_SHARE * unshaped_bps:
            out.append(
                Finding(
                    "unshaped_capacity",
                    round(mbps, 1),
                    "Mbit/s",
                    "warning",
                    f"rig.rate {rate_bps / 1e6:g} Mbit/s is above half the path's unshaped capacity, "
                    f"{mbps:.0f} Mbit/s measured: the emulator, not the bottleneck, may limit the flows "
                    f"(ask for at most {mbps * CAPACITY_SHARE:.0f} Mbit/s, or use netem or a faster host)",
                )
            )
        else:
            out.append(
                Finding("unshaped_capacity", round(mbps, 1), "Mbit/s", "ok", f"unshaped capacity {mbps:.0f} Mbit/s")
            )
    if base_rtt_ms is not None:
        slack = RTT_SLACK_MS + RTT_SLACK_SHARE * rtt_ms
        off = base_rtt_ms - rtt_ms
        if abs(off) > slack:
            out.append(
                Finding(
                    "base_rtt",
                    round(base_rtt_ms, 3),
                    "ms",
                    "warning",
                    f"base RTT {base_rtt_ms:.2f} ms through the idle rig is {off:+.2f} ms off rig.rtt {rtt_ms:g} ms "
                    f"(more than {slack:.2f} ms): a busy host or a late delay link; run on a quieter host",
                )
            )
        else:
            out.append(
                Finding(
                    "base_rtt",
                    round(base_rtt_ms, 3),
                    "ms",
                    "ok",
                    f"base RTT {base_rtt_ms:.2f} ms (rig.rtt {rtt_ms:g} ms)",
                )
            )
    if timer_p99_us is not None:
        late = timer_p99_us > TIMER_P99_US
        out.append(
            Finding(
                "timer_p99",
                round(timer_p99_us, 1),
                "us",
                "warning" if late else "ok",
                f"timer wake-up lateness p99 {timer_p99_us:.0f} us"
                + (
                    f" (above {TIMER_P99_US:g} us): packet send times and the delay link's releases will be late; "
                    "run on a quieter host, or one with real-time priority allowed"
                    if late
                    else ""
                ),
            )
        )
    if shaped_bps is not None and rate_bps:
        share = shaped_bps / rate_bps
        low = share < SHAPED_SHARE
        out.append(
            Finding(
                "shaped_goodput",
                round(shaped_bps / 1e6, 1),
                "Mbit/s",
                "warning" if low else "ok",
                f"shaped goodput {shaped_bps / 1e6:.1f} Mbit/s, {100 * share:.0f}% of rig.rate {rate_bps / 1e6:g} Mbit/s"
                + (
                    f" (below {100 * SHAPED_SHARE:g}%): the rig cannot deliver the asked rate; lower rig.rate"
                    if low
                    else ""
                ),
            )
        )
    if idle_pct is not None:
        busy = idle_pct < IDLE_PCT
        out.append(
            Finding(
                "idle_cpu",
                round(idle_pct, 1),
                "%",
                "warning" if busy else "ok",
                f"idle CPU {idle_pct:.0f}% before the tests"
                + (": the host is busy with other work; the tests will share it" if busy else ""),
            )
        )
    return out


def findings_meta(findings: list[Finding]) -> list[dict[str, Any]]:
    """Return findings as plain data for calibration.json."""
    return [asdict(f) for f in findings]


def warnings_of(entry: dict[str, Any]) -> list[str]:
    """Return the warning sentences of one calibration.json entry."""
    return [f["text"] for f in entry.get("findings", []) if f.get("verdict") == "warning"]


def calibration_html(result_dir: Path) -> str:
    """Return the comparison page's calibration section from the folder's calibration.json ("" without one)."""
    path = result_dir / CALIBRATION_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return ""
    parts = ["<h2>Calibration</h2>"]
    for entry in data.get("rigs", []):
        cached = f" (measured {html.escape(str(entry.get('measured', '')))}, cached)" if entry.get("cached") else ""
        parts.append(f"<p class='id'>{html.escape(str(entry.get('rig', '')))}{cached}</p><ul>")
        for f in entry.get("findings", []):
            css = "status-ok" if f.get("verdict") == "ok" else "status-failed"
            parts.append(
                f"<li><span class='{css}'>{html.escape(str(f.get('verdict')))}</span> {html.escape(str(f.get('text')))}</li>"
            )
        if entry.get("error"):
            parts.append(
                f"<li><span class='status-failed'>not calibrated</span> {html.escape(str(entry['error']))}</li>"
            )
        parts.append("</ul>")
    for note in data.get("notes", []):
        parts.append(f"<p class='note'>{html.escape(str(note))}</p>")
    return "".join(parts)
