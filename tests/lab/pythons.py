"""Interpreters a fresh host has: a Python with nothing but its standard library, and one too old for a node.

A node process (a local or SSH node) must run on a host's own ``python3``
(3.9 or newer) without any third-party package, so the tests run it on one:
:func:`bare_python` finds an interpreter at least that old that has no
numpy, pyarrow or paramiko (``ANTLER_TEST_BARE_PYTHON`` names one; else the
pyenv builds and the system ``python3`` are tried), and :func:`old_python`
one older than the node accepts. Each is started with ``-I`` (isolated: no
``PYTHONPATH``, no user site), so it sees only what a fresh machine's would.
"""

from __future__ import annotations

import functools
import glob
import os
import subprocess

import pytest

NODE_PYTHON = (3, 9)
"""NODE_PYTHON is the oldest Python a node runs on (antler.node.launch.zipapp.NODE_PYTHON)."""
THIRD_PARTY = ("numpy", "pyarrow", "paramiko", "ray")
"""THIRD_PARTY are the packages a bare interpreter must not have (the driver's dependencies)."""

_PROBE = (
    "import sys, importlib.util as u; "
    f"print('%d.%d' % sys.version_info[:2], *[m for m in {THIRD_PARTY!r} if u.find_spec(m)])"
)


def _candidates() -> list[str]:
    named = os.environ.get("ANTLER_TEST_BARE_PYTHON", "")
    found = [named] if named else []
    found += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")))
    found += sorted(glob.glob("/root/.pyenv/versions/3.*/bin/python3"))
    return [*found, "/usr/bin/python3"]


@functools.cache
def probe(path: str) -> tuple[tuple[int, int], tuple[str, ...]] | None:
    """Return an interpreter's version and the third-party packages it finds, or None if it does not run."""
    try:
        out = subprocess.run([path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    version, *packages = out.stdout.split()
    major, minor = version.split(".")
    return (int(major), int(minor)), tuple(packages)


def find_bare_python() -> str | None:
    """Return the command of the oldest package-free Python >= 3.9 found (``PATH -I``), or None."""
    found = [(got[0], p) for p in dict.fromkeys(_candidates()) if (got := probe(p)) and not got[1]]
    fits = sorted((version, p) for version, p in found if version >= NODE_PYTHON)
    return f"{fits[0][1]} -I" if fits else None


def bare_python() -> str:
    """Return the command of the oldest package-free Python >= 3.9 (``PATH -I``).

    Skips the calling test, saying why, when this machine has none.
    """
    found = find_bare_python()
    if found is None:
        pytest.skip(f"no Python >= 3.9 without {', '.join(THIRD_PARTY)} here (set ANTLER_TEST_BARE_PYTHON)")
    return found


def python_version(command: str) -> str:
    """Return the version (``3.9``) of a command bare_python or old_python returned."""
    got = probe(command.split()[0])
    assert got is not None
    return "{}.{}".format(*got[0])


def old_python() -> str:
    """Return the path of a package-free Python older than 3.9; skips the calling test when there is none."""
    path = next((p for p in dict.fromkeys(_candidates()) if (got := probe(p)) and got[0] < NODE_PYTHON), None)
    if path is None:
        pytest.skip("no Python older than 3.9 here to show a host whose python3 is too old")
    return path
