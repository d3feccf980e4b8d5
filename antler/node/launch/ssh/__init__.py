"""The SSH launcher: a node on another host, reached with paramiko, speaking the node protocol over the session.

Launching a node (all before any run starts):

1. Connect and authenticate with keys (:mod:`antler.node.launch.ssh.connect`:
   the SSH agent, the default keys, ``key_file``, ``~/.ssh/config``); the host
   key is checked against known_hosts, and one that ``accept_new_host_key``
   adds is logged with its fingerprint.
2. Ship the node code (:mod:`antler.node.launch.ssh.upload`): the node
   zipapp (:mod:`antler.node.launch.zipapp`), built once per process, goes
   over SFTP to the host's cache, once per host, unless the host has it
   already: the log says which.
3. Run ``python3 THAT.pyz NODE_ID`` on the host (through ``sudo -n`` for
   ``root: true`` unless the SSH user is root) and talk over the session's
   stdin and stdout; its stderr lines are the node's log.

Every failure is a LaunchError that names the node, the destination and the
cause in the user's terms (refused, no answer, unknown or changed host key,
authentication, no python3, a missing package), within
:data:`~antler.node.launch.ssh.connect.CONNECT_TIMEOUT_SECONDS` of trying for
a host that does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import threading
from typing import Any

import paramiko

from antler.node.items import LogEntry, now
from antler.node.launch.child import ChildHandle, conn_of
from antler.node.launch.errors import LaunchError
from antler.node.launch.ssh.connect import CONNECT_TIMEOUT_SECONDS, Target, connect, target
from antler.node.launch.ssh.upload import cache_dir, upload
from antler.node.launch.zipapp import EXIT_MISSING, NODE_PYTHON, NodeApp, node_app
from antler.node.nodespec import SSH, Node
from antler.node.recorder import Sink

LAUNCHER = "ssh"
TAG = "launch"
REMOTE_COMMAND_TIMEOUT_SECONDS = 6.0
"""REMOTE_COMMAND_TIMEOUT_SECONDS bounds the clean-up command run on a host after a node did not end cleanly."""
STOP_WAIT_TENTHS = 30
"""STOP_WAIT_TENTHS: that command gives the node this many tenths of a second to stop by itself before killing it."""


def remote_command(spec: SSH, app_path: str, node_id: str) -> str:
    """Return the shell command that starts the node on the host."""
    argv = " ".join(shlex.quote(a) for a in (*shlex.split(spec.python), app_path, node_id))
    if not spec.root:
        return f"exec {argv}"
    return f'if [ "$(id -u)" -eq 0 ]; then exec {argv}; else exec sudo -n {argv}; fi'


class SSHProcess:
    """A node running in an SSH session: its channel is the stream, its stderr the node's log."""

    def __init__(self, client: paramiko.SSHClient, spec: SSH, to: Target, command: str) -> None:
        self.client = client
        self.spec = spec
        self.to = to
        transport = client.get_transport()
        assert transport is not None
        self.chan = transport.open_session(timeout=CONNECT_TIMEOUT_SECONDS)
        self.chan.exec_command(command)
        self.pid: int | None = None
        """pid is the node's process ID on the host, once it answered."""
        self._stderr: threading.Thread | None = None

    def conn(self) -> Any:
        """Return the session's stdout to read and its stdin to write."""
        chan = self.chan

        def read(n: int) -> bytes:
            try:
                return bytes(chan.recv(n))
            except (OSError, EOFError, paramiko.SSHException):
                return b""

        return conn_of(read, chan.sendall, chan.shutdown_write)

    def start_stderr(self, line: Any) -> None:
        """Hand each line the node writes to stderr to line(text), on a thread."""
        chan = self.chan

        def pump() -> None:
            buf = b""
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                while chunk := chan.recv_stderr(65536):
                    buf += chunk
                    *lines, buf = buf.split(b"\n")
                    for raw in lines:
                        line(raw.decode(errors="replace"))
            if buf:
                line(buf.decode(errors="replace"))

        self._stderr = threading.Thread(target=pump, name=f"stderr-ssh-{self.to.host}", daemon=True)
        self._stderr.start()

    def wait(self, timeout: float) -> str | None:
        """Return how the remote process ended, within timeout seconds, else None."""
        if not self.chan.status_event.wait(timeout):
            if self.chan.closed:
                return "the SSH session closed"
            return None
        if self._stderr is not None:
            self._stderr.join(1.0)
        code = self.chan.recv_exit_status()
        if code == -1:
            # paramiko drops the "exit-signal" message sshd sends for a process killed by a signal.
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                return f"the SSH connection to {self.to.host} was lost"
            return "killed by a signal: the SSH session ended without an exit status"
        if code == 127:
            needs = "{}.{}".format(*NODE_PYTHON)
            return (
                f"exit status 127: {self.spec.python} was not found on {self.to.host} (the node needs Python {needs}+)"
            )
        if code == EXIT_MISSING:
            return f"exit status {code}: {self.to.host} cannot run the node"
        if code > 128:
            return f"exit status {code}, killed by signal {code - 128}"
        return f"exit status {code}"

    def kill(self) -> None:
        """Close the session: the node reads the end of its stream and stops (release makes sure)."""
        self.chan.close()

    def release(self, facts: dict[str, Any], clean: bool) -> None:
        """Close the connection; after a node that did not end cleanly, it first makes sure on the host.

        The node gets a moment to stop by itself (it cancels its runs and
        deletes its namespace when its stream ends), then it is killed, and
        what still runs in the namespace it created is killed and the
        namespace deleted. Nothing is tried over a connection that is gone.
        """
        pid = self.pid or facts.get("pid")
        ns = facts.get("netns") if facts.get("netns_created") else None
        transport = self.client.get_transport()
        if not clean and transport is not None and transport.is_active() and (pid or ns):
            script = []
            if pid:
                p = int(pid)
                script.append(
                    f"i=0; while kill -0 {p} 2>/dev/null && [ $i -lt {STOP_WAIT_TENTHS} ]; do sleep 0.1; i=$((i+1)); done; "
                    f"kill -9 {p} 2>/dev/null"
                )
            if ns:
                q = shlex.quote(str(ns))
                script.append(
                    f"if [ -e /run/netns/{q} ]; then ip netns pids {q} | xargs -r kill -9; ip netns del {q}; fi"
                )
            self._run("; ".join(script))
        self.chan.close()
        self.client.close()

    def _run(self, command: str) -> None:
        """_Run runs a small command on the host (as root, if the node was), ignoring how it went."""
        if self.spec.root:
            command = f'if [ "$(id -u)" -eq 0 ]; then {command}; else sudo -n sh -c {shlex.quote(command)}; fi'
        with contextlib.suppress(Exception):
            _, out, _ = self.client.exec_command(command, timeout=REMOTE_COMMAND_TIMEOUT_SECONDS)
            out.channel.recv_exit_status()


