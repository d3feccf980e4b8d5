"""A test's health verdict: ``ok``, or ``suspect`` with each reason and its figure.

The rules are issue 26's. A test is suspect when, while its flows measured
(the CPU rules; the counters cover the whole test),

- the host was CPU-saturated (all cores together at least
  ``HOST_BUSY_PCT`` busy) for more than ``SATURATED_S`` in a row, or a
  hypervisor stole more than ``STEAL_PCT`` for as long: the flows then
  measured the scheduler, not the path;
- the delay link (one Python thread) used at least ``EMULATOR_BUSY_PCT``
  of a core for more than ``SATURATED_S``: it could not keep up, as a
  Mahimahi link asked for more than it delivers;
- the delay link released more than ``LATE_SHARE_PCT`` of its packets
  ``LATE_US`` or more after their deadline, or dropped packets because its
  queue was full (``overflowed``): its delay was not the one configured;
- a receiver's socket dropped datagrams (UDP ``RcvbufErrors`` or
  ``InErrors`` in a rig namespace): that loss is the host's, not the path's,
  yet the flow counts it as loss.

The figures come from ``health.parquet`` (antler.rig.health) and the delay
link's closing log line (antler.rig.delay_link.LinkStats.text).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

HOST_BUSY_PCT = 95.0
STEAL_PCT = 10.0
EMULATOR_BUSY_PCT = 90.0
SATURATED_S = 1.0
LATE_US = 1000
LATE_SHARE_PCT = 1.0

_LINK_LINE = re.compile(
    r"link (?P<spec>\S+): received (?P<received>\d+) lost (?P<lost>\d+) overflowed (?P<overflowed>\d+) "
    r"released (?P<released>\d+); release lateness mean (?P<mean>[\d.]+)us max (?P<max>\d+)us \[(?P<hist>[^\]]*)\]"
)


@dataclass(frozen=True)
class Reason:
    """Why a test is suspect: the rule, a sentence naming the figure, the figure, its unit and the threshold."""

    rule: str
    text: str
    value: float
    unit: str
    threshold: float


@dataclass
class Health:
    """A test's health: ``ok`` or ``suspect``, the reasons, and the figures behind them (for meta.json)."""

    status: str = "ok"
    reasons: list[Reason] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    def add(self, reason: Reason) -> None:
        """Add a reason; the test becomes suspect."""
        self.reasons.append(reason)
        self.status = "suspect"

    def line(self) -> str:
        """Return the verdict as one line: ``health ok (...)`` or ``health suspect: reason; reason``."""
        if self.status == "ok":
            f = self.figures
            parts = []
            if "host_busy_pct_max" in f:
                parts.append(f"host CPU max {f['host_busy_pct_max']:.0f}%")
            if "delay_link_cpu_pct_max" in f:
                parts.append(f"delay link max {f['delay_link_cpu_pct_max']:.0f}% of a core")
            if "delay_link_late_pct" in f:
                parts.append(f"{f['delay_link_late_pct']:.2f}% of packets released {LATE_US} us late")
            if "socket_drops" in f:
                parts.append(f"{f['socket_drops']:.0f} socket drops")
            return f"health ok ({', '.join(parts)})" if parts else "health ok (nothing sampled)"
        return "health suspect: " + "; ".join(r.text for r in self.reasons)

    def to_meta(self) -> dict[str, Any]:
        """Return the verdict for meta.json ``health``."""
        return {"status": self.status, "reasons": [asdict(r) for r in self.reasons], "figures": self.figures}


def longest_run_s(t_ns: np.ndarray, above: np.ndarray, period_s: float) -> float:
    """Return the longest time (s) that consecutive samples were all ``above``, each sample covering period_s.

    ``t_ns`` is sorted; a run is broken by a sample below or by a gap of more
    than two periods (the sampler was starved: no evidence either way).
    """
    best = 0.0
    start = prev = None
    for t, hot in zip(t_ns.tolist(), above.tolist(), strict=True):
        if hot and start is not None and prev is not None and t - prev <= 2 * period_s * 1e9:
            prev = t
        elif hot:
            start = prev = t
        else:
            start = prev = None
        if start is not None and prev is not None:
            best = max(best, (prev - start) / 1e9 + period_s)
    return best


