"""The commands that run tests: ``run``, ``vet`` and ``list``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from antler import exitcode
from antler.cli.interrupt import Interrupts
from antler.cli.registry import command
from antler.config.compose import Job, compose_jobs, experiments
from antler.node import lease
from antler.node.launch import Launchers
from antler.node.launch.reclaim import reclaim_left, release_invocation
from antler.node.spec import ConfigError, to_plain
from antler.results.incremental import Action, Plan, Wanted, plan
from antler.results.store import IN_PROGRESS, ResultsError, owner
from antler.testid import IdFilter

FILTER_HELP = (
    "run only the tests whose ID matches (repeatable, all must match): KEY=REGEX for one ID key, "
    "or REGEX for any ID value; regexes match anywhere (anchor with ^$). The others are linked from "
    "the latest results when they are there, else skipped"
)


def _hydra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--multirun", action="store_true", help="sweep: one test per combination of values")
    p.add_argument("--config-dir", "-cd", help="a folder with your own experiment/ configs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=cubic cca=bbr")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-a", "--all", action="store_true", help="run every test, even those that passed before")
    p.add_argument("--filter", action="append", default=[], metavar="[KEY=]REGEX", help=FILTER_HELP)
    p.add_argument("--root", help="the results root folder, as the other commands name it (= results.root_dir=DIR)")
    _hydra_args(p)


def _overrides(a: argparse.Namespace) -> list[str]:
    """_Overrides returns the command's Hydra overrides, ``--root DIR`` as ``results.root_dir=DIR``.

    One name for the result root on every command (issue 30); ConfigError
    when both are given and differ.
    """
    if not a.root:
        return list(a.overrides)
    given = [o.split("=", 1)[1] for o in a.overrides if o.lstrip("+").startswith("results.root_dir=")]
    if any(g != a.root for g in given):
        raise ConfigError("--root", f"{a.root!r} and results.root_dir={given[0]} name two result roots: give one")
    return [*a.overrides, f"results.root_dir={a.root}"] if not given else list(a.overrides)


@command("run", "run an experiment's tests (only those new, failed or changed since the latest results)", _run_args)
def cmd_run(a: argparse.Namespace) -> int:
    """Run the tests of an experiment (or a sweep) that need running into a new result folder.

    Tests that passed in the latest results with the same ``test`` config are
    linked there instead of run (antler.results.incremental); when nothing
    needs doing, nothing is written and latest stays as it is.
    """
    jobs = compose_jobs(_overrides(a), a.multirun, a.config_dir)
    _check_kernel(jobs)  # before anything is built
    root = Path(jobs[0].root.results.root_dir)
    sweep, ray_address = jobs[0].root.sweep, jobs[0].root.ray.address
    if sweep.enabled and not (ray_address or os.environ.get("RAY_ADDRESS")):
        # The embedded Ray has no hosts: say so before starting it (6 s).
        raise ConfigError("sweep.hosts", "needs a Ray cluster to place tests on: set ray.address=HEAD:PORT")
    plan = _plan(jobs, root, a)
    busy = owner(root / IN_PROGRESS)
    if busy is not None:
        raise ResultsError(f"{root / IN_PROGRESS} is in use by process {busy}; wait for it or stop it")
    for d in plan.decisions:
        print(d.line(), flush=True)
    if plan.nothing_to_do:
        print(f"nothing to run: every test passed in {plan.prior} with the same test config (-a runs them again)")
        return exitcode.OK
    running = [j for j in jobs if j.test.output_path() in {d.path for d in plan.of(Action.RUN)}]
    # The processes this command starts (Ray's among them) know it: what they
    # lease names it, so what it leaves is reclaimed once it is gone.
    me = lease.begin_invocation()
    # What killed runs left on this host goes before anything starts; the first test's log says what it was.
    notes = reclaim_left()
    # Reusing node actors saves each test of a sweep Ray's worker start (1-2 s).
    launchers = Launchers(ray_address, reuse=len(running) > 1)
    with Interrupts(lambda: _exit_now(me)) as interrupts:
        try:
            run_jobs = _start(launchers, running, sweep.enabled)
            hosts = sweep.resolve(launchers.hosts()) if sweep.enabled else None
            outcome = interrupts.run(
                run_jobs(jobs, root, launchers, plan=plan, hosts=hosts, per_host=sweep.per_host, notes=notes)
            )
        finally:
            launchers.close()  # on this thread, like the ray.init it undoes
    where = outcome.result_dir
    counts = f"ran {outcome.ran} of {len(jobs)} tests, linked {outcome.linked}"
    # The testbed's verdict (antler.report.verdict): a suspect run may have measured the host, not the path.
    health = f", {len(outcome.suspect)} suspect ({'; '.join(outcome.suspect)})" if outcome.suspect else ""
    healthy = ", all healthy" if outcome.ran and not outcome.suspect else ""
    if outcome.interrupted:
        print(f"interrupted ({counts}{health}); results so far in {where}", file=sys.stderr)
    elif outcome.failed:
        print(f"{len(outcome.failed)} of {outcome.ran} tests run failed: {'; '.join(outcome.failed)}", file=sys.stderr)
        print(f"{counts}{health}; results in {where}", file=sys.stderr)
    else:
        print(f"{counts}, all passed{healthy}{health}; results in {where}")
    return outcome.exit_code


def _exit_now(me: lease.Proc) -> list[str]:
    """_Exit_now is what a second Ctrl-C does before the command exits: finish the folder, remove this host's leftovers."""
    from antler.invoke import exit_now

    return [*exit_now(), *release_invocation(me)]


