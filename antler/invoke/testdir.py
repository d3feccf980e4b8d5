"""One test's result folder: running the test's tree into it, or linking it from a prior folder.

A test that runs gets its config, overrides and meta.json (its status kept
up to date: running, then ok, failed or interrupted), and its data items go
through the during pipeline (antler.report.pipeline.DuringSink) to its writer and the live
output. A test an incremental run need not run is hard-linked from the prior
folder, with changed reports made again. Its reports are left to the caller.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from antler.config.compose import Job
from antler.invoke.live import Live
from antler.invoke.watch import TestWatch
from antler.node import lease
from antler.node.hmac import env_key, resolve_key
from antler.node.items import ROOT_NODE_ID, LogEntry, now
from antler.node.launch import ReportsFacts
from antler.node.root import Launch, do
from antler.node.run import Run
from antler.node.secrets import Redactor
from antler.report.pipeline import DuringSink, after_of, report_output, report_outputs, run_after
from antler.results.incremental import Decision, Plan
from antler.results.store import Invocation, TestWriter, host_facts, link_tree, versions, write_meta
from antler.rig.resolvers import rig_facts


@dataclass
class Ran:
    """A test that ran: its job, folder, meta (as written), how it ended, the hosts where it lost a node."""

    job: Job
    directory: Path
    meta: dict[str, Any]
    status: str
    lost_hosts: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        """True when the test passed."""
        return self.status == "ok"


_RUNNING: dict[Path, tuple[dict[str, Any], TestWriter]] = {}
"""_RUNNING maps the folder of each test running in this process to its meta and writer (for :func:`interrupt_running`)."""


def interrupt_running() -> None:
    """Mark this process's running tests interrupted, at once (see antler.invoke.exit_now).

    Each running test's buffered rows are written (if its writer is free
    within half a second) and its meta.json says ``interrupted``.
    """
    for directory, (meta, writer) in list(_RUNNING.items()):
        writer.flush(timeout_s=0.5)
        ended = {"status": "interrupted", "ended": datetime.now(UTC).isoformat(), "exited_at_once": True}
        write_meta(directory, {**meta, **ended})


async def link_test(inv: Invocation, d: Decision, job: Job, plan: Plan, live: Live) -> None:
    """Hard-link a test that need not run from its source folder (the prior or an earlier one), and re-makes changed reports."""
    assert d.source is not None
    directory = inv.test_dir(d.path)
    meta: dict[str, Any] = json.loads((d.source / "meta.json").read_text())
    # The result folder the test is linked from: the prior one, or an earlier one (issue 30).
    source_folder = d.source.parents[len(Path(d.path).parts) - 1].name
    # Where the test really ran, through any chain of links.
    meta.setdefault("ran_in", source_folder)
    meta["linked_from"] = source_folder
    if d.keep_config:
        link_tree(d.source, directory)
        write_meta(directory, meta)
        return
    remade: set[str] = set()
    if d.rerun_reports:
        remade = report_outputs(after_of(meta)) | report_outputs(job.test.after)
    own_files = ("config.yaml", "overrides.yaml")
    link_tree(d.source, directory, lambda rel: rel.as_posix() in own_files or report_output(rel, remade))
    # The test part is the same; the rest (index.*, test.after) is this invocation's.
    redact = _write_config(directory, job)
    meta.update(redact.value({"config": job.config, "overrides": job.overrides}))
    if d.rerun_reports:
        meta.pop("report_errors", None)
    write_meta(directory, meta)
    if d.rerun_reports:
        print(f"{job.test.id_text()}: making its reports again (test.after changed)", file=live.out, flush=True)
        report_errors = await asyncio.to_thread(run_after, directory, job.test.after, live.out)
        if report_errors:
            meta["report_errors"] = report_errors
            write_meta(directory, meta)


async def run_test(
    inv: Invocation,
    job: Job,
    run: Run,
    k_of_n: tuple[int, int],
    launch: Launch,
    live: Live,
    why: str = "",
    host: str = "",
    extra: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> Ran:
    """Run one test's tree (placed already) into its folder; its reports are left to the caller."""
    test = job.test
    k, n = k_of_n
    directory = inv.test_dir(test.output_path())
    redact = _write_config(directory, job)
    meta: dict[str, Any] = {
        "test_id": test.id,
        "path": test.output_path(),
        "status": "running",
        "started": datetime.now(UTC).isoformat(),
        # The test's place in the order the invocation runs them (sweep.shuffle permutes it).
        "order": k,
        "overrides": job.overrides,
        # The values the sweep applied (the ID holds them made safe for folder names).
        "swept": job.swept,
        "config": job.config,
        "versions": versions(),
        "host": host_facts(),
        "pid": os.getpid(),
        **(extra or {}),
    }
    rig = rig_facts(job.config)
    if rig is not None:
        # The rig as built on this kernel (the delay emulator above all), so a
        # result never hides that it was made with the TUN link, not netem.
        meta["rig"] = rig
    write_meta(directory, redact.value(meta))
    writer = TestWriter(directory)
    _RUNNING[directory] = (redact.value(meta), writer)  # what a second Ctrl-C writes: never the key
    sink = DuringSink(test.during, directory, writer.write, lambda item: live.item(item, host))
    # The testbed's health and provenance, sampled around the tree (antler.invoke.watch).
    watch = TestWatch(job, directory, (extra or {}).get("placement", {}).get("netns"), inv.dir)
    sink = watch.wrap(sink)

    expected = test.run.expected_seconds()
    because = f"{why}; " if why else ""
    on = f" on {host}" if host else ""
    live.line(f"test {k} of {n}{on}: {test.id_text()} ({because}about {expected:.0f}s)")
    for note in notes or []:
        sink(LogEntry(now(), ROOT_NODE_ID, lease.TAG, note))
    start = time.monotonic()
    status = "failed"
    watch.start()
    try:
        ok = await do(
            run, sink, timeout=test.timeout, launch=launch, hmac_key=resolve_key(test.hmac, test.hmac_key_file)
        )
        status = "ok" if ok and not writer.errors else "failed"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        writer.close()
        watch.stop()
        meta.update(watch.meta())
        if status == "ok" and test.health == "fail" and watch.health.status != "ok":
            status = "failed"  # test.health=fail: a run that cannot be believed fails
        if writer.write_errors and status == "ok":
            status = "failed"  # a result that could not be written is no result (issue 30)
        meta.update(
            status=status,
            ended=datetime.now(UTC).isoformat(),
            duration_s=round(time.monotonic() - start, 3),
            errors=len(writer.errors) + len(writer.write_errors),
        )
        if writer.write_errors:
            meta["write_errors"] = writer.write_errors
            for message in writer.write_errors:
                live.line(f"test {k} of {n}{on}: {message}")
        if isinstance(launch, ReportsFacts):
            # Where each node ran and its clock offset, to correct one-way delays across hosts.
            meta["nodes"] = launch.take_facts()
        meta = redact.value(meta)
        try:
            write_meta(directory, meta)
        except OSError as e:
            status = "failed"
            live.line(f"test {k} of {n}{on}: meta.json could not be written: {e.strerror or e}; the test failed")
        _RUNNING.pop(directory, None)
        live.line(f"test {k} of {n}{on}: {status} in {time.monotonic() - start:.1f}s; {watch.health.line()}")
    return Ran(job, directory, meta, status)


def _write_config(directory: Path, job: Job) -> Redactor:
    """_Write_config writes the job's config.yaml and overrides.yaml and returns the redactor it used.

    A key interpolated into the config (${oc.env:ANTLER_HMAC_KEY}) is never
    saved with it; the caller redacts meta.json with the same redactor.
    """
    redact = Redactor([env_key()])
    (directory / "config.yaml").write_text(redact.text(yaml.safe_dump(job.config, sort_keys=False)))
    (directory / "overrides.yaml").write_text(redact.text(yaml.safe_dump(job.overrides)))
    return redact
