"""The local launcher: a node as a child process on this host, speaking the node protocol over its stdio.

The process is ``python -m antler.node ID`` on this very interpreter (or the
node zipapp this process itself runs from, on an SSH host), started in a
session of its own: a Ctrl-C at the terminal reaches the tool, which cancels
the node over the stream, rather than killing it mid-cleanup.

Privileges, as antler's local launcher: with ``root: true`` and a tool that
is not root, the node runs through ``sudo -n`` (never a password prompt);
with a tool that is root under sudo and ``root: false``, the node runs as
``SUDO_USER`` (through ``setpriv``), so its commands and files belong to the
user.

Namespaces: a node that runs as root manages its namespace itself, as a Ray
node does: its runtime thread enters it (creating it first if asked), the
process itself stays outside, and deletes it when done, even if its parent
died. A node dropped to ``SUDO_USER`` cannot enter one, so the launcher
prepares it and starts the process inside it (``ip netns exec``), and deletes
it after the process ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from typing import Any

import antler
from antler.node import lease
from antler.node.items import LogEntry, now
from antler.node.launch.child import ChildHandle, conn_of
from antler.node.launch.errors import LaunchError
from antler.node.launch.netns import list_names, prepare, remove, remove_with_processes
from antler.node.nodespec import Local, Node
from antler.node.recorder import Sink

LAUNCHER = "local"


@dataclass
class Command:
    """How a local node starts: its argv and environment, and who prepares its namespace."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    launcher_netns: bool = False
    """launcher_netns: the launcher creates or joins the namespace and starts the process in it."""
    user: str = ""


def node_argv(node_id: str) -> list[str]:
    """Return the command that starts a node running this process's own code and interpreter."""
    archive = running_archive()
    if archive:
        return [sys.executable, archive, node_id]
    return [sys.executable, "-m", "antler.node", node_id]


def running_archive() -> str | None:
    """Return the path of the node zipapp this process runs from, or None when it runs from files.

    A zipapp runs from the folder it unpacked itself into (``antler-node-HASH``
    beside ``antler-node-HASH.pyz``, antler.node.launch.zipapp): that counts as
    running from the archive.
    """
    path = os.path.dirname(os.path.abspath(antler.__file__))
    head = os.path.dirname(path)
    if os.path.isfile(head):
        return head
    unpacked_from = head + ".pyz"
    if os.path.isfile(unpacked_from) and os.path.isfile(os.path.join(head, "__main__.py")):
        return unpacked_from
    return None


def command(node: Node, spec: Local, euid: int | None = None, environ: dict[str, str] | None = None) -> Command:
    """Plan how to start a local node: privileges per ``spec.root``, the namespace per who can enter it.

    ``euid`` and ``environ`` default to this process's (tests pass their own).
    """
    euid = os.geteuid() if euid is None else euid
    env = dict(os.environ if environ is None else environ)
    argv = node_argv(node.id)
    sudo_user = env.get("SUDO_USER", "")
    if spec.root and euid != 0:
        return Command(["sudo", "-n", "--", *argv], env, user="root")
    if not spec.root and euid == 0 and sudo_user and sudo_user != "root":
        try:
            pw = pwd.getpwnam(sudo_user)
        except KeyError:
            raise LaunchError(f"node {node.id!r}: SUDO_USER {sudo_user!r} is not a user of this host") from None
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
        drop = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
        ns = node.netns_name
        prefix = ["ip", "netns", "exec", ns] if ns else []
        return Command([*prefix, *drop, *argv], env, launcher_netns=ns is not None, user=pw.pw_name)
    return Command(argv, env)


class LocalProcess:
    """A node's child process: its stdio is the node's stream, its stderr the node's last words."""

    def __init__(self, cmd: Command) -> None:
        self.cmd = cmd
        self.proc = subprocess.Popen(
            cmd.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            env=cmd.env,
            start_new_session=True,
        )
        start = lease.start_ticks(self.proc.pid)
        if start is not None:
            # A node outlives a killed launcher only if it is stuck: the next run ends it then.
            lease.take(lease.SESSION, str(self.proc.pid), start, " ".join(cmd.argv)[:200])
        self.netns: str | None = None
        """netns is a namespace the launcher created for the node, deleted on release."""
        self._stderr: threading.Thread | None = None
        self._write_lock = threading.Lock()

    def conn(self) -> Any:
        """Return the node's stream: its stdout to read, its stdin to write."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        out_fd, in_fd = self.proc.stdout.fileno(), self.proc.stdin.fileno()
        stdin = self.proc.stdin

        def write(data: bytes | memoryview) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(in_fd, view) :]

        def close() -> None:
            with contextlib.suppress(OSError):
                stdin.close()

        return conn_of(lambda n: os.read(out_fd, n), write, close)

    def start_stderr(self, line: Any) -> None:
        """Hand each line the node writes to stderr to line(text), on a thread."""
        stream = self.proc.stderr
        assert stream is not None

        def pump() -> None:
            with contextlib.suppress(OSError, ValueError):
                for raw in iter(stream.readline, b""):
                    line(raw.decode(errors="replace").rstrip("\n"))

        self._stderr = threading.Thread(target=pump, name=f"stderr-{self.proc.pid}", daemon=True)
        self._stderr.start()

    def wait(self, timeout: float) -> str | None:
        """Return how the process ended, within timeout seconds, else None."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        if self._stderr is not None:
            self._stderr.join(1.0)
        return describe_status(code)

    def kill(self) -> None:
        """Kill the node's process and everything it started (its commands run in sessions of their own)."""
        if self.proc.poll() is not None:
            return
        for pid in [*descendants(self.proc.pid), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def release(self, facts: dict[str, Any], clean: bool) -> None:
        """Close the pipes and delete the node's created namespace, with what still runs in it.

        The node deletes a namespace it created itself when it ends; this is
        the backstop for a node that died first (and the only way for one the
        launcher created).
        """
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        ns = self.netns or (facts.get("netns") if facts.get("netns_created") else None)
        if ns and ns in list_names():
            remove_with_processes(ns)
        self.netns = None
        if self.proc.poll() is not None:
            lease.give_back(lease.SESSION, str(self.proc.pid))


def describe_status(code: int) -> str:
    """Say how a process ended from its return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


def descendants(pid: int) -> list[int]:
    """List the processes under pid (children first found, grandchildren after), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the ppid is the 2nd field after it.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


async def launch_local(node: Node, sink: Sink) -> ChildHandle:
    """Start the node as a child process on this host and return its handle, watched already.

    Raises LaunchError naming the node and the cause.
    """
    cmd = command(node, node.launcher.local or Local())
    netns: str | None = None
    created = False
    if cmd.launcher_netns:
        notes: list[str] = []
        netns, created = prepare(node.netns, node.id, notes)
        for note in notes:
            sink(LogEntry(now(), node.id, lease.TAG, note))
    try:
        process = LocalProcess(cmd)
    except OSError as e:
        if created and netns:
            remove(netns)
        raise LaunchError(f"node {node.id!r}: cannot start {cmd.argv[0]}: {e.strerror or e}") from None
    if created:
        process.netns = netns
    handle = ChildHandle(node, sink, process.conn(), process, LAUNCHER)
    process.start_stderr(handle.stderr_line)
    await handle.start(netns=not cmd.launcher_netns)
    handle.facts.update(host=socket.gethostname(), command=" ".join(cmd.argv))
    if cmd.launcher_netns:
        handle.facts.update(netns=netns, netns_created=created)
    return handle
