"""Running an invocation: each job's test, its result folder, and the live output."""

from __future__ import annotations

import asyncio
import contextlib
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
from antler.node import lease
from antler.node.hmac import env_key, resolve_key
from antler.node.items import DIAGNOSTICS_TAG, ROOT_NODE_ID, Error, FileData, Item, LogEntry, now
from antler.node.launch import Launchers, ReportsFacts, TestLaunch, ray_address
from antler.node.place import place
from antler.node.root import Launch, do
from antler.node.run import Run
from antler.node.secrets import Redactor
from antler.node.shield import shielded
from antler.placement import DRIVER, Hosts, Needs, Placement, Queue, needs_of
from antler.report.index import write_index
from antler.report.pipeline import after_of, report_output, report_outputs, run_after
from antler.report.spec import During, IndexSpec
from antler.report.worker import ReportWorker
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
    """Live prints log entries and errors as they arrive, each test's start and end, and the sweep's progress.

    With tests running at once on several hosts, each line starts with the
    host of its test (``[b]``). On a terminal a status line stays under the
    output, redrawn twice a second: done/total, failed, each running test and
    the time left.
    """

    def __init__(self, out: TextIO, parallel: bool = False) -> None:
        self.out = out
        self.parallel = parallel
        self.bar: tqdm[Any] | None = None
        self.status: Callable[[], str] | None = None

    def line(self, text: str) -> None:
        """Line prints one line above the status line (redrawn with the sweep's state as of now).

        It never raises: the terminal is not the test (the command's output
        goes through antler.terminal, which neither blocks nor fails; this
        guards any other stream a caller gave).
        """
        try:
            if self.bar is not None:
                if self.status is not None:
                    self.bar.set_description_str(self.status(), refresh=False)
                self.bar.write(text, file=self.out)
            else:
                print(text, file=self.out, flush=True)
        except (OSError, ValueError):
            pass

    def item(self, item: Item, host: str = "") -> None:
        """Item prints a log entry or error (a launcher's diagnostics stay in the log: the tool's error leads)."""
        if isinstance(item, LogEntry) and item.tag == DIAGNOSTICS_TAG:
            return
        if isinstance(item, (LogEntry, Error)):
            t = item.time.astimezone().strftime("%H:%M:%S.%f")[:-3]
            text = item.text if isinstance(item, LogEntry) else f"error: {item.message}"
            where = f"[{host}] " if self.parallel and host else ""
            self.line(f"{where}{t} {item.node_id} {item.tag}: {text}")


@dataclass
class _Running:
    """_Running is a test in progress, for the status line."""

    label: str
    start: float
    expected_s: float


@dataclass
class Progress:
    """Progress is a sweep's state for its status line: done/total, failed, the running tests, the time left.

    A test's wall time is estimated as its expected run time (the run tree's
    sleeps and flow durations) plus the mean overhead of the tests done so far
    (:data:`FIRST_OVERHEAD_S` before any is); the time left spreads the queued
    tests' estimates over the hosts' room, after the running ones end.
    """

    total: int
    capacity: int = 1
    done: int = 0
    failed: int = 0
    queued_s: list[float] = field(default_factory=list)
    running: dict[int, _Running] = field(default_factory=dict)
    overheads: list[float] = field(default_factory=list)

    def begin(self, key: int, label: str, expected_s: float) -> None:
        """Begin records a test that started."""
        self.running[key] = _Running(label, time.monotonic(), expected_s)
        if expected_s in self.queued_s:
            self.queued_s.remove(expected_s)

    def end(self, key: int, ok: bool) -> None:
        """End records a test that ended."""
        r = self.running.pop(key)
        self.done += 1
        self.failed += 0 if ok else 1
        self.overheads.append(max(0.0, time.monotonic() - r.start - r.expected_s))

    def eta_s(self) -> float:
        """Eta_s estimates the seconds until every test has run."""
        overhead = sum(self.overheads) / len(self.overheads) if self.overheads else FIRST_OVERHEAD_S
        now = time.monotonic()
        ends = sorted(max(0.0, r.expected_s + overhead - (now - r.start)) for r in self.running.values())
        queued = sum(q + overhead for q in self.queued_s)
        capacity = max(1, self.capacity)
        return max(ends[-1] if ends else 0.0, (sum(ends) + queued) / capacity)

    def text(self) -> str:
        """Text is the status line: ``3/8 done, 1 failed; a: cca=cubic 0:12/0:30, b: ...; about 1:20 left``."""
        now = time.monotonic()
        running = ", ".join(f"{r.label} {_clock(now - r.start)}/{_clock(r.expected_s)}" for r in self.running.values())
        failed = f", {self.failed} failed" if self.failed else ""
        return f"{self.done}/{self.total} done{failed}; {running or 'none running'}; about {_clock(self.eta_s())} left"


