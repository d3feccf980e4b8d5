"""Running an invocation: its tests into one result folder, linked or run, with the live output.

:func:`run_jobs` is the whole invocation: the tests an incremental run can
keep are linked, the others run (:mod:`~antler.invoke.sweep`), each into its
folder (:mod:`~antler.invoke.testdir`), with the output of
:mod:`~antler.invoke.live`; then the reports, the index page and the
folder's final name. :func:`exit_now` is a second Ctrl-C's way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from antler import exitcode
from antler.config.compose import Job
from antler.invoke.calibrate import calibrate_jobs
from antler.invoke.live import Live
from antler.invoke.sweep import Sweep
from antler.invoke.testdir import interrupt_running, link_test
from antler.node.launch import Launchers
from antler.node.root import Launch
from antler.node.shield import shielded
from antler.report.index import write_index
from antler.report.spec import IndexSpec
from antler.report.worker import ReportWorker
from antler.results.incremental import Action, Decision, Plan
from antler.results.store import Invocation


@dataclass
class Outcome:
    """How an invocation ended: its folder, the tests it ran and linked, those that failed."""

    result_dir: Path | None = None
    ran: int = 0
    linked: int = 0
    failed: list[str] = field(default_factory=list)
    suspect: list[str] = field(default_factory=list)
    """suspect names the tests run whose testbed health was suspect, each with its reasons."""
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        """The command's exit status for this outcome."""
        if self.interrupted:
            return exitcode.INTERRUPTED
        return exitcode.FAILED if self.failed else exitcode.OK


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
    """Link and run the jobs' tests into one new result folder, as the plan says.

    The tests the plan links are linked first (it takes milliseconds), so a
    run stopped part-way leaves a folder the next run can resume from. Then
    the others run: one after another, or, with ``hosts`` (sweep.hosts,
    resolved), at once across those hosts, at most per_host at a time on each,
    each test wholly on one (antler.invoke.sweep); ``launch``
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
        launch = own = Launchers(jobs[0].root.ray.address if jobs else None)
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
            await link_test(inv, d, by_path[d.path], plan, live)
            outcome.linked += 1
        if runs and not hosts:
            # Before the first test: does the rig deliver what it is asked for (antler.invoke.calibrate)?
            await calibrate_jobs([by_path[d.path] for d in runs], inv.dir, launch, live)
        sweep = Sweep(inv, [by_path[d.path] for d in runs], [d.reason for d in runs], launch, live, worker)
        sweep.notes = list(notes or [])
        try:
            await sweep.run(hosts or [], per_host, reports)
        finally:
            outcome.ran, outcome.failed, outcome.suspect = sweep.ran, sweep.failed, sweep.suspect
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


def exit_now() -> list[str]:
    """Mark this process's running tests interrupted and finishes their folders, at once.

    For a second Ctrl-C (antler.cli.interrupt), which exits without waiting
    for the tests' cleanup: each running test's buffered rows are written
    (if its writer is free within half a second), its meta.json says
    ``interrupted``, and the invocation's folder gets its dated name, tables
    still as Arrow streams (antler.results.load reads them). It returns a line
    for each folder.
    """
    interrupt_running()
    lines = []
    for inv in list(_INVOCATIONS):
        final = inv.finish()
        lines.append(f"results so far in {final}")
    return lines


def _write_index(directory: Path, jobs: list[Job], out: TextIO) -> None:
    try:
        write_index(directory, jobs[0].root.index if jobs else IndexSpec())
    except Exception as e:  # an index problem must not lose the results being finished
        print(f"index.html not written: {type(e).__name__}: {e}", file=out)
