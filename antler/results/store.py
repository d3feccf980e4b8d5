"""Writing results: the invocation folder and each test's files.

Data is written while the test runs: each table first goes to an Arrow IPC
stream file (``<kind>.arrows``), flushed batch by batch, which stays readable
up to its last whole batch even if the process is killed; when the test ends
each stream becomes ``<kind>.parquet``. Nothing already written is ever
overwritten: a test folder that exists is an error, and a finished invocation
folder whose name is taken gets a suffix. A test another folder already holds
is shared by hard links (``link_tree``), never copied or changed.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from antler.node import lease
from antler.node.items import (
    Batch,
    Error,
    FileData,
    FlowStatus,
    Item,
    LogEntry,
    PacketInfo,
    StreamInfo,
    SysInfo,
    info_row,
)
from antler.node.schemas import SCHEMAS

RESULT_FORMAT_VERSION = 2
"""RESULT_FORMAT_VERSION is the version of the result files this code writes (tables: antler.node.schemas).

A reader refuses a newer version and upgrades an older one on load (antler.results.tables.upgrade).
Format 2 added packet_io's ``tos`` column (the marking each packet was sent or received with), the
flow_status table, and flows.parquet's per-direction loss and ``status``/``error`` columns.
"""

IN_PROGRESS = "in-progress"
LATEST = "latest"
STAMP_FORMAT = "%Y-%m-%d-%H%M%SZ"
DEPENDENCIES = ("ray", "pyarrow", "pandas", "pyroute2", "paramiko", "hydra-core", "omegaconf")


class ResultsError(Exception):
    """A result folder that cannot be written as asked."""


class FormatError(ResultsError):
    """A result folder this code cannot read."""


def versions() -> dict[str, str]:
    """Return the versions of this package, Python and the dependencies."""
    out = {"python": platform.python_version()}
    for name in ("antler-ray", *DEPENDENCIES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def host_facts() -> dict[str, str]:
    """Return the kernel and host of the machine writing the results."""
    u = platform.uname()
    return {"hostname": u.node, "kernel": f"{u.system} {u.release}", "kernel_version": u.version, "machine": u.machine}


class Invocation:
    """One run of the command: ``in-progress/`` until finish moves it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started = datetime.now(UTC)
        self.dir = root / IN_PROGRESS
        self.final: Path | None = None

    def begin(self) -> Path | None:
        """Create in-progress, recovering one left by a dead process; it returns where that one went.

        Raises ResultsError when a live process is writing in-progress.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        recovered = None
        if self.dir.exists():
            pid = owner(self.dir)
            if pid is not None:
                raise ResultsError(f"{self.dir} is in use by process {pid}; wait for it or stop it")
            # A run that died left its folder: keep its data under its own name,
            # its tables as the Arrow streams it was writing (load reads them).
            stale = datetime.fromtimestamp(self.dir.stat().st_mtime, UTC)
            _mark_killed(self.dir)
            recovered = self._move(self.dir, stale.strftime(STAMP_FORMAT) + "-interrupted")
        self.dir.mkdir()
        # The PID and its start time: a later process with the same PID is not the writer.
        (self.dir / ".pid").write_text(f"{os.getpid()} {lease.start_ticks(os.getpid())}")
        return recovered

    def test_dir(self, sub: str) -> Path:
        """Create and return a new test folder, raising ResultsError if it exists (nothing is overwritten)."""
        d = self.dir / sub
        if d.exists():
            raise ResultsError(f"test folder {sub!r} already exists: two tests have the same ID or path")
        d.mkdir(parents=True)
        return d

    def finish(self) -> Path:
        """Move in-progress to its UTC time stamp and point latest at it."""
        (self.dir / ".pid").unlink(missing_ok=True)
        self.final = self._move(self.dir, self.started.strftime(STAMP_FORMAT))
        point_latest(self.root, self.final.name)
        return self.final

    def _move(self, src: Path, name: str) -> Path:
        dst = self.root / name
        n = 1
        while dst.exists() or dst.is_symlink():
            dst = self.root / f"{name}-{n}"
            n += 1
        os.rename(src, dst)
        return dst


def _mark_killed(directory: Path) -> None:
    """_Mark_killed marks each test of a dead run's folder that was still running as interrupted."""
    pid = (directory / ".pid").read_text().split()[0] if (directory / ".pid").exists() else "?"
    for path in directory.rglob("meta.json"):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("status") == "running":
            meta.update(status="interrupted", killed=f"process {pid} ended without finishing the test")
            write_meta(path.parent, meta)


def owner(directory: Path) -> int | None:
    """Return the PID of the live process writing an in-progress folder, or None if its writer is gone.

    A writer killed a moment ago (a zombie, or a process of that PID started
    since) counts as gone.
    """
    try:
        words = (directory / ".pid").read_text().split()
        pid = int(words[0])
        start = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
    except (OSError, ValueError, IndexError):
        return None
    now = lease.start_ticks(pid)
    if now is None or lease.state_of(pid) in ("Z", "X") or (start is not None and now != start):
        return None
    return pid


