"""Commands on stored results: report, results, log, remove, server.

They register themselves with the CLI's ``command`` decorator; ``antler.cli``
imports this module when it starts.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import threading
from fnmatch import fnmatch
from pathlib import Path
from typing import TextIO

from antler.cli import command
from antler.results.store import (
    IN_PROGRESS,
    LATEST,
    FormatError,
    Invocation,
    ResultsError,
    _alive,
    _read_pid,
    write_meta,
)

DEFAULT_ROOT = "results"


def _root_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default=DEFAULT_ROOT, help="the results root folder (default: results)")


def _resolve(path: str | None, root: str) -> Path:
    """_resolve returns a result or test folder: path, or the root's latest."""
    target = Path(path) if path else Path(root) / LATEST
    if not target.exists():
        raise ResultsError(f"no results at {target}")
    return target


def result_folders(root: Path) -> list[Path]:
    """Result_folders lists the invocation folders under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="a result folder (default: ROOT/latest)")
    _root_arg(p)


@command("report", "re-run the after reports from stored data into a new result folder", _report_args)
def cmd_report(a: argparse.Namespace) -> int:
    """Cmd_report copies a result folder's data into a new folder and runs each test's after pipeline there."""
    src = _resolve(a.path, a.root).resolve()
    try:
        dst = report(src, Path(a.root))
    except FormatError as e:
        print(f"antler-ray: {e}", file=sys.stderr)
        return 2
    print(f"reports in {dst}")
    return 0


def report(src: Path, root: Path, out: TextIO | None = None) -> Path:
    """Report re-runs the after reports of the result folder src into a new folder under root.

    The source is never modified: its data files are hard-linked (or copied)
    into the new folder, leaving out what the after pipeline produces, which
    is then produced afresh from the stored data.
    """
    from antler.node.spec import parse
    from antler.report.index import write_index
    from antler.report.pipeline import after_of, report_outputs, run_after
    from antler.report.spec import IndexSpec
    from antler.results.load import load

    results = load(src)  # refuses newer formats before anything is created
    inv = Invocation(root)
    inv.begin()
    try:
        for key, test in results.items():
            after = after_of(test.meta)
            outputs = report_outputs(after) | {"index.html"}
            dst = inv.test_dir(key) if key != "." else inv.dir
            for f in sorted(test.path.rglob("*")):
                rel = f.relative_to(test.path)
                if f.is_dir() or any(fnmatch(rel.as_posix(), pat) for pat in outputs) or f.name.startswith("."):
                    continue
                # Folders of other tests nested in this one are their own tests.
                if any((test.path / part).joinpath("meta.json").exists() for part in _parents(rel)):
                    continue
                target = dst / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(f, target)
            meta = dict(test.meta)
            meta["reported_from"] = str(test.path)
            write_meta(dst, meta)
            errors = run_after(dst, after, sys.stdout if out is None else out)
            if errors:
                print(f"{key}: {len(errors)} report(s) failed", file=sys.stderr)
        config = next(iter(results.values())).meta.get("config", {}) if len(results) else {}
        write_index(inv.dir, parse(IndexSpec, (config or {}).get("index"), "index"))
    finally:
        final = inv.finish()
    return final


def _parents(rel: Path) -> list[Path]:
    return [p for p in rel.parents if str(p) != "."]


def _link_or_copy(src: Path, dst: Path) -> None:
    # Data files are immutable once written, so sharing them by hard link is safe and free.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


@command("results", "list result folders and their tests", _root_arg)
def cmd_results(a: argparse.Namespace) -> int:
    """Cmd_results prints each result folder with its tests and their status."""
    from antler.results.load import load

    root = Path(a.root)
    latest = os.readlink(root / LATEST) if (root / LATEST).is_symlink() else None
    folders = result_folders(root)
    if not folders:
        print(f"no results in {root}")
        return 0
    for folder in folders:
        mark = "  (latest)" if folder.name == latest else ""
        print(f"{folder.name}{mark}")
        try:
            results = load(folder)
        except (FormatError, OSError, ValueError) as e:
            print(f"  unreadable: {e}")
            continue
        for key, test in results.items():
            ident = " ".join(f"{k}={v}" for k, v in test.id.items())
            print(f"  {key}  {ident}  {test.meta.get('status', '?')}")
    return 0


def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", nargs="?", help="a result or test folder (default: ROOT/latest)")
    _root_arg(p)


@command("log", "print the log entries of stored results, sorted by time", _log_args)
def cmd_log(a: argparse.Namespace) -> int:
    """Cmd_log prints each test's log entries and errors."""
    from antler.report.logs import log_lines
    from antler.results.load import load

    results = load(_resolve(a.path, a.root))
    for key, test in results.items():
        if len(results) > 1:
            print(f"# {key}")
        for line in log_lines(test):
            print(line)
    return 0


def _remove_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the result folder's name, e.g. 2026-11-28-150415Z")
    p.add_argument("-n", "--dry-run", action="store_true", help="say what would be done, do nothing")
    _root_arg(p)


@command("remove", "remove a result folder (repointing latest)", _remove_args)
def cmd_remove(a: argparse.Namespace) -> int:
    """Cmd_remove deletes one result folder and points latest at the newest one left."""
    for line in remove(Path(a.root), a.name, a.dry_run):
        print(line)
    return 0


def remove(root: Path, name: str, dry_run: bool = False) -> list[str]:
    """Remove deletes root/name and repoints latest; returns what it did (or would do)."""
    if not name or "/" in name or name in (".", "..", LATEST):
        raise ResultsError(f"{name!r} is not a result folder name")
    target = root / name
    if not target.is_dir() or target.is_symlink():
        raise ResultsError(f"no result folder {target}")
    if name == IN_PROGRESS:
        pid = _read_pid(target / ".pid")
        if pid is not None and _alive(pid):
            raise ResultsError(f"{target} is in use by process {pid}")
    verb = "would remove" if dry_run else "removed"
    done = [f"{verb} {target}"]
    link = root / LATEST
    points_here = link.is_symlink() and os.readlink(link) == name
    rest = [p for p in result_folders(root) if p.name not in (name, IN_PROGRESS)]
    if not dry_run:
        shutil.rmtree(target)
    if points_here:
        if rest:
            done.append(f"{'would point' if dry_run else 'pointed'} {link} at {rest[-1].name}")
            if not dry_run:
                tmp = root / f".{LATEST}.{os.getpid()}"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(rest[-1].name)
                os.replace(tmp, link)
        else:
            done.append(f"{'would remove' if dry_run else 'removed'} {link}")
            if not dry_run:
                link.unlink()
    return done


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    p.add_argument("--bind", default="127.0.0.1", help="address to listen on (default: loopback only)")
    _root_arg(p)


def make_server(root: Path, bind: str = "127.0.0.1", port: int = 8080) -> http.server.ThreadingHTTPServer:
    """Make_server returns an HTTP server for the results folder (not yet serving)."""
    if not root.is_dir():
        raise ResultsError(f"no results folder {root}")
    handler = functools.partial(_QuietHandler, directory=str(root))
    return http.server.ThreadingHTTPServer((bind, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """_QuietHandler serves files, logging requests to stderr in one short line."""

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", file=sys.stderr)


@command("server", "serve the results folder over HTTP (loopback by default)", _server_args)
def cmd_server(a: argparse.Namespace) -> int:
    """Cmd_server serves the results folder until interrupted."""
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
    return 0
