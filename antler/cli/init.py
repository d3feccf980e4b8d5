"""The ``init`` command: a small project of the user's own experiments to start from."""

from __future__ import annotations

import argparse
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from antler import exitcode
from antler.cli.registry import command
from antler.results.store import ResultsError

STARTER = "starter"
"""STARTER is the package folder (antler/starter) whose files init copies."""


def _init_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default=".", help="the folder to write into (default: here); made if missing")


@command("init", "write a small project to edit: experiment/ with two examples and a README", _init_args)
def cmd_init(a: argparse.Namespace) -> int:
    """Copy the starter project into a folder, keeping every file that exists there already."""
    for line in init(Path(a.dir)):
        print(line)
    cd = "" if Path(a.dir) == Path() else f"cd {a.dir} && "
    print(f"next: {cd}antler-ray run --config-dir . +experiment=first")
    return exitcode.OK


def init(target: Path) -> list[str]:
    """Write the starter files under target and return what it did, one line per file.

    A file that exists is kept as it is, never overwritten. Raises
    ResultsError when target exists and is not a folder.
    """
    if target.exists() and not target.is_dir():
        raise ResultsError(f"{target} exists and is not a folder")
    done = []
    for rel, source in _files(resources.files("antler") / STARTER, Path()):
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dst, "xb") as f:  # "x": never overwrite what the user has
                f.write(source.read_bytes())
        except FileExistsError:
            done.append(f"kept {dst} (it exists)")
            continue
        done.append(f"wrote {dst}")
    return done


def _files(folder: Traversable, rel: Path) -> list[tuple[Path, Traversable]]:
    out: list[tuple[Path, Traversable]] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith((".", "__")):
            continue
        if entry.is_dir():
            out += _files(entry, rel / entry.name)
        else:
            out.append((rel / entry.name, entry))
    return out
