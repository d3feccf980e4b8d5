"""Calibration before an invocation's tests: does the rig deliver what it is asked for, on this host, now?

For each distinct rig setting among the tests to run (``calibrate: auto``,
the default, measures one not measured before on this host and kernel;
``always`` measures again; ``off`` not at all), before the first test:

1. the host's idle CPU (/proc/stat over half a second) and timer error
   (how late 200 sleeps of 1 ms wake, p99, at the real-time priority the
   packet senders and the delay link use), by every invocation, as they are
   facts of the moment;
2. through the rig, built as configured: a 1 s UDP echo flow on the idle
   path (its median RTT is the base RTT); a 3 s TCP flow with the
   bottleneck opened to 10 Gbit/s (its goodput is the path's unshaped
   capacity: what the veths and the delay emulator carry); a 3 s TCP flow
   with the bottleneck set back to the rate (its goodput against the rate).

The calibration is a run tree built from the rig's own set-up and
tear-down steps in namespaces named ``<prefix>c-left`` and so on, run on
the test's launchers; its data is kept under
the host's cache (:func:`cache_root`: ``~/.cache/antler-ray/calibration/<key>/``,
under ``$XDG_CACHE_HOME`` when set) with its figures, judged
by every invocation
(:func:`antler.report.calibration.judge_calibration`), and the
invocation's folder gets ``calibration.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import platform
import shutil
import statistics
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from antler.config.compose import Job
from antler.config.test import parse_run
from antler.invoke.live import Live
from antler.node.launch import Launchers
from antler.node.metric import Duration
from antler.node.root import Launch, do
from antler.node.runners.packet.timer import set_timer_slack
from antler.report.analyze import analyze
from antler.report.calibration import CALIBRATION_FILE, findings_meta, judge_calibration, warnings_of
from antler.results.store import TestWriter, write_meta
from antler.results.tables import TestResult
from antler.rig import dumbbell
from antler.rig.health import cpu_use, read_proc_stat
from antler.rig.kernel import kernel_release

MODES = ("auto", "off", "always")
KEY_FIELDS = ("kind", "rate", "qdisc", "limit", "rtt", "loss", "emulator", "offloads", "python", "bottleneck", "forward",
              "reverse", "senders", "ecn")  # fmt: skip
"""KEY_FIELDS are the rig settings a calibration depends on (with the host and kernel)."""
TCP_S = 3
ECHO_S = 1


def rig_key(rig: dict[str, Any]) -> dict[str, Any]:
    """Return what a calibration of a rig is cached by: the host, its kernel and the rig's path settings."""
    return {"host": platform.node(), "kernel": kernel_release(), **{k: rig.get(k) for k in KEY_FIELDS}}


def cache_root() -> Path:
    """Return the folder of this host's cached calibrations (XDG base directories: ``$XDG_CACHE_HOME`` or ~/.cache).

    The cache is the host's, not a result root's: a calibration is a fact of
    the host, its kernel and the rig setting, whichever folder the results go to.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "antler-ray" / "calibration"


def key_hash(key: dict[str, Any]) -> str:
    """Return a short hash naming a calibration key's folder."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def idle_cpu_pct(seconds: float = 0.5) -> float:
    """Return the host's idle CPU share (%) over ``seconds``, from /proc/stat."""
    before = read_proc_stat()["cpu"]
    time.sleep(seconds)
    busy, _ = cpu_use(before, read_proc_stat()["cpu"])
    return 100.0 - busy


def timer_p99_us(n: int = 200, sleep_s: float = 0.001) -> tuple[float, str]:
    """Return how late a sleep of sleep_s wakes, p99 in µs, and the priority it was measured at.

    Measured on a thread of its own at SCHED_FIFO 10 with a 1 ns timer
    slack, as the packet senders and the delay link run, where the host
    allows it; else at normal priority (and it says so).
    """
    result: list[tuple[float, str]] = []

    def measure() -> None:
        priority = "SCHED_FIFO 10"
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        except OSError:
            priority = "normal priority"
        set_timer_slack(1)
        late = []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            time.sleep(sleep_s)
            late.append((time.perf_counter_ns() - t0) / 1000 - sleep_s * 1e6)
        result.append((statistics.quantiles(late, n=100)[98], priority))

    t = threading.Thread(target=measure, name="timer-check", daemon=True)
    t.start()
    t.join(30)
    return result[0] if result else (float("nan"), "not measured")