def point_latest(root: Path, name: str) -> None:
    """Make ``root/latest`` a link to the result folder name, atomically."""
    tmp = root / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name)
    os.replace(tmp, root / LATEST)


def result_folders(root: Path) -> list[Path]:
    """List the invocation folders under root, oldest first (their names sort by time)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))


def remove(root: Path, name: str, dry_run: bool = False) -> list[str]:
    """Delete the result folder root/name and repoints latest; it returns what it did (or would do).

    Raises ResultsError for a name that is not a result folder, or an
    in-progress folder whose writer is alive.
    """
    if not name or "/" in name or name in (".", "..", LATEST):
        raise ResultsError(f"{name!r} is not a result folder name")
    target = root / name
    if not target.is_dir() or target.is_symlink():
        raise ResultsError(f"no result folder {target}")
    if name == IN_PROGRESS:
        pid = owner(target)
        if pid is not None:
            raise ResultsError(f"{target} is in use by process {pid}")
    verb = "would remove" if dry_run else "removed"
    done = [f"{verb} {target}"]
    shared = sum(1 for f in target.rglob("*") if f.is_file() and not f.is_symlink() and f.stat().st_nlink > 1)
    if shared:
        # A hard link's data lives while any name for it does: the other
        # result folders that linked these tests keep them readable.
        done.append(f"{shared} of its files are hard-linked from other result folders, which keep them")
    link = root / LATEST
    points_here = link.is_symlink() and os.readlink(link) == name
    rest = [p for p in result_folders(root) if p.name not in (name, IN_PROGRESS)]
    if not dry_run:
        shutil.rmtree(target)
    if points_here:
        if rest:
            done.append(f"{'would point' if dry_run else 'pointed'} {link} at {rest[-1].name}")
            if not dry_run:
                point_latest(root, rest[-1].name)
        else:
            done.append(f"{'would remove' if dry_run else 'removed'} {link}")
            if not dry_run:
                link.unlink()
    return done


class TestWriter:
    """Writes one test's items into its folder as they arrive.

    ``write`` is thread-safe: it is the sink for every node of the test.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self._lock = threading.Lock()
        self._rows: dict[str, list[dict[str, Any]]] = {}
        self._streams: dict[str, ipc.RecordBatchStreamWriter] = {}
        self._files: dict[str, Any] = {}
        self._last_flush = time.monotonic()
        self.errors: list[Error] = []
        self.write_errors: list[str] = []
        """write_errors say what could not be written (a full disk, a read-only folder): the test then failed."""
        self.closed = False

    def _failed(self, what: str, e: OSError) -> None:
        """_failed records a write error once per thing written (a full disk fails every later write too)."""
        message = f"writing {what}: {e.strerror or e}"
        if not any(m.startswith(f"writing {what}:") for m in self.write_errors):
            self.write_errors.append(message)

    def write(self, item: Item) -> None:
        """Store one item; a write the system refuses is kept in ``write_errors``, never raised into the sink."""
        with self._lock:
            try:
                self._write(item)
            except OSError as e:
                self._failed(_kind_of(item), e)

    def _write(self, item: Item) -> None:
        """_write stores one item (the lock held); OSError when the system refuses the write."""
        if isinstance(item, Batch):
            self._stream(item.kind).write_batch(item.batch)
        elif isinstance(item, (LogEntry, Error, StreamInfo, PacketInfo, FlowStatus)):
            kind, row = info_row(item)
            self._rows.setdefault(kind, []).append(row)
            if isinstance(item, Error):
                self.errors.append(item)
        elif isinstance(item, FileData):
            self._file(item)
        elif isinstance(item, SysInfo):
            path = self.dir / f"sysinfo_{item.node_id}.json"
            path.write_text(json.dumps(item.data, indent=2, default=str))
        if time.monotonic() - self._last_flush > 1.0:
            self._flush_rows()

    def _stream(self, kind: str) -> ipc.RecordBatchStreamWriter:
        writer = self._streams.get(kind)
        if writer is None:
            sink = pa.OSFile(str(self.dir / f"{kind}.arrows"), "wb")
            writer = ipc.new_stream(sink, SCHEMAS[kind])
            self._streams[kind] = writer
        return writer

    def _file(self, item: FileData) -> None:
        name = item.name
        if name.startswith("/") or ".." in name.split("/") or not name:
            raise ResultsError(f"file name {name!r} must be relative, without '..'")
        f = self._files.get(name)
        if f is None:
            path = self.dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # "xb": never overwrite, even a file another node wrote first.
            f = open(path, "xb")  # noqa: SIM115 - kept open across chunks
            self._files[name] = f
        f.write(item.data)
        f.flush()

    def _flush_rows(self) -> None:
        for kind, rows in self._rows.items():
            if rows:
                try:
                    self._stream(kind).write_batch(pa.RecordBatch.from_pylist(rows, schema=SCHEMAS[kind]))
                except OSError as e:
                    self._failed(kind, e)
                rows.clear()
        self._last_flush = time.monotonic()

    def flush(self, timeout_s: float = -1) -> bool:
        """Write buffered rows to disk; it returns False if the writer stayed busy for timeout_s (-1: waits)."""
        if not self._lock.acquire(timeout=timeout_s):
            return False
        try:
            if not self.closed:
                self._flush_rows()
        finally:
            self._lock.release()
        return True

    def close(self) -> None:
        """Turn each table into Parquet and write the time-sorted log.txt."""
        with self._lock:
            if self.closed:
                return
            self._flush_rows()
            for kind, writer in self._streams.items():
                try:
                    writer.close()
                except OSError as e:
                    self._failed(kind, e)
            for name, f in self._files.items():
                try:
                    f.close()
                except OSError as e:
                    self._failed(name, e)
                if any(m.startswith(f"writing {name}:") for m in self.write_errors):
                    (self.dir / name).unlink(missing_ok=True)  # half a file is no result
            for kind in self._streams:
                arrows = self.dir / f"{kind}.arrows"
                tmp = self.dir / f".{kind}.parquet.tmp"
                failed = any(m.startswith(f"writing {kind}:") for m in self.write_errors)
                try:
                    if failed:
                        # Not whole: no Parquet file may look like the table (issue 30).
                        arrows.unlink(missing_ok=True)
                        continue
                    table = read_arrows(arrows)
                    if kind in ("log", "errors"):
                        table = table.sort_by("time")
                    # Whole or not at all: a reader prefers the Parquet file, and a
                    # process killed mid-write must leave the stream readable.
                    pq.write_table(table, tmp, compression="zstd")
                    os.replace(tmp, self.dir / f"{kind}.parquet")
                    arrows.unlink()
                except OSError as e:
                    self._failed(kind, e)
                    tmp.unlink(missing_ok=True)
            try:
                self._write_log_txt()
            except OSError as e:
                self._failed("log.txt", e)
                (self.dir / "log.txt").unlink(missing_ok=True)
            self.closed = True

    def _write_log_txt(self) -> None:
        lines: list[tuple[Any, str]] = []
        for kind in ("log", "errors"):
            path = self.dir / f"{kind}.parquet"
            if not path.exists():
                continue
            for row in pq.read_table(path).to_pylist():
                item = LogEntry(**row) if kind == "log" else Error(**row)
                lines.append((row["time"], str(item)))
        lines.sort(key=lambda x: x[0])
        with open(self.dir / "log.txt", "x") as f:
            for _, line in lines:
                f.write(line + "\n")


