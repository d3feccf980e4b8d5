"""Leases: what a process made on its host that outlives it if it is killed, written down for the next run.

A test creates network namespaces and starts commands in sessions of their
own. Its process removes them when the test ends, however it ends, unless
that process is killed outright (SIGKILL, a lost host, the OOM killer): the
namespaces and the commands' sessions then stay. So each one is recorded,
when it is made, in a small JSON file on the host (a lease):

- ``STATE_DIR/netns/NAME.json`` for a namespace (with the inode it had, so a
  namespace made later under the same name by someone else is never taken
  for it);
- ``STATE_DIR/session/PID.json`` for a command's session (its leader's PID
  and start time).

Each names its **owner**, the process that made it and will remove it, and
the **invocation**, the ``antler-ray`` command the test runs under
(:data:`INVOCATION_ENV`, set by the command and inherited by the node
processes it starts). A process is identified by its PID *and* its start time,
so a reused PID never passes for it. A lease is **dead** when its owner is
gone, or when its invocation ran on this host and is gone (the owner is then
a node process of a killed command, about to exit). The next run reclaims
dead leases (:mod:`antler.node.launch.reclaim`) and never touches a live one.

The folder is ``/run/antler-ray`` for root (a tmpfs: it goes with a reboot, as
namespaces and processes do), else ``$XDG_RUNTIME_DIR/antler-ray`` or
``/tmp/antler-ray-UID``; ``ANTLER_STATE_DIR`` names another. Writing a lease
takes about 0.1 ms here; a host where the folder cannot be written still
runs tests, without leases (nothing is then reclaimed). Standard library only:
node processes on SSH hosts use it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from antler.node.compat import UTC

NETNS, SESSION = "netns", "session"
"""NETNS and SESSION are the kinds of lease: a network namespace, a command's session."""
INVOCATION_ENV = "ANTLER_INVOCATION"
"""INVOCATION_ENV holds the invocation's identity, ``PID:START:BOOT_ID``, for the processes it starts."""
STATE_ENV = "ANTLER_STATE_DIR"
"""STATE_ENV names the lease folder instead of the default."""
TAG = "reclaim"
"""TAG is the tag of the log lines that say what was reclaimed."""


def state_dir() -> Path:
    """Return the folder of this host's leases (see the module's docstring)."""
    named = os.environ.get(STATE_ENV)
    if named:
        return Path(named)
    if os.geteuid() == 0:
        return Path("/run/antler-ray")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "antler-ray"
    return Path(tempfile.gettempdir()) / f"antler-ray-{os.getuid()}"


def boot_id() -> str:
    """Identify the running kernel ('' if unknown): a PID means something only under the same one."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_ticks(pid: int) -> int | None:
    """Return when process pid started, in clock ticks since boot (proc(5) stat field 22), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold anything: fields count from after it.
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def state_of(pid: int) -> str | None:
    """Return process pid's state letter (proc(5) stat field 3: R, S, D, Z for a zombie...), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()[0].decode()


def session_of(pid: int) -> int | None:
    """Return the session ID of process pid (proc(5) stat field 6), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[3])


def command_line(pid: int) -> str:
    """Return process pid's command line, shortened to 200 characters ('' if gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    text = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())  # one line, for a log line
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class Proc:
    """One process: its PID and start time (ticks since boot) on the kernel with boot ID ``boot``."""

    pid: int
    start: int
    boot: str = ""

    @classmethod
    def of(cls, pid: int) -> Proc | None:
        """Return the running process pid, or None if there is none."""
        start = start_ticks(pid)
        return None if start is None else cls(pid, start, boot_id())

    @classmethod
    def me(cls) -> Proc:
        """Return the calling process."""
        me = cls.of(os.getpid())
        assert me is not None
        return me

    @classmethod
    def parse(cls, text: str) -> Proc | None:
        """Read ``PID:START:BOOT`` (:data:`INVOCATION_ENV`), or None for anything else."""
        pid, _, rest = text.partition(":")
        start, _, boot = rest.partition(":")
        if not (pid.isdigit() and start.isdigit()):
            return None
        return cls(int(pid), int(start), boot)

    def text(self) -> str:
        """Return the process as ``PID:START:BOOT``."""
        return f"{self.pid}:{self.start}:{self.boot}"

    @property
    def here(self) -> bool:
        """Whether the process ran under this kernel (its PID means something here)."""
        return not self.boot or self.boot == boot_id()

    def alive(self) -> bool:
        """Report whether the process still runs: same PID, same start time, not a zombie.

        A process of another kernel counts as alive: nothing here can tell.
        """
        if not self.here:
            return True
        return start_ticks(self.pid) == self.start and state_of(self.pid) not in ("Z", "X")


def invocation() -> Proc | None:
    """Return the antler-ray command the calling process works for (:data:`INVOCATION_ENV`), or None."""
    return Proc.parse(os.environ.get(INVOCATION_ENV, ""))


def begin_invocation() -> Proc:
    """Make the calling process the invocation of the processes it starts from now on."""
    me = Proc.me()
    os.environ[INVOCATION_ENV] = me.text()
    return me


@dataclass(frozen=True)
class Lease:
    """One recorded namespace or session: what, who owns it, for which invocation, since when.

    ``ident`` is the namespace's inode, or the session leader's start time;
    ``what`` is the session's command; ``command`` is the owner's.
    """

    kind: str
    name: str
    ident: int
    owner: Proc
    invocation: Proc | None
    command: str
    created: str
    what: str = ""

    def dead(self) -> bool:
        """Report whether nobody will remove the thing any more: its owner, or its invocation here, is gone."""
        if not self.owner.alive():
            return True
        return self.invocation is not None and self.invocation.here and not self.invocation.alive()

    def why_dead(self) -> str:
        """Say why the lease is dead, for a log line (assuming it is)."""
        if not self.owner.alive():
            return "which is gone"
        return f"whose command (process {self.invocation.pid if self.invocation else '?'}) is gone"

    def whose(self) -> str:
        """Describe the owner for a log line: ``process 1234 (antler-ray run ...)``."""
        command = f" ({self.command})" if self.command else ""
        return f"process {self.owner.pid}{command}"


def _path(kind: str, name: str) -> Path:
    return state_dir() / kind / f"{name}.json"


def take(kind: str, name: str, ident: int, what: str = "") -> Lease | None:
    """Record that the calling process made name (a namespace or a session); None if it cannot be written."""
    me = Proc.me()
    lease = Lease(kind, name, ident, me, invocation(), command_line(me.pid), datetime.now(UTC).isoformat(), what)
    path = _path(kind, name)
    data = asdict(lease)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{me.pid}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        return None
    return lease


def give_back(kind: str, name: str) -> None:
    """Forget the lease of name (the thing was removed)."""
    with contextlib.suppress(OSError):
        _path(kind, name).unlink()


def find(kind: str, name: str) -> Lease | None:
    """Return the lease of name, or None if there is none (or it is unreadable)."""
    return _read(_path(kind, name))


def leases(kind: str) -> list[Lease]:
    """List the leases of a kind on this host, by name."""
    folder = state_dir() / kind
    try:
        paths = sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except OSError:
        return []
    return [lease for p in paths if (lease := _read(p)) is not None]


def _read(path: Path) -> Lease | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        inv = data.get("invocation")
        return Lease(
            kind=str(data["kind"]),
            name=str(data["name"]),
            ident=int(data["ident"]),
            owner=Proc(**data["owner"]),
            invocation=Proc(**inv) if inv else None,
            command=str(data.get("command", "")),
            created=str(data.get("created", "")),
            what=str(data.get("what", "")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