FIRST_OVERHEAD_S = 3.0
"""FIRST_OVERHEAD_S is the overhead a test is assumed to have (start, set-up, reports) until one has run."""


async def run_jobs(
    jobs: list[Job],
    root_dir: Path,
    launch: Launch | None = None,
    out: TextIO | None = None,
    plan: Plan | None = None,
    hosts: list[str] | None = None,
    per_host: int = 1,
    notes: list[str] | None = None,
) -> Outcome:
    """Run_jobs links and runs the jobs' tests into one new result folder, as the plan says.

    The tests the plan links are linked first (it takes milliseconds), so a
    run stopped part-way leaves a folder the next run can resume from. Then
    the others run: one after another, or, with ``hosts`` (sweep.hosts,
    resolved), at once across those hosts, at most per_host at a time on each,
    each test wholly on one (antler.placement, antler.node.place); ``launch``
    must then be Launchers. A host where a node was lost takes no more tests.
    Without a plan every job runs. Without a ``launch`` the nodes are launched
    by the launcher each names, on the Ray cluster at the first job's
    ``ray.address`` (or RAY_ADDRESS, or an embedded local Ray started when a
    test first needs it and shut down here). ``notes`` are log lines for the
    first test to start (what was reclaimed from killed runs before it).
    """
    if plan is None:
        plan = Plan(None, [Decision(j.test.output_path(), j.test.id, Action.RUN, "") for j in jobs])
    by_path = {j.test.output_path(): j for j in jobs}
    runs = plan.of(Action.RUN)
    own: Launchers | None = None
    if launch is None:
        launch = own = Launchers(ray_address(jobs[0].config) if jobs else None)
    if hosts and not isinstance(launch, Launchers):
        raise TypeError("tests placed on hosts need Launchers")
    inv = Invocation(root_dir)
    recovered = inv.begin()
    if recovered is not None:
        # The prior folder may be the killed run's in-progress, which begin just moved.
        plan = plan.moved(inv.dir, recovered)
    _INVOCATIONS.append(inv)
    outcome = Outcome()
    out = sys.stdout if out is None else out  # the stdout of the moment, not of the import
    live = Live(out, parallel=bool(hosts))
    # One test's reports run on this thread (starting a worker would cost more
    # than it saves); a sweep's run in a worker while the next test runs.
    worker = await ReportWorker.start() if len(runs) > 1 else None
    reports: list[asyncio.Task[None]] = []
    try:
        for d in plan.of(Action.LINK):
            await _link_test(inv, d, by_path[d.path], plan, live)
            outcome.linked += 1
        sweep = _Sweep(inv, [by_path[d.path] for d in runs], [d.reason for d in runs], launch, live, worker)
        sweep.notes = list(notes or [])
        await sweep.run(hosts or [], per_host, outcome, reports)
    except asyncio.CancelledError:
        outcome.interrupted = True
    finally:
        # Reports of the tests that ended are made even after Ctrl-C (each
        # takes under a second); a Ctrl-C meanwhile still lets the folder finish.
        try:
            await shielded(asyncio.gather(*reports, return_exceptions=True))
            if worker is not None:
                await shielded(worker.close())
        except asyncio.CancelledError:
            outcome.interrupted = True
        _write_index(inv.dir, jobs, out)
        outcome.result_dir = inv.finish()
        _INVOCATIONS.remove(inv)
        if worker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await shielded(worker.wait())
        if own is not None:
            own.close()  # on this thread, like the ray.init it undoes
    return outcome


_INVOCATIONS: list[Invocation] = []
"""_INVOCATIONS are the invocations of this process not finished yet (for :func:`exit_now`)."""
_RUNNING: dict[Path, tuple[dict[str, Any], TestWriter]] = {}
"""_RUNNING maps the folder of each test running in this process to its meta and writer (for :func:`exit_now`)."""