def _kind_of(item: Item) -> str:
    """_kind_of names what an item is written into, for a write error's message."""
    if isinstance(item, Batch):
        return item.kind
    if isinstance(item, FileData):
        return item.name
    if isinstance(item, SysInfo):
        return f"sysinfo_{item.node_id}.json"
    return info_row(item)[0] if isinstance(item, (LogEntry, Error, StreamInfo, PacketInfo, FlowStatus)) else "?"


def read_arrows(path: Path) -> pa.Table:
    """Read an Arrow IPC stream file up to its last whole batch."""
    batches = []
    schema = None
    with pa.OSFile(str(path), "rb") as f:
        try:
            reader = ipc.open_stream(f)
            schema = reader.schema
            while True:
                try:
                    batches.append(reader.read_next_batch())
                except StopIteration:
                    break
        except (pa.ArrowInvalid, OSError):
            pass  # a truncated tail from a killed writer: keep what is whole
    if schema is None:
        kind = path.name.removesuffix(".arrows")
        schema = SCHEMAS.get(kind, pa.schema([]))
    return pa.Table.from_batches(batches, schema=schema)


def link_tree(src: Path, dst: Path, leave_out: Callable[[Path], bool] = lambda rel: False) -> int:
    """Hard-link a test folder's files into dst (made as needed); it returns how many it linked.

    Left out: dot files, meta.json (each folder writes its own), the folders
    of other tests nested in src, and the relative paths leave_out accepts.
    Result files are never modified once written, so sharing them by hard link
    is safe and costs no space; across file systems they are copied instead.
    """
    n = 0
    for f in sorted(src.rglob("*")):
        rel = f.relative_to(src)
        if f.is_dir() or f.name.startswith(".") or rel.as_posix() == "meta.json" or leave_out(rel):
            continue
        if any((src / p / "meta.json").exists() for p in rel.parents if str(p) != "."):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(f, target)
        except OSError:
            shutil.copy2(f, target)
        n += 1
    return n


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    """Write meta.json (replacing the test's own earlier meta.json) whole or not at all; OSError if it cannot."""
    meta = {"format_version": RESULT_FORMAT_VERSION, **meta}
    tmp = directory / ".meta.json.tmp"
    try:
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        os.replace(tmp, directory / "meta.json")
    except OSError:
        tmp.unlink(missing_ok=True)  # never half a meta.json beside the whole one
        raise