def _plan(jobs: list[Job], root: Path, a: argparse.Namespace) -> Plan:
    """_Plan decides which tests run and which are linked, raising ConfigError for a bad filter."""
    if a.all and a.filter:
        raise ConfigError("--filter", "-a/--all runs every test: give one or the other")
    try:
        selected = IdFilter(a.filter)
    except ValueError as e:
        raise ConfigError("--filter", str(e)) from None
    if selected and not any(selected.accepts(j.test.id) for j in jobs):
        ids = "; ".join(j.test.id_text() for j in jobs[:5]) + ("; ..." if len(jobs) > 5 else "")
        raise ConfigError("--filter", f"{selected!s} selects none of the {len(jobs)} tests ({ids})")
    return plan([Wanted(j.test.output_path(), j.test.id, j.config) for j in jobs], root, a.all, selected)


def _start(launchers: Launchers, jobs: list[Job], ray: bool = False) -> Callable[..., Any]:
    """_Start connects to Ray if the tests need it while the runner's modules import; it returns run_jobs.

    Ray's start-up mostly waits on the processes it spawns, so the imports
    (pandas and the report pipeline, about half a second) cost nothing there.
    """
    warm = threading.Thread(target=_import_quietly, args=("antler.invoke",), name="warm-imports", daemon=True)
    warm.start()
    if ray:
        launchers.connect()
    else:
        launchers.start(n for job in jobs for n in job.test.run.nodes())
    warm.join()
    from antler.invoke import run_jobs

    return run_jobs


def _import_quietly(module: str) -> None:
    # An import error surfaces again, with its traceback, where the module is used.
    with contextlib.suppress(BaseException):
        importlib.import_module(module)


@command("vet", "check an experiment's config, print its test trees and what run would run or link", _run_args)
def cmd_vet(a: argparse.Namespace) -> int:
    """Validate every job, print its resolved test tree, then the plan of ``run``; nothing runs."""
    jobs = compose_jobs(_overrides(a), a.multirun, a.config_dir)
    root = Path(jobs[0].root.results.root_dir)
    notes = _check_kernel(jobs)
    for job in jobs:
        print(f"# test {job.test.id_text()}")
        print(yaml.safe_dump({"test": to_plain(job.test)}, sort_keys=False, allow_unicode=True), end="")
    the_plan = _plan(jobs, root, a)
    print("# what `run` with these arguments would do:")
    for d in the_plan.decisions:
        print(f"# {d.line()}")
    for note in notes:
        print(f"# {note}")
    print(f"# {len(jobs)} test{'s' if len(jobs) != 1 else ''} ok; {the_plan.summary()}", file=sys.stderr)
    return 0


def _check_kernel(jobs: list[Job]) -> list[str]:
    """_Check_kernel checks each job's CCAs against this host's kernel (ConfigError), returning what it could not check."""
    from antler.config.kernel import check_ccas

    if jobs and jobs[0].root.sweep.enabled:
        return ["congestion controls not checked here: the tests run on the sweep.hosts, which run checks"]
    notes: dict[str, None] = {}
    for job in jobs:
        for note in check_ccas(job.test.run):
            notes.setdefault(f"{job.test.id_text()}: {note}", None)
    return list(notes)


def _config_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", "-cd", help="a folder with your own experiment/ configs")


@command("list", "list the experiments available", _config_dir_arg)
def cmd_list(a: argparse.Namespace) -> int:
    """Print the experiment names."""
    for name in experiments(a.config_dir):
        print(name)
    return 0
