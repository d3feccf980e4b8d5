"""antler-ray: the command line.

``run`` and ``vet`` take Hydra overrides after their options, as
``antler-ray run -m +experiment=cubic cca=cubic,bbr``. Config errors end the
command with status 2 and a line naming the path and the problem; a failed
test ends it with status 1; an interrupt with 130.

Each subcommand module registers its commands with
:func:`antler.cli.registry.command`: tests in :mod:`antler.cli.run`, stored
results in :mod:`antler.cli.results` and :mod:`antler.cli.compare`, a starter project in :mod:`antler.cli.init`.
Nothing below this package imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from antler import exitcode
from antler.cli import compare, init, results, run
from antler.cli.registry import COMMANDS
from antler.node.hmac import take_env_key
from antler.node.launch import ClusterError
from antler.node.spec import ConfigError
from antler.results.store import ResultsError
from antler.terminal import Terminal, redirected

__all__ = ["compare", "init", "main", "results", "run"]

HELP_ORDER = ("run", "vet", "list", "init", "results", "compare", "log", "report", "remove", "server")
"""HELP_ORDER is the order the subcommands are listed in ``antler-ray --help``."""


def main(argv: list[str] | None = None) -> int:
    """Return the entry point of the antler-ray command; it returns the exit status."""
    parser = argparse.ArgumentParser(prog="antler-ray", description="Network and congestion-control tests on Ray.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in sorted(COMMANDS, key=lambda n: HELP_ORDER.index(n) if n in HELP_ORDER else len(HELP_ORDER)):
        help_, _, add_args = COMMANDS[name]
        add_args(sub.add_parser(name, help=help_, description=help_))
    a = parser.parse_args(argv)
    # Before Ray or any command starts: none of them inherits the HMAC key.
    take_env_key()
    # The terminal is not the test: whatever the command prints goes through
    # a queue that never blocks or raises (antler.terminal), so `| head -3`
    # or a stalled terminal changes nothing but what is shown.
    terminal = Terminal()
    with redirected(terminal):
        status = _dispatch(a)
    _quiet_broken(terminal)
    return status


def _dispatch(a: argparse.Namespace) -> int:
    try:
        return COMMANDS[a.command][1](a)
    except ConfigError as e:
        print(f"antler-ray: config error: {e}", file=sys.stderr)
        return exitcode.CONFIG
    except (ResultsError, ClusterError) as e:
        print(f"antler-ray: {e}", file=sys.stderr)
        return exitcode.CONFIG
    except KeyboardInterrupt:
        return exitcode.INTERRUPTED


def _quiet_broken(terminal: Terminal) -> None:
    """_Quiet_broken points a descriptor whose reader went away at /dev/null, so the interpreter's exit says nothing."""
    for fd in terminal.broken:
        if isinstance(fd, int):
            with contextlib.suppress(OSError):
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)


if __name__ == "__main__":
    sys.exit(main())
