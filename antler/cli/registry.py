"""The registry of subcommands: each command module registers its commands here."""

from __future__ import annotations

import argparse
from collections.abc import Callable

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None]]] = {}


def command(
    name: str, help_: str, args: Callable[[argparse.ArgumentParser], None] = lambda p: None
) -> Callable[[Command], Command]:
    """Register a subcommand: its name, help line and argument set-up."""

    def register(fn: Command) -> Command:
        COMMANDS[name] = (help_, fn, args)
        return fn

    return register