def exit_now() -> list[str]:
    """Exit_now marks this process's running tests interrupted and finishes their folders, at once.

    For a second Ctrl-C (antler.cli.interrupt), which exits without waiting
    for the tests' cleanup: each running test's buffered rows are written
    (if its writer is free within half a second), its meta.json says
    ``interrupted``, and the invocation's folder gets its dated name, tables
    still as Arrow streams (antler.results.load reads them). It returns a line
    for each folder.
    """
    lines = []
    for directory, (meta, writer) in list(_RUNNING.items()):
        writer.flush(timeout_s=0.5)
        ended = {"status": "interrupted", "ended": datetime.now(UTC).isoformat(), "exited_at_once": True}
        write_meta(directory, {**meta, **ended})
    for inv in list(_INVOCATIONS):
        final = inv.finish()
        lines.append(f"results so far in {final}")
    return lines


class _Sweep:
    """_Sweep runs an invocation's tests: one at a time, or placed on hosts, at once."""

    def __init__(
        self,
        inv: Invocation,
        jobs: list[Job],
        reasons: list[str],
        launch: Launch,
        live: Live,
        worker: ReportWorker | None,
    ) -> None:
        self.inv = inv
        self.jobs = jobs
        self.reasons = reasons
        self.launch = launch
        self.live = live
        self.worker = worker
        self.progress = Progress(len(jobs), queued_s=[j.test.run.expected_seconds() for j in jobs])
        self.notes: list[str] = []
        """notes are log lines for the next test to start."""

    async def run(self, hosts: list[str], per_host: int, outcome: Outcome, reports: list[asyncio.Task[None]]) -> None:
        """Run starts the queued tests as hosts have room until all have run; Ctrl-C stops every running test."""
        parallel = bool(hosts)
        cluster: set[str] = set()
        if parallel:
            assert isinstance(self.launch, Launchers)
            cluster = set(await asyncio.to_thread(self.launch.hosts))
        slots = Hosts(list(hosts) if parallel else [DRIVER], per_host if parallel else 1, cluster)
        queue: Queue[int] = Queue([(k, self._needs(k, parallel)) for k in range(len(self.jobs))])
        self.progress.capacity = slots.capacity()
        active: dict[asyncio.Task[_Ran], Placement] = {}
        ticker = asyncio.ensure_future(self._tick())
        try:
            while queue or active:
                for k, placement in queue.start(slots):
                    active[asyncio.ensure_future(self._test(k, placement, parallel))] = placement
                if not active:
                    # Nothing runs and nothing could start: every host of the sweep was lost.
                    gone = queue.drop(slots.runnable) or [k for k, _ in queue.items]
                    for k in gone:
                        outcome.failed.append(f"{self.jobs[k].test.id_text()} (not run: every host was lost)")
                    queue.items = [(k, n) for k, n in queue.items if k not in gone]
                    continue
                done, _ = await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    slots.release(active.pop(task))
                    ran = task.result()
                    outcome.ran += 1
                    if not ran.ok:
                        outcome.failed.append(ran.job.test.id_text())
                    for host in sorted(ran.lost_hosts & set(slots.sweep) - slots.lost):
                        slots.lose(host)
                        self.live.line(f"host {host!r}: a node there was lost; the tests still queued go to the others")
                        _forget(self.launch, host)
                    self.progress.capacity = slots.capacity()
                    if ran.status != "interrupted":
                        reports.append(asyncio.ensure_future(self._reports(ran)))
                    if self.progress.total > 1:
                        self.live.line(f"sweep: {self.progress.text()}")
        except asyncio.CancelledError:
            # Ctrl-C: every running test is canceled and waited for; their cleanup is shielded.
            for task in active:
                task.cancel()
            results = await asyncio.gather(*active, return_exceptions=True)
            outcome.ran += len(results)
            raise
        finally:
            ticker.cancel()
            if self.live.bar is not None:
                self.live.bar.close()
                self.live.bar, self.live.status = None, None

    def _needs(self, k: int, parallel: bool) -> Needs:
        if not parallel:
            return Needs()
        nodes = [n for n in self.jobs[k].test.run.nodes() if n.launcher.name == "ray"]
        named = [n.launcher.ray.host for n in nodes if n.launcher.ray is not None and n.launcher.ray.host]
        return needs_of(named, has_unpinned=len(named) < len(nodes))

    async def _test(self, k: int, placement: Placement, parallel: bool) -> _Ran:
        job = self.jobs[k]
        run, names = job.test.run, dict[str, str]()
        launch = self.launch
        if parallel:
            run, names = place(run, placement.host, placement.suffix)
        if isinstance(launch, Launchers):
            launch = launch.for_test()
        where = placement.host or ",".join(placement.occupies)
        label = f"{where}: {job.test.id_text()}" if parallel else job.test.id_text()
        self.progress.begin(k, label, job.test.run.expected_seconds())
        notes, self.notes = self.notes, []
        ok = False
        try:
            # Which host ran the test, and the names its namespaces had there.
            extra = {"placement": {"host": placement.host, "hosts": list(placement.occupies), "netns": names}}
            ran = await _run_test(
                self.inv,
                job,
                run,
                (k + 1, len(self.jobs)),
                launch,
                self.live,
                self.reasons[k],
                where if parallel else "",
                extra if parallel else {},
                notes,
            )
            ran.lost_hosts = launch.lost_hosts() if isinstance(launch, TestLaunch) else set()
            ok = ran.ok
            return ran
        finally:
            self.progress.end(k, ok)

    async def _reports(self, ran: _Ran) -> None:
        """_Reports runs a test's after pipeline from its stored data, exactly as `antler-ray report` does later."""
        if self.worker is not None:
            after = (ran.job.config.get("test") or {}).get("after")
            errors = await self.worker.run_after(ran.directory, after, self.live.out)
        else:
            errors = await asyncio.to_thread(run_after, ran.directory, ran.job.test.after, self.live.out)
        if errors:
            ran.meta["report_errors"] = errors
            write_meta(ran.directory, ran.meta)

    async def _tick(self) -> None:
        if not sys.stderr.isatty():
            return
        self.live.bar = tqdm(total=self.progress.total, bar_format="{desc}", leave=False)
        self.live.status = self.progress.text
        while True:
            self.live.bar.set_description_str(self.progress.text(), refresh=True)
            await asyncio.sleep(0.5)