def link_stats(lines: list[str]) -> list[dict[str, Any]]:
    """Parse the delay link's closing lines into counts and the lateness histogram ``{"<1000us": n, ...}``."""
    out = []
    for line in lines:
        m = _LINK_LINE.search(line)
        if not m:
            continue
        hist = {}
        for part in m["hist"].split():
            edge, _, n = part.rpartition(":")
            hist[edge] = int(n)
        out.append(
            {
                "spec": m["spec"],
                **{k: int(m[k]) for k in ("received", "lost", "overflowed", "released")},
                "late_mean_us": float(m["mean"]),
                "late_max_us": int(m["max"]),
                "hist": hist,
            }
        )
    return out


def _late(hist: dict[str, int], late_us: int) -> int:
    """Count the releases in histogram buckets at or above late_us (buckets are ``<EDGEus``)."""
    n = 0
    for edge, count in hist.items():
        bound = edge.removeprefix("<").removesuffix("us")
        lower_edge = float("inf") if bound == "inf" else float(bound)
        # A bucket "<E" holds lateness in [previous edge, E): it is late when E > late_us.
        if lower_edge > late_us:
            n += count
    return n


_QDISC = re.compile(r"^qdisc (\S+) (\S+) [^\n]*\n\s*Sent \d+ bytes (\d+) pkt \(dropped (\d+),", re.M)


def bottleneck_drops(tc_text: str) -> int | None:
    """Return the packets a bottleneck dropped, from ``tc -s qdisc show dev DEV`` text, or None if it has no qdisc.

    The largest count among the device's qdiscs: htb's root counts its leaf's drops too.
    """
    counts = [int(m[4]) for m in _QDISC.finditer(tc_text)]
    return max(counts) if counts else None


def judge(
    health: pd.DataFrame,
    link_lines: list[str],
    period_s: float = 0.1,
    bottleneck_dropped: int | None = None,
    measured_ns: tuple[int, int] | None = None,
) -> Health:
    """Return the verdict of one test from its health rows (SCHEMA of antler.rig.health) and delay link lines.

    ``measured_ns`` is the span of the rows' ``t_ns`` in which the flows
    measured (their first and last samples): the CPU rules judge only it,
    as the rig's set-up and the nodes' launch (forks, Ray workers) measure
    nothing; None judges every row. ``bottleneck_dropped`` (the packets the
    bottleneck queue dropped) is a figure, never a reason: the queue drops
    what it is there to drop.
    """
    h = Health()
    if bottleneck_dropped is not None:
        h.figures["bottleneck_drops"] = bottleneck_dropped
    if not health.empty:
        during = health
        if measured_ns is not None:
            start, end = measured_ns
            during = health[(health["t_ns"] >= start) & (health["t_ns"] <= end + int(period_s * 1e9))]
            h.figures["measured_s"] = round((end - start) / 1e9, 1)
        _judge_cpu(h, during, period_s)
        _judge_drops(h, health)
    _judge_link(h, link_stats(link_lines))
    return h


def _series(health: pd.DataFrame, source: str, metric: str) -> pd.DataFrame:
    rows = health[(health["source"] == source) & (health["metric"] == metric)]
    return rows.sort_values("t_ns")


