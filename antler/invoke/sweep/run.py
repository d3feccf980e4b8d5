"""Running an invocation's tests: one after another, or placed on hosts and run at once.

A placed test runs wholly on one host (:mod:`.placement`, :mod:`.tree`),
at most ``per_host`` at a time on each; a host where a node was lost takes no
more tests. Each test's reports are made from its stored data as soon as it
ends, in the report worker while the next test runs.
"""

from __future__ import annotations

import asyncio
import sys

from tqdm import tqdm

from antler.config.compose import Job
from antler.invoke.live import Live, Progress
from antler.invoke.sweep.placement import DRIVER, Hosts, Needs, Placement, Queue, needs_of
from antler.invoke.sweep.tree import place
from antler.invoke.testdir import Ran, run_test
from antler.node.launch import Launchers, TestLaunch
from antler.node.root import Launch
from antler.report.expect import apply_expectations
from antler.report.pipeline import run_after
from antler.report.worker import ReportWorker
from antler.results.store import Invocation, write_meta


class Sweep:
    """Runs an invocation's tests: one at a time, or placed on hosts, at once."""

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
        self.ran = 0
        """ran counts the tests that ran (or were running at a Ctrl-C)."""
        self.failed: list[str] = []
        """failed names the tests that failed (or could not run), as ID text."""
        self.suspect: list[str] = []
        """suspect names the tests whose testbed health was suspect, with the reasons (antler.report.verdict)."""

    async def run(self, hosts: list[str], per_host: int, reports: list[asyncio.Task[None]]) -> None:
        """Start the queued tests as hosts have room until all have run; Ctrl-C stops every running test."""
        parallel = bool(hosts)
        cluster: set[str] = set()
        if parallel:
            assert isinstance(self.launch, Launchers)
            cluster = set(await asyncio.to_thread(self.launch.hosts))
        slots = Hosts(list(hosts) if parallel else [DRIVER], per_host if parallel else 1, cluster)
        queue: Queue[int] = Queue([(k, self._needs(k, parallel)) for k in range(len(self.jobs))])
        self.progress.capacity = slots.capacity()
        active: dict[asyncio.Task[Ran], Placement] = {}
        ticker = asyncio.ensure_future(self._tick())
        try:
            while queue or active:
                for k, placement in queue.start(slots):
                    active[asyncio.ensure_future(self._test(k, placement, parallel))] = placement
                if not active:
                    # Nothing runs and nothing could start: every host of the sweep was lost.
                    gone = queue.drop(slots.runnable) or [k for k, _ in queue.items]
                    for k in gone:
                        self.failed.append(f"{self.jobs[k].test.id_text()} (not run: every host was lost)")
                    queue.items = [(k, n) for k, n in queue.items if k not in gone]
                    continue
                done, _ = await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    slots.release(active.pop(task))
                    ran = task.result()
                    self.ran += 1
                    if not ran.ok:
                        self.failed.append(ran.job.test.id_text())
                    health = ran.meta.get("health") or {}
                    if health.get("status") == "suspect":
                        reasons = [r["text"] for r in health.get("reasons", [])] or ["?"]
                        more = f" and {len(reasons) - 1} more" if len(reasons) > 1 else ""
                        self.suspect.append(f"{ran.job.test.id_text()}: {reasons[0]}{more}")
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
            self.ran += len(results)
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

    async def _test(self, k: int, placement: Placement, parallel: bool) -> Ran:
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
            ran = await run_test(
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

    async def _reports(self, ran: Ran) -> None:
        """_Reports runs a test's after pipeline from its stored data, exactly as `antler-ray report` does later."""
        if self.worker is not None:
            errors = await self.worker.run_after(ran.directory, ran.job.test.after, self.live.out)
        else:
            errors = await asyncio.to_thread(run_after, ran.directory, ran.job.test.after, self.live.out)
        if errors:
            ran.meta["report_errors"] = errors
            write_meta(ran.directory, ran.meta)
        # test.expect: a failed expectation fails the test (meta.json says which), and so the command.
        unmet = await asyncio.to_thread(apply_expectations, ran.directory, ran.meta)
        if unmet:
            self.live.line(f"{ran.job.test.id_text()}: expectation failed: {'; '.join(unmet)}")
        if unmet and ran.ok:
            self.failed.append(f"{ran.job.test.id_text()} (expected {'; '.join(unmet)})")

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