def _forget(launch: Launch, host: str) -> None:
    if isinstance(launch, Launchers):
        launch.forget_host(host)


@dataclass
class _Ran:
    """_Ran is a test that ran: its job, folder, meta (as written), how it ended, the hosts where it lost a node."""

    job: Job
    directory: Path
    meta: dict[str, Any]
    status: str
    lost_hosts: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        """Ok is true when the test passed."""
        return self.status == "ok"


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
    redact = Redactor([env_key()])  # as for a test that runs (_run_test)
    (directory / "config.yaml").write_text(redact.text(yaml.safe_dump(job.config, sort_keys=False)))
    (directory / "overrides.yaml").write_text(redact.text(yaml.safe_dump(job.overrides)))
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


async def _run_test(
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
) -> _Ran:
    """_Run_test runs one test's tree (placed already) into its folder; its reports are left to the caller."""
    test = job.test
    k, n = k_of_n
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

    expected = test.run.expected_seconds()
    because = f"{why}; " if why else ""
    on = f" on {host}" if host else ""
    live.line(f"test {k} of {n}{on}: {test.id_text()} ({because}about {expected:.0f}s)")
    for note in notes or []:
        sink(LogEntry(now(), ROOT_NODE_ID, lease.TAG, note))
    start = time.monotonic()
    status = "failed"
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
        meta.update(
            status=status,
            ended=datetime.now(UTC).isoformat(),
            duration_s=round(time.monotonic() - start, 3),
            errors=len(writer.errors),
        )
        if isinstance(launch, ReportsFacts):
            # Where each node ran and its clock offset, to correct one-way delays across hosts.
            meta["nodes"] = launch.take_facts()
        meta = redact.value(meta)
        write_meta(directory, meta)
        _RUNNING.pop(directory, None)
        live.line(f"test {k} of {n}{on}: {status} in {time.monotonic() - start:.1f}s")
    return _Ran(job, directory, meta, status)


def _write_index(directory: Path, jobs: list[Job], out: TextIO) -> None:
    try:
        spec = parse(IndexSpec, jobs[0].config.get("index") if jobs else None, "index")
        write_index(directory, spec)
    except Exception as e:  # an index problem must not lose the results being finished
        print(f"index.html not written: {type(e).__name__}: {e}", file=out)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds + 0.5), 60)
    return f"{m:02d}:{s:02d}"
