"""antler-ray: the command line.

``run`` and ``vet`` take Hydra overrides after their options, as
``antler-ray run -m +experiment=cubic cca=cubic,bbr``. Config errors end the
command with status 2 and a line naming the path and the problem; a failed
test ends it with status 1; an interrupt with 130.
"""

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

from antler import exitcode
from antler.config.compose import Job, compose_jobs, experiments
from antler.node.launch import Launchers, ray_address
from antler.node.spec import ConfigError, to_plain
from antler.results.store import ResultsError

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None]]] = {}


def command(
    name: str, help_: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None
) -> Callable[[Command], Command]:
    """Command registers a subcommand."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_, fn, args)
        return fn

    return register


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


def main(argv: list[str] | None = None) -> int:
    """Main is the entry point of the antler-ray command."""
    _load_commands()
    parser = argparse.ArgumentParser(prog="antler-ray", description="Network and congestion-control tests on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_, _, add_args) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    a = parser.parse_args(argv)
    try:
        return COMMANDS[a.command][1](a)
    except ConfigError as e:
        print(f"antler-ray: config error: {e}", file=sys.stderr)
        return exitcode.CONFIG
    except ResultsError as e:
        print(f"antler-ray: {e}", file=sys.stderr)
        return exitcode.CONFIG
    except KeyboardInterrupt:
        return exitcode.INTERRUPTED


def _load_commands() -> None:
    # Commands of other layers (report, results, ...) register themselves here.
    for module in ("antler.results.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


if __name__ == "__main__":
    sys.exit(main())
