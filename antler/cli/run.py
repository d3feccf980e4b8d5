"""The commands that run tests: ``run``, ``vet`` and ``list``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from antler.cli.registry import command
from antler.config.compose import Job, compose_jobs, experiments
from antler.config.parse import to_plain
from antler.node.launch import Launchers, ray_address


def _hydra_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--multirun", action="store_true", help="sweep: one test per combination of values")
    p.add_argument("--config-dir", "-cd", help="a folder with your own experiment/ configs")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=cubic cca=bbr")


@command("run", "run an experiment's tests", _hydra_args)
def cmd_run(a: argparse.Namespace) -> int:
    """Cmd_run runs the tests of an experiment (or a sweep) into a new result folder."""
    jobs = compose_jobs(a.overrides, a.multirun, a.config_dir)
    root = Path(str(jobs[0].config.get("results", {}).get("root_dir", "results")))
    launchers = Launchers(ray_address(jobs[0].config))
    try:
        run_jobs = _start(launchers, jobs)
        outcome = asyncio.run(run_jobs(jobs, root, launchers))
    finally:
        launchers.close()  # on this thread, like the ray.init it undoes
    where = outcome.result_dir
    if outcome.interrupted:
        print(f"interrupted; results so far in {where}", file=sys.stderr)
    elif outcome.failed:
        print(f"{len(outcome.failed)} of {len(jobs)} tests failed: {'; '.join(outcome.failed)}", file=sys.stderr)
        print(f"results in {where}", file=sys.stderr)
    else:
        print(f"{len(jobs)} test{'s' if len(jobs) != 1 else ''} passed; results in {where}")
    return outcome.exit_code


def _start(launchers: Launchers, jobs: list[Job]) -> Callable[..., Any]:
    """_Start connects to Ray if the tests need it while the runner's modules import; it returns run_jobs.

    Ray's start-up mostly waits on the processes it spawns, so the imports
    (pandas and the report pipeline, about half a second) cost nothing there.
    """
    warm = threading.Thread(target=_import_quietly, args=("antler.invoke",), name="warm-imports", daemon=True)
    warm.start()
    launchers.start(n for job in jobs for n in job.test.run.nodes())
    warm.join()
    from antler.invoke import run_jobs

    return run_jobs


def _import_quietly(module: str) -> None:
    # An import error surfaces again, with its traceback, where the module is used.
    with contextlib.suppress(BaseException):
        importlib.import_module(module)


@command("vet", "check an experiment's config and print its test trees", _hydra_args)
def cmd_vet(a: argparse.Namespace) -> int:
    """Cmd_vet validates every job and prints its resolved test tree; nothing runs."""
    jobs = compose_jobs(a.overrides, a.multirun, a.config_dir)
    for job in jobs:
        print(f"# test {job.test.id_text()}")
        print(yaml.safe_dump({"test": to_plain(job.test)}, sort_keys=False, allow_unicode=True), end="")
    print(f"# {len(jobs)} test{'s' if len(jobs) != 1 else ''} ok", file=sys.stderr)
    return 0


def _config_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config-dir", "-cd", help="a folder with your own experiment/ configs")


@command("list", "list the experiments available", _config_dir_arg)
def cmd_list(a: argparse.Namespace) -> int:
    """Cmd_list prints the experiment names."""
    for name in experiments(a.config_dir):
        print(name)
    return 0
