"""The SSH launcher: a node on another host, reached with paramiko, speaking the node protocol over the session.

Launching a node (all before any run starts):

1. Connect and authenticate with keys: the SSH agent, the default keys in
   ``~/.ssh``, or ``key_file``; ``~/.ssh/config`` may map the host to a
   HostName, User, Port and IdentityFile. The host key is checked against
   ``~/.ssh/known_hosts`` (and ``/etc/ssh/ssh_known_hosts``): an unknown host
   is refused unless ``accept_new_host_key`` adds it (and the log says so,
   with its fingerprint); a changed key is always refused.
2. Ship the node code: the node zipapp (:mod:`antler.node.launch.zipapp`),
   built once per process, goes over SFTP to the host's cache,
   ``~/.cache/antler-ray/antler-node-HASH.pyz`` (or the folder
   :data:`CACHE_ENV` names), unless the host has it already: the log says
   which.
3. Run ``python3 THAT.pyz NODE_ID`` on the host (through ``sudo -n`` for
   ``root: true`` unless the SSH user is root) and talk over the session's
   stdin and stdout; its stderr lines are the node's log.

Every failure is a LaunchError that names the node, the destination and the
cause in the user's terms (refused, no answer, unknown or changed host key,
authentication, no python3, a missing package), within
:data:`CONNECT_TIMEOUT_SECONDS` of trying for a host that does not answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import getpass
import hashlib
import io
import os
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import paramiko

from antler.node.items import LogEntry, now
from antler.node.launch.child import ChildHandle, conn_of
from antler.node.launch.errors import LaunchError
from antler.node.launch.zipapp import EXIT_MISSING, NodeApp, node_app
from antler.node.nodespec import SSH, Node, parse_destination
from antler.node.recorder import Sink

LAUNCHER = "ssh"
TAG = "launch"
CACHE_ENV = "ANTLER_NODE_CACHE"
"""CACHE_ENV names the environment variable that sets the hosts' node cache folder (relative: to the SSH user's home)."""
DEFAULT_CACHE = ".cache/antler-ray"
"""DEFAULT_CACHE is the node cache folder on a host, relative to the SSH user's home."""
CONNECT_TIMEOUT_SECONDS = 8.0
"""CONNECT_TIMEOUT_SECONDS bounds the TCP connect, the SSH banner and the authentication, each."""
KEEPALIVE_SECONDS = 5
"""KEEPALIVE_SECONDS: the SSH transport sends a keepalive this often, so a dead path is noticed."""
REMOTE_COMMAND_TIMEOUT_SECONDS = 6.0
"""REMOTE_COMMAND_TIMEOUT_SECONDS bounds the clean-up command run on a host after a node did not end cleanly."""
STOP_WAIT_TENTHS = 30
"""STOP_WAIT_TENTHS: that command gives the node this many tenths of a second to stop by itself before killing it."""


@dataclass(frozen=True)
class Target:
    """Target is where an SSH node goes, after ``~/.ssh/config``: user, address, port, and the host key's name."""

    user: str
    host: str
    port: int
    key_files: tuple[str, ...]

    @property
    def known_hosts_name(self) -> str:
        """Known_hosts_name is the host as known_hosts names it: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def target(spec: SSH, config_path: str | None = None) -> Target:
    """Target resolves a destination with ``~/.ssh/config`` (HostName, User, Port, IdentityFile)."""
    dest = parse_destination(spec.destination)
    path = config_path or os.path.expanduser("~/.ssh/config")
    cfg: dict[str, Any] = {}
    if os.path.isfile(path):
        try:
            cfg = dict(paramiko.SSHConfig.from_path(path).lookup(dest.host))
        except Exception as e:
            raise LaunchError(f"{path}: {e}") from None
    key_files = [spec.key_file] if spec.key_file else []
    key_files += [f for f in cfg.get("identityfile", []) if os.path.exists(f)]
    return Target(
        user=dest.user or cfg.get("user") or getpass.getuser(),
        host=cfg.get("hostname") or dest.host,
        port=dest.port or int(cfg.get("port", 22)),
        key_files=tuple(os.path.expanduser(f) for f in key_files),
    )


def fingerprint(key: paramiko.PKey) -> str:
    """Fingerprint is a host key's type and SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


