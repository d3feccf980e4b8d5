"""Running an invocation: each job's test, its result folder, and the live output."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import yaml
from tqdm import tqdm

from antler import exitcode
from antler.config.compose import Job
from antler.config.parse import parse
from antler.node.hmac import resolve_key
from antler.node.items import Error, FileData, Item, LogEntry
from antler.node.launch import Launchers, ReportsFacts, ray_address
from antler.node.root import Launch, do
from antler.report.index import write_index
from antler.report.pipeline import after_of, report_output, report_outputs, run_after
from antler.report.spec import During, IndexSpec
from antler.results.incremental import Action, Decision, Plan
from antler.results.store import Invocation, TestWriter, host_facts, link_tree, versions, write_meta
from antler.rig.resolvers import rig_facts


@dataclass
class Outcome:
    """Outcome is how an invocation ended: its folder, the tests it ran and linked, those that failed."""

    result_dir: Path | None = None
    ran: int = 0
    linked: int = 0
    failed: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """Exit_code is the command's exit status for this outcome."""
        if self.interrupted:
            return exitcode.INTERRUPTED
        return exitcode.FAILED if self.failed else exitcode.OK


class DuringSink:
    """DuringSink applies the during pipeline (``test.during``) to each item, beside the writer that stores it."""

    def __init__(
        self, spec: During, directory: Path, store: Callable[[Item], None], live: Callable[[Item], None]
    ) -> None:
        self.spec = spec
        self._store = store
        self._live = live if "-" in spec.emit_log else None
        self._files = [directory / name for name in spec.emit_log if name != "-"]

    def __call__(self, item: Item) -> None:
        if isinstance(item, FileData) and not self.spec.save_files:
            return
        self._store(item)
        if isinstance(item, (LogEntry, Error)):
            if self._live is not None:
                self._live(item)
            for path in self._files:
                with open(path, "a") as f:
                    f.write(str(item) + "\n")