def _judge_cpu(h: Health, health: pd.DataFrame, period_s: float) -> None:
    host = _series(health, "cpu", "busy_pct")
    if len(host):
        cores = int(health.loc[health["source"].str.fullmatch(r"cpu\d+"), "source"].nunique())
        procs = health[(health["metric"] == "cpu_pct")]
        own = procs.groupby("t_ns")["value"].sum().mean() / max(1, cores) if len(procs) else 0.0
        waits = health[(health["metric"] == "wait_pct") & (health["source"] != "delay_link")]  # the node processes
        h.figures["host_busy_pct_mean"] = round(float(host["value"].mean()), 1)
        h.figures["host_busy_pct_max"] = round(float(host["value"].max()), 1)
        h.figures["test_cpu_pct_of_host"] = round(float(own), 1)
        h.figures["other_cpu_pct_of_host"] = round(max(0.0, float(host["value"].mean()) - float(own)), 1)
        if len(waits):
            h.figures["node_wait_pct_mean"] = round(float(waits["value"].mean()), 1)
        run = longest_run_s(host["t_ns"].to_numpy(), host["value"].to_numpy() >= HOST_BUSY_PCT, period_s)
        h.figures["host_saturated_s"] = round(run, 1)
        if run > SATURATED_S:
            waited = (
                f"; its node processes waited for a CPU {h.figures['node_wait_pct_mean']:.0f}% of the time"
                if "node_wait_pct_mean" in h.figures
                else ""
            )
            h.add(
                Reason(
                    "host_cpu",
                    f"host CPU saturated (>= {HOST_BUSY_PCT:g}% of {cores} cores busy) for {run:.1f} s, "
                    f"mean {host['value'].mean():.0f}%: the test's own processes {own:.0f}%, "
                    f"others {h.figures['other_cpu_pct_of_host']:.0f}%{waited}",
                    round(run, 1),
                    "s",
                    SATURATED_S,
                )
            )
    steal = _series(health, "cpu", "steal_pct")
    if len(steal):
        h.figures["steal_pct_max"] = round(float(steal["value"].max()), 1)
        run = longest_run_s(steal["t_ns"].to_numpy(), steal["value"].to_numpy() > STEAL_PCT, period_s)
        if run > SATURATED_S:
            h.add(Reason("steal", f"CPU steal above {STEAL_PCT:g}% for {run:.1f} s", round(run, 1), "s", SATURATED_S))
    link = _series(health, "delay_link", "cpu_pct")
    if len(link):
        h.figures["delay_link_cpu_pct_mean"] = round(float(link["value"].mean()), 1)
        h.figures["delay_link_cpu_pct_max"] = round(float(link["value"].max()), 1)
        run = longest_run_s(link["t_ns"].to_numpy(), link["value"].to_numpy() >= EMULATOR_BUSY_PCT, period_s)
        if run > SATURATED_S:
            h.add(
                Reason(
                    "delay_link_cpu",
                    f"delay link CPU-bound (>= {EMULATOR_BUSY_PCT:g}% of a core) for {run:.1f} s",
                    round(run, 1),
                    "s",
                    SATURATED_S,
                )
            )


def _judge_drops(h: Health, health: pd.DataFrame) -> None:
    drops = health[health["metric"].isin(["rcvbuf_errors", "in_errors"])]
    if drops.empty:
        return
    # Counters are cumulative since the first sample: the last is the test's total.
    last = drops.sort_values("t_ns").groupby(["source", "metric"])["value"].last()
    by_ns = last.groupby(level=0).max()  # RcvbufErrors are counted in InErrors too: the larger is the total
    total = float(by_ns.sum())
    h.figures["socket_drops"] = total
    for source, n in by_ns.items():
        if n > 0:
            where = str(source).removeprefix("netns ")
            h.add(
                Reason(
                    "socket_drops",
                    f"{n:.0f} datagrams dropped in receive buffers in {where} (UDP RcvbufErrors/InErrors): "
                    "the host's loss, counted as the path's",
                    float(n),
                    "datagrams",
                    0,
                )
            )


def _judge_link(h: Health, links: list[dict[str, Any]]) -> None:
    if not links:
        return
    released = sum(link["released"] for link in links)
    late = sum(_late(link["hist"], LATE_US) for link in links)
    overflowed = sum(link["overflowed"] for link in links)
    share = 100.0 * late / released if released else 0.0
    h.figures["delay_link_late_pct"] = round(share, 3)
    h.figures["delay_link_late_max_us"] = max(link["late_max_us"] for link in links)
    h.figures["delay_link_overflowed"] = overflowed
    if share > LATE_SHARE_PCT:
        h.add(
            Reason(
                "delay_link_late",
                f"delay link released {share:.1f}% of {released} packets {LATE_US} us or more late "
                f"(max {h.figures['delay_link_late_max_us'] / 1000:.1f} ms)",
                round(share, 3),
                "%",
                LATE_SHARE_PCT,
            )
        )
    if overflowed:
        h.add(
            Reason(
                "delay_link_overflow",
                f"delay link dropped {overflowed} packets (its queue was full)",
                float(overflowed),
                "packets",
                0,
            )
        )
