"""antler-ray: the command line.

``run`` and ``vet`` take Hydra overrides after their options, as
``antler-ray run -m +experiment=cubic cca=cubic,bbr``. Config errors end the
command with status 2 and a line naming the path and the problem; a failed
test ends it with status 1; an interrupt with 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from antler.config.compose import compose_jobs, experiments
from antler.invoke import EXIT_CONFIG, run_jobs
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
    outcome = asyncio.run(run_jobs(jobs, root))
    where = outcome.result_dir
    if outcome.interrupted:
        print(f"interrupted; results so far in {where}", file=sys.stderr)
    elif outcome.failed:
        print(f"{len(outcome.failed)} of {len(jobs)} tests failed: {'; '.join(outcome.failed)}", file=sys.stderr)
        print(f"results in {where}", file=sys.stderr)
    else:
        print(f"{len(jobs)} test{'s' if len(jobs) != 1 else ''} passed; results in {where}")
    return outcome.exit_code


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
        return EXIT_CONFIG
    except ResultsError as e:
        print(f"antler-ray: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _load_commands() -> None:
    # Commands of other layers (report, results, ...) register themselves here.
    import importlib

    for module in ("antler.results.commands",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise


if __name__ == "__main__":
    sys.exit(main())