class Live:
    """Live prints log entries and errors as they arrive, under a progress line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.bar: tqdm[Any] | None = None

    def item(self, item: Item) -> None:
        """Item prints a log entry or error."""
        if isinstance(item, (LogEntry, Error)):
            t = item.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
            text = item.text if isinstance(item, LogEntry) else f"error: {item.message}"
            line = f"{t} {item.node_id} {item.tag}: {text}"
            if self.bar is not None:
                self.bar.write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)


async def run_jobs(
    jobs: list[Job],
    root_dir: Path,
    launch: Launch | None = None,
    out: TextIO | None = None,
    plan: Plan | None = None,
) -> Outcome:
    """Run_jobs links and runs the jobs' tests into one new result folder, as the plan says.

    The tests the plan links are linked first (it takes milliseconds), so a
    run stopped part-way leaves a folder the next run can resume from; then
    the others run in turn. Without a plan every job runs. Without a
    ``launch`` the nodes are launched by the launcher each names, on the Ray
    cluster at the first job's ``ray.address`` (or RAY_ADDRESS, or an embedded
    local Ray started when a test first needs it and shut down here).
    """
    if plan is None:
        plan = Plan(None, [Decision(j.test.output_path(), j.test.id, Action.RUN, "") for j in jobs])
    by_path = {j.test.output_path(): j for j in jobs}
    runs = plan.of(Action.RUN)
    own: Launchers | None = None
    if launch is None:
        launch = own = Launchers(ray_address(jobs[0].config) if jobs else None)
    inv = Invocation(root_dir)
    recovered = inv.begin()
    if recovered is not None:
        # The prior folder may be the killed run's in-progress, which begin just moved.
        plan = plan.moved(inv.dir, recovered)
    outcome = Outcome()
    out = sys.stdout if out is None else out  # the stdout of the moment, not of the import
    live = Live(out)
    try:
        for d in plan.of(Action.LINK):
            await _link_test(inv, d, by_path[d.path], plan, live)
            outcome.linked += 1
        for k, d in enumerate(runs, 1):
            job = by_path[d.path]
            ok = await _run_test(inv, job, k, len(runs), launch, live, d.reason)
            outcome.ran += 1
            if not ok:
                outcome.failed.append(job.test.id_text())
    except asyncio.CancelledError:
        outcome.interrupted = True
    finally:
        _write_index(inv.dir, jobs, out)
        outcome.result_dir = inv.finish()
        if own is not None:
            own.close()  # on this thread, like the ray.init it undoes
    return outcome


async def _link_test(inv: Invocation, d: Decision, job: Job, plan: Plan, live: Live) -> None:
    """_Link_test hard-links a test that need not run from the prior folder, and re-makes changed reports."""
    assert d.source is not None and plan.prior is not None
    directory = inv.test_dir(d.path)
    meta: dict[str, Any] = json.loads((d.source / "meta.json").read_text())
    # Where the test really ran, through any chain of links.
    meta.setdefault("ran_in", plan.prior.name)
    meta["linked_from"] = plan.prior.name
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
    (directory / "config.yaml").write_text(yaml.safe_dump(job.config, sort_keys=False))
    (directory / "overrides.yaml").write_text(yaml.safe_dump(job.overrides))
    meta.update(config=job.config, overrides=job.overrides)
    if d.rerun_reports:
        meta.pop("report_errors", None)
    write_meta(directory, meta)
    if d.rerun_reports:
        print(f"{job.test.id_text()}: making its reports again (test.after changed)", file=live.out, flush=True)
        report_errors = await asyncio.to_thread(run_after, directory, job.test.after, live.out)
        if report_errors:
            meta["report_errors"] = report_errors
            write_meta(directory, meta)


async def _run_test(inv: Invocation, job: Job, k: int, n: int, launch: Launch, live: Live, why: str = "") -> bool:
    test = job.test
    directory = inv.test_dir(test.output_path())
    (directory / "config.yaml").write_text(yaml.safe_dump(job.config, sort_keys=False))
    (directory / "overrides.yaml").write_text(yaml.safe_dump(job.overrides))
    meta: dict[str, Any] = {
        "test_id": test.id,
        "path": test.output_path(),
        "status": "running",
        "started": datetime.now(UTC).isoformat(),
        "overrides": job.overrides,
        "config": job.config,
        "versions": versions(),
        "host": host_facts(),
        "pid": os.getpid(),
    }
    rig = rig_facts(job.config)
    if rig is not None:
        # The rig as built on this kernel (the delay emulator above all), so a
        # result never hides that it was made with the TUN link, not netem.
        meta["rig"] = rig
    write_meta(directory, meta)
    writer = TestWriter(directory)
    sink = DuringSink(test.during, directory, writer.write, live.item)

    expected = test.run.expected_seconds()
    because = f"{why}; " if why else ""
    print(f"test {k} of {n}: {test.id_text()} ({because}about {expected:.0f}s)", file=live.out, flush=True)
    start = time.monotonic()
    live.bar = tqdm(
        total=max(expected, 0.001),
        desc=f"test {k}/{n}",
        bar_format="{desc} {elapsed} of " + _clock(expected) + " |{bar}|",
        disable=not sys.stderr.isatty(),
        leave=False,
    )
    ticker = asyncio.ensure_future(_tick(live, start, expected))
    status = "failed"
    try:
        ok = await do(
            test.run, sink, timeout=test.timeout, launch=launch, hmac_key=resolve_key(test.hmac, test.hmac_key_file)
        )
        status = "ok" if ok and not writer.errors else "failed"
        return status == "ok"
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    finally:
        ticker.cancel()
        live.bar.close()
        live.bar = None
        writer.close()
        meta.update(
            status=status,
            ended=datetime.now(UTC).isoformat(),
            duration_s=round(time.monotonic() - start, 3),
            errors=len(writer.errors),
        )
        if isinstance(launch, ReportsFacts):
            # Where each node ran and its clock offset, to correct one-way delays across hosts.
            meta["nodes"] = launch.take_facts()
        write_meta(directory, meta)
        if status != "interrupted":
            # The after reports read the stored data, exactly as `antler-ray report` does later.
            report_errors = await asyncio.to_thread(run_after, directory, test.after, live.out)
            if report_errors:
                meta["report_errors"] = report_errors
                write_meta(directory, meta)
        print(f"test {k} of {n}: {status} in {time.monotonic() - start:.1f}s", file=live.out, flush=True)


def _write_index(directory: Path, jobs: list[Job], out: TextIO) -> None:
    try:
        spec = parse(IndexSpec, jobs[0].config.get("index") if jobs else None, "index")
        write_index(directory, spec)
    except Exception as e:  # an index problem must not lose the results being finished
        print(f"index.html not written: {type(e).__name__}: {e}", file=out)


async def _tick(live: Live, start: float, expected: float) -> None:
    while True:
        await asyncio.sleep(0.5)
        if live.bar is not None:
            live.bar.n = min(time.monotonic() - start, expected)
            live.bar.refresh()


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m:02d}:{s:02d}"