async def _connect(node: Node, spec: SSH, to: Target) -> tuple[paramiko.SSHClient, str | None]:
    """_Connect runs connect on a thread; a connection that completes after its launch was canceled is closed."""
    fut = asyncio.ensure_future(asyncio.to_thread(connect, node, spec, to))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:

        def close(f: asyncio.Future[tuple[paramiko.SSHClient, str | None]]) -> None:
            if not f.cancelled() and f.exception() is None:
                f.result()[0].close()

        fut.add_done_callback(close)
        raise


class SSHLaunch:
    """Launches SSH nodes for one command: the node zipapp is built once, uploaded once per host."""

    def __init__(self) -> None:
        self._uploads: dict[tuple[str, str, int], asyncio.Lock] = {}

    async def launch(self, node: Node, sink: Sink) -> ChildHandle:
        """Start the node on its host and return its handle, watched already; raises LaunchError."""
        spec = node.launcher.ssh
        assert spec is not None
        to = target(spec)

        def log(text: str) -> None:
            sink(LogEntry(now(), node.id, TAG, text))

        app = await asyncio.to_thread(node_app)
        client, added = await _connect(node, spec, to)
        if added:
            log(f"added the host key of {added} to ~/.ssh/known_hosts (accept_new_host_key)")
        try:
            path = await self._upload(node, client, app, to, log)
            command = remote_command(spec, path, node.id)
            process = await asyncio.to_thread(SSHProcess, client, spec, to, command)
        except LaunchError:
            client.close()
            raise
        except Exception as e:
            client.close()
            raise LaunchError(f"node {node.id!r}: ssh {to}: {type(e).__name__}: {e}") from None
        except BaseException:  # canceled (Ctrl-C) while launching: no connection is left open
            client.close()
            raise
        handle = ChildHandle(node, sink, process.conn(), process, LAUNCHER)
        process.start_stderr(handle.stderr_line)
        await handle.start(netns=True)
        process.pid = handle.facts.get("pid")
        handle.facts.update(host=to.host, destination=str(to), node_app=app.name)
        return handle

    async def _upload(self, node: Node, client: paramiko.SSHClient, app: NodeApp, to: Target, log: Any) -> str:
        key = (to.user, to.host, to.port)
        lock = self._uploads.setdefault(key, asyncio.Lock())
        async with lock:  # two nodes on one host: one upload
            try:
                path, uploaded, seconds = await asyncio.to_thread(upload, client, app)
            except Exception as e:
                raise LaunchError(
                    f"node {node.id!r}: ssh {to}: uploading the node code to {cache_dir()} failed: {e}"
                ) from None
        shown = path if path.startswith("/") else f"~/{path}"
        if uploaded:
            log(f"uploaded the node code to {to.host}:{shown} ({len(app.data) // 1024} KB in {seconds:.2f}s)")
        else:
            log(f"node code already at {to.host}:{shown}: upload skipped")
        return path