UNSHAPED_RATE = "10gbit"
"""UNSHAPED_RATE is the htb rate the bottleneck is opened to while the unshaped capacity is measured (htb at 100gbit carried 30 Mbit/s here: its rate tables overflow)."""


def _calibration_tree(rig: dict[str, Any], rate_bps: int) -> dict[str, Any]:
    """Return the calibration's run tree as data: the rig's set-up, the flows, its tear-down.

    The rig is built as configured; for the unshaped flows its htb class is
    first opened to UNSHAPED_RATE, then set back to the rate for the shaped
    flow, so one set-up serves both (a rig without a rate has no shaped flow).
    """
    addr = rig["addr"]["right"]
    nodes = rig["nodes"]
    dev = rig["ifaces"]["mid_right"]

    def rate(r: str) -> dict[str, Any]:
        command = f"tc class change dev {dev} parent 1: classid 1:1 htb rate {r} ceil {r} quantum 1514"
        return {"child": {"node": nodes["mid"], "system": {"command": command}}}

    def upload(flow: str) -> dict[str, Any]:
        spec = {"flow": flow, "duration": f"{TCP_S}s", "cca": "cubic", "sample_io_interval": "10ms"}
        return {"child": {"node": nodes["left"], "stream_client": {"addr_key": "cal", "upload": spec}}}

    echo = {"unresponsive": {"wait": ["20ms"], "length": [160], "duration": f"{ECHO_S}s", "echo": True}}
    runs: list[dict[str, Any]] = [
        {"serial": dumbbell.setup_runs(rig)},
        {"child": {"node": nodes["right"], "stream_server": {"listen_addr": f"{addr}:7777", "listen_addr_key": "cal"}}},
        {"child": {"node": nodes["right"], "packet_server": {"listen_addr": f"{addr}:7778"}}},
        {
            "child": {
                "node": nodes["left"],
                "packet_client": {"addr": f"{addr}:7778", "flow": "cal-rtt", "sender": [echo]},
            }
        },
    ]
    if rate_bps:
        runs += [rate(UNSHAPED_RATE), upload("cal-unshaped"), rate(f"{rate_bps}bit"), upload("cal-shaped")]
    else:
        runs.append(upload("cal-unshaped"))
    runs.append({"serial": dumbbell.teardown_runs(rig)})
    return {"serial": runs}


def _calibration_rig(rig: dict[str, Any]) -> dict[str, Any]:
    """Return the rig data of the calibration: the same path, in namespaces of its own (``<prefix>c-left``)."""
    prefix = f"{rig.get('netns_prefix', 'ar-')}c-"
    nodes = {
        role: {**rig["nodes"][role], "netns": {"name": f"{prefix}{role}", "create": True}}
        for role in ("left", "mid", "right")
    }
    return {**rig, "netns_prefix": prefix, "nodes": nodes}


async def _run_flows(rig: dict[str, Any], rate_bps: int, folder: Path, launch: Launch) -> dict[str, float]:
    """Run the calibration into folder; return the flows' goodput (bit/s) and the echo flow's median RTT (ms)."""
    folder.mkdir(parents=True, exist_ok=True)
    run = parse_run(_calibration_tree(_calibration_rig(rig), rate_bps), "calibration")
    writer = TestWriter(folder)
    started = datetime.now(UTC).isoformat()
    if isinstance(launch, Launchers):
        launch = launch.for_test()
    try:
        ok = await do(run, writer.write, timeout=Duration(120_000_000_000), launch=launch)
    finally:
        writer.close()
    errors = [f"{e.node_id} {e.tag}: {e.message}" for e in writer.errors]
    write_meta(
        folder, {"test_id": {"calibration": folder.name}, "status": "ok" if ok else "failed", "started": started}
    )
    if not ok:
        raise RuntimeError(errors[0] if errors else "the calibration run failed")
    by_flow = {str(r["flow"]): r for r in analyze(TestResult(folder)).flows.to_dict("records")}
    out: dict[str, float] = {}
    for flow in ("cal-unshaped", "cal-shaped"):
        if flow in by_flow:
            out[flow] = float(by_flow[flow]["goodput_mbps"]) * 1e6
    if "cal-rtt" in by_flow:
        out["cal-rtt"] = float(by_flow["cal-rtt"]["rtt_ms_median"])
    return out