class _UnknownHost(Exception):
    def __init__(self, name: str, key: paramiko.PKey) -> None:
        super().__init__(name)
        self.name, self.key = name, key


class _Refuse(paramiko.MissingHostKeyPolicy):
    """_Refuse refuses a host not in known_hosts, keeping its key for the message."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHost(hostname, key)


class _AcceptNew(paramiko.MissingHostKeyPolicy):
    """_AcceptNew adds a host not in known_hosts to ``~/.ssh/known_hosts`` (OpenSSH's ``accept-new``)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.added: str | None = None

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.added = f"{hostname} {fingerprint(key)}"


def connect(node: Node, spec: SSH, to: Target) -> tuple[paramiko.SSHClient, str | None]:
    """Connect opens an authenticated SSH connection; it returns it and the host key it added, if any.

    Blocking. Raises LaunchError naming the node, the target and the cause.
    """
    where = f"node {node.id!r}: ssh {to}"
    client = paramiko.SSHClient()
    known = os.path.expanduser("~/.ssh/known_hosts")
    for path in ("/etc/ssh/ssh_known_hosts", known):
        if os.path.isfile(path):
            try:
                client.load_system_host_keys(path)
            except Exception as e:
                raise LaunchError(f"{where}: cannot read {path}: {e}") from None
    accept = _AcceptNew(known) if spec.accept_new_host_key else None
    client.set_missing_host_key_policy(accept or _Refuse())
    try:
        client.connect(
            to.host,
            to.port,
            username=to.user,
            key_filename=list(to.key_files) or None,  # type: ignore[arg-type]  # paramiko takes a list too
            timeout=CONNECT_TIMEOUT_SECONDS,
            banner_timeout=CONNECT_TIMEOUT_SECONDS,
            auth_timeout=CONNECT_TIMEOUT_SECONDS,
            allow_agent=True,
            look_for_keys=True,
        )
    except BaseException as e:
        client.close()
        raise LaunchError(f"{where}: {_why(e, to, spec)}") from None
    transport = client.get_transport()
    assert transport is not None
    transport.set_keepalive(KEEPALIVE_SECONDS)
    return client, accept.added if accept else None


def _why(e: BaseException, to: Target, spec: SSH) -> str:
    """_Why says why a connection failed, in the terms of the fix."""
    if isinstance(e, _UnknownHost):
        return (
            f"the host key of {e.name} ({fingerprint(e.key)}) is not in ~/.ssh/known_hosts: check the fingerprint "
            f"and add it (ssh-keyscan -p {to.port} {to.host} >> ~/.ssh/known_hosts), or set accept_new_host_key: true"
        )
    if isinstance(e, paramiko.BadHostKeyException):
        return (
            f"the host key of {to.known_hosts_name} has CHANGED: it is now {fingerprint(e.key)}, known_hosts has "
            f"{fingerprint(e.expected_key)}. Someone may be intercepting the connection; if the host was "
            f"reinstalled, remove the old key (ssh-keygen -R '{to.known_hosts_name}')"
        )
    if isinstance(e, paramiko.PasswordRequiredException):
        return f"the key needs a passphrase ({e}): load it into the SSH agent (ssh-add)"
    if isinstance(e, paramiko.AuthenticationException):
        tried = ", ".join(["the SSH agent", *to.key_files, "~/.ssh/id_*"])
        return f"authentication as {to.user!r} failed ({e}); keys tried: {tried}"
    if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {getattr(err, "errno", None) for err in e.errors.values()}
        if codes == {errno.ECONNREFUSED}:
            return f"{to.host} refused the connection on port {to.port} (no SSH server listening there?)"
        return "; ".join(f"{addr[0]}: {getattr(err, 'strerror', None) or err}" for addr, err in e.errors.items())
    if isinstance(e, socket.gaierror):
        return f"cannot resolve {to.host!r}: {e.strerror}"
    if isinstance(e, (TimeoutError, socket.timeout)):
        return f"no answer from {to.host}:{to.port} within {CONNECT_TIMEOUT_SECONDS:.0f}s (host down or unreachable?)"
    if isinstance(e, OSError):
        return f"{to.host}:{to.port}: {e.strerror or e}"
    if isinstance(e, paramiko.SSHException):
        return str(e) or type(e).__name__
    return f"{type(e).__name__}: {e}"


def cache_dir() -> str:
    """Cache_dir is the node cache folder on hosts, as SFTP and the shell take it (relative: to the home)."""
    d = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    if d.startswith("~/"):
        d = d[2:]
    return d.rstrip("/") or "/"


def upload(client: paramiko.SSHClient, app: NodeApp) -> tuple[str, bool, float]:
    """Upload puts the node zipapp in the host's cache unless it is there; it returns its path, whether it was
    uploaded, and how long that took (s). Blocking.
    """
    folder = cache_dir()
    path = f"{folder}/{app.name}"
    start = time.monotonic()
    sftp = client.open_sftp()
    try:
        try:
            if sftp.stat(path).st_size == len(app.data):
                return path, False, time.monotonic() - start
        except FileNotFoundError:
            pass
        _makedirs(sftp, folder)
        tmp = f"{path}.{os.getpid()}-{threading.get_ident()}.tmp"
        sftp.putfo(io.BytesIO(app.data), tmp)
        sftp.posix_rename(tmp, path)  # atomic: two nodes on one host never run half a file
        return path, True, time.monotonic() - start
    finally:
        sftp.close()


def _makedirs(sftp: paramiko.SFTPClient, folder: str) -> None:
    parts = folder.split("/")
    for i in range(1, len(parts) + 1):
        d = "/".join(parts[:i])
        if d in ("", "."):
            continue
        try:
            sftp.stat(d)
        except FileNotFoundError:
            sftp.mkdir(d, 0o700)


def remote_command(spec: SSH, app_path: str, node_id: str) -> str:
    """Remote_command is the shell command that starts the node on the host."""
    argv = " ".join(shlex.quote(a) for a in (*shlex.split(spec.python), app_path, node_id))
    if not spec.root:
        return f"exec {argv}"
    return f'if [ "$(id -u)" -eq 0 ]; then exec {argv}; else exec sudo -n {argv}; fi'


class SSHProcess:
    """SSHProcess is a node running in an SSH session: its channel is the stream, its stderr the node's log."""

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
        """Conn is the session's stdout to read and its stdin to write."""
        chan = self.chan

        def read(n: int) -> bytes:
            try:
                return bytes(chan.recv(n))
            except (OSError, EOFError, paramiko.SSHException):
                return b""

        return conn_of(read, chan.sendall, chan.shutdown_write)

    def start_stderr(self, line: Any) -> None:
        """Start_stderr hands each line the node writes to stderr to line(text), on a thread."""
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
        """Wait returns how the remote process ended, within timeout seconds, else None."""
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
            return f"exit status 127: {self.spec.python} was not found on {self.to.host}"
        if code == EXIT_MISSING:
            return f"exit status {code}: the host cannot run the node"
        if code > 128:
            return f"exit status {code}, killed by signal {code - 128}"
        return f"exit status {code}"

    def kill(self) -> None:
        """Kill closes the session: the node reads the end of its stream and stops (release makes sure)."""
        self.chan.close()

    def release(self, facts: dict[str, Any], clean: bool) -> None:
        """Release closes the connection; after a node that did not end cleanly, it first makes sure on the host.

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
    """SSHLaunch launches SSH nodes for one command: the node zipapp is built once, uploaded once per host."""

    def __init__(self) -> None:
        self._uploads: dict[tuple[str, str, int], asyncio.Lock] = {}

    async def launch(self, node: Node, sink: Sink) -> ChildHandle:
        """Launch starts the node on its host and returns its handle, watched already; raises LaunchError."""
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
