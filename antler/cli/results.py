"""The commands on stored results: ``results``, ``log``, ``report``, ``remove`` and ``server``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

from antler import exitcode
from antler.cli.registry import command
from antler.results.store import LATEST, FormatError, ResultsError, remove, result_folders

DEFAULT_ROOT = "results"


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT, help="the results root folder (default: results)")


def _resolve(path: str | None, root: str) -> Path:
    """_resolve returns a result or test folder: path, or the root's latest."""
    target = Path(path) if path else Path(root) / LATEST
    if not target.exists():
        raise ResultsError(f"no results at {target}")
    return target


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="a result folder (default: ROOT/latest)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="index.KEY=VALUE",
        help="change the comparison page's settings, e.g. index.x=rig_limit",
    )
    _root_arg(p)


@command("report", "re-run the after reports from stored data into a new result folder", _report_args)
def cmd_report(a: argparse.Namespace) -> int:
    """Copy a result folder's data into a new folder and run each test's after pipeline there."""
    from antler.node.spec import ConfigError
    from antler.report.rerun import report

    path, overrides = a.path, list(a.overrides)
    if path is not None and "=" in path and not Path(path).exists():
        path, overrides = None, [path, *overrides]  # `report index.x=rig_limit`: the latest results
    src = _resolve(path, a.root).resolve()
    try:
        dst = report(src, Path(a.root), overrides=overrides)
    except (FormatError, ConfigError) as e:
        print(f"antler-ray: {e}", file=sys.stderr)
        return exitcode.CONFIG
    print(f"reports in {dst}")
    return exitcode.OK


def _results_args(p: argparse.ArgumentParser) -> None:
    _root_arg(p)
    p.add_argument(
        "--provenance", action="store_true", help="print each test's provenance (versions, kernel, CPU, rig) too"
    )


@command("results", "list result folders and their tests", _results_args)
def cmd_results(a: argparse.Namespace) -> int:
    """Print each result folder with its tests, their status and health (and provenance, if asked)."""
    from antler.invoke.provenance import short
    from antler.results.tables import load

    root = Path(a.root)
    latest = os.readlink(root / LATEST) if (root / LATEST).is_symlink() else None
    folders = result_folders(root)
    if not folders:
        print(f"no results in {root}")
        return exitcode.OK
    for folder in folders:
        mark = "  (latest)" if folder.name == latest else ""
        print(f"{folder.name}{mark}")
        try:
            results = load(folder)
        except (FormatError, OSError, ValueError) as e:
            print(f"  unreadable: {e}")
            continue
        for key, test in results.items():
            health = (test.meta.get("health") or {}).get("status")
            shown = f"  health {health}" if health else ""
            print(f"  {key}  {test.id_text}  {test.meta.get('status', '?')}{shown}{_linked(test.meta)}")
            if a.provenance:
                prov = test.meta.get("provenance")
                print(f"    provenance: {short(prov) if prov else 'not recorded (made before antler-ray recorded it)'}")
                for reason in (test.meta.get("health") or {}).get("reasons", []):
                    print(f"    suspect: {reason.get('text', '')}")
    return exitcode.OK


def _linked(meta: dict[str, Any]) -> str:
    """_Linked says where a linked test's data came from (antler.results.incremental), or nothing."""
    source = meta.get("linked_from")
    if not source:
        return ""
    ran_in = meta.get("ran_in")
    return f"  linked from {source}" + (f" (ran in {ran_in})" if ran_in and ran_in != source else "")


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="a result or test folder (default: ROOT/latest)")
    _root_arg(p)


@command("log", "print the log entries of stored results, sorted by time", _log_args)
def cmd_log(a: argparse.Namespace) -> int:
    """Print each test's log entries and errors."""
    from antler.report.logs import log_lines
    from antler.results.tables import load

    results = load(_resolve(a.path, a.root))
    for key, test in results.items():
        if len(results) > 1:
            print(f"# {key}")
        for line in log_lines(test):
            print(line)
    return exitcode.OK


def _remove_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the result folder's name, e.g. 2026-11-28-150415Z")
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would be done, do nothing")
    _root_arg(p)


@command("remove", "remove a result folder (repointing latest)", _remove_args)
def cmd_remove(a: argparse.Namespace) -> int:
    """Delete one result folder and point latest at the newest one left."""
    for line in remove(Path(a.root), a.name, a.dry_run):
        print(line)
    return exitcode.OK


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: loopback only)")
    _root_arg(p)


@command("server", "serve the results folder over HTTP (loopback by default)", _server_args)
def cmd_server(a: argparse.Namespace) -> int:
    """Serve the results folder until interrupted."""
    from antler.results.server import make_server

    server = make_server(Path(a.root), a.bind, a.port)
    host, port = server.server_address[:2]
    print(f"serving {a.root} on http://{host!s}:{port}/ (Ctrl-C stops)", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    return exitcode.OK