async def calibrate_rig(rig: dict[str, Any], cache: Path, launch: Launch) -> dict[str, Any]:
    """Measure one rig's flows (see the module) into cache and return its calibration.json entry, unjudged.

    The entry's ``flows`` are what is cached: the host's idle CPU and timer
    are measured again by every invocation (:func:`judged`), as they are
    facts of the moment, not of the rig.
    """
    params = dumbbell.params(rig)
    emulator = dumbbell.check(params)
    if cache.exists():
        shutil.rmtree(cache)
    measured = await _run_flows(rig, params.rate.bps, cache / "flows", launch)
    return {
        "rig": dumbbell.path.summary(dumbbell.KIND, params, emulator),
        "key": rig_key(rig),
        "measured": datetime.now(UTC).isoformat(),
        "flows": {
            "unshaped_bps": measured.get("cal-unshaped"),
            "base_rtt_ms": measured.get("cal-rtt"),
            "shaped_bps": measured.get("cal-shaped"),
        },
    }


async def judged(rig: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """Return a calibration entry with this moment's idle CPU and timer error, and every finding judged."""
    params = dumbbell.params(rig)
    idle = await asyncio.to_thread(idle_cpu_pct)
    timer, priority = await asyncio.to_thread(timer_p99_us)
    flows = entry.get("flows") or {}
    findings = judge_calibration(
        params.rate.bps,
        params.rtt.ns / 1e6,
        flows.get("unshaped_bps"),
        flows.get("base_rtt_ms"),
        timer,
        flows.get("shaped_bps"),
        idle,
    )
    return {**entry, "timer_priority": priority, "findings": findings_meta(findings)}


def mode_of(jobs: list[Job]) -> str:
    """Return the invocation's calibrate mode (the first job's: it is the invocation's, like sweep)."""
    return jobs[0].root.calibrate if jobs else "off"


async def calibrate_jobs(jobs: list[Job], result_dir: Path, launch: Launch, live: Live) -> None:
    """Calibrate each distinct dumbbell rig of the jobs (cached, see the module); write calibration.json.

    Each rig's summary is a line of the command's output, each warning a
    line of its own. A calibration that fails is an entry with its error,
    and the tests still run.
    """
    mode = mode_of(jobs)
    if mode == "off":
        return
    entries: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for job in jobs:
        rig = job.config.get("rig")
        if not isinstance(rig, dict):
            continue
        if rig.get("kind") != dumbbell.KIND:
            note = f"rig {rig.get('kind')}: not calibrated (calibration builds the dumbbell on this host only)"
            if note not in notes:
                notes.append(note)
            continue
        key = rig_key(rig)
        h = key_hash(key)
        if h in seen:
            continue
        seen.add(h)
        cache = cache_root() / h
        entry_file = cache / "entry.json"
        try:
            if mode == "auto" and entry_file.exists():
                entry = {**json.loads(entry_file.read_text()), "cached": True}
            else:
                live.line(f"calibrating the rig ({TCP_S * 2 + ECHO_S}s of flows; calibrate=off skips it)")
                entry = await calibrate_rig(rig, cache, launch)
                entry_file.write_text(json.dumps(entry, indent=2) + "\n")
            entry = await judged(rig, entry)
        except Exception as e:  # the tests still run; the page and the output say it was not calibrated
            entry = {"rig": str(key), "key": key, "error": f"{type(e).__name__}: {e}", "findings": []}
        entries.append(entry)
        warnings = warnings_of(entry)
        figures = ", ".join(f["text"] for f in entry["findings"] if f["verdict"] == "ok")
        cached = " (cached; calibrate=always measures again)" if entry.get("cached") else ""
        if entry.get("error"):
            live.line(f"calibration failed: {entry['error']}")
        elif warnings:
            live.line(f"calibration: {len(warnings)} warning(s){cached}; {figures}")
            for w in warnings:
                live.line(f"calibration warning: {w}")
        else:
            live.line(f"calibration ok{cached}: {figures}")
    if entries or notes:
        (result_dir / CALIBRATION_FILE).write_text(json.dumps({"rigs": entries, "notes": notes}, indent=2) + "\n")
