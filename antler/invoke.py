"""Running an invocation: each job's test, its result folder, and the live output."""

from __future__ import annotations

import asyncio
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
from antler.node.hmac import env_key, resolve_key
from antler.node.items import DIAGNOSTICS_TAG, Error, FileData, Item, LogEntry
from antler.node.launch import Launchers, ReportsFacts, ray_address
from antler.node.root import Launch, do
from antler.node.secrets import Redactor
from antler.report.index import write_index
from antler.report.pipeline import run_after
from antler.report.spec import During, IndexSpec
from antler.results.store import Invocation, TestWriter, host_facts, versions, write_meta
from antler.rig.resolvers import rig_facts


@dataclass
class Outcome:
    """Outcome is how an invocation ended."""

    result_dir: Path | None = None
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
        """Item prints a log entry or error (a launcher's diagnostics stay in the log: the tool's error leads)."""
        if isinstance(item, LogEntry) and item.tag == DIAGNOSTICS_TAG:
            return
        if isinstance(item, (LogEntry, Error)):
            t = item.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
            text = item.text if isinstance(item, LogEntry) else f"error: {item.message}"
            line = f"{t} {item.node_id} {item.tag}: {text}"
            if self.bar is not None:
                self.bar.write(line, file=self.out)
            else:
                print(line, file=self.out, flush=True)


async def run_jobs(jobs: list[Job], root_dir: Path, launch: Launch | None = None, out: TextIO = sys.stdout) -> Outcome:
    """Run_jobs runs each job's test in turn into one result folder.

    Without a ``launch`` the nodes are launched by the launcher each names, on
    the Ray cluster at the first job's ``ray.address`` (or RAY_ADDRESS, or an
    embedded local Ray started when a test first needs it and shut down here).
    """
    own: Launchers | None = None
    if launch is None:
        launch = own = Launchers(ray_address(jobs[0].config) if jobs else None)
    inv = Invocation(root_dir)
    inv.begin()
    outcome = Outcome()
    live = Live(out)
    try:
        for k, job in enumerate(jobs, 1):
            ok = await _run_test(inv, job, k, len(jobs), launch, live)
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


async def _run_test(inv: Invocation, job: Job, k: int, n: int, launch: Launch, live: Live) -> bool:
    test = job.test
    directory = inv.test_dir(test.output_path())
    # A key interpolated into the config (${oc.env:ANTLER_HMAC_KEY}) is never saved with it.
    redact = Redactor([env_key()])
    (directory / "config.yaml").write_text(redact.text(yaml.safe_dump(job.config, sort_keys=False)))
    (directory / "overrides.yaml").write_text(redact.text(yaml.safe_dump(job.overrides)))
    meta: dict[str, Any] = {
        "test_id": test.id,
        "path": test.output_path(),
        "status": "running",
        "started": datetime.now(UTC).isoformat(),
        "overrides": job.overrides,
        # The values the sweep applied (the ID holds them made safe for folder names).
        "swept": job.swept,
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
    write_meta(directory, redact.value(meta))
    writer = TestWriter(directory)
    sink = DuringSink(test.during, directory, writer.write, live.item)

    expected = test.run.expected_seconds()
    print(f"test {k} of {n}: {test.id_text()} (about {expected:.0f}s)", file=live.out, flush=True)
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
        write_meta(directory, redact.value(meta))
        if status != "interrupted":
            # The after reports read the stored data, exactly as `antler-ray report` does later.
            report_errors = await asyncio.to_thread(run_after, directory, test.after, live.out)
            if report_errors:
                meta["report_errors"] = report_errors
                write_meta(directory, redact.value(meta))
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
