"""Connecting to a host over SSH with paramiko: the destination after ``~/.ssh/config``, host keys, authentication.

Keys come from the SSH agent, the default keys in ``~/.ssh``, or the node's
``key_file``; ``~/.ssh/config`` may map the host to a HostName, User, Port
and IdentityFile. The host key is checked against ``~/.ssh/known_hosts`` (and
``/etc/ssh/ssh_known_hosts``): an unknown host is refused unless
``accept_new_host_key`` adds it (OpenSSH's ``accept-new``), and a changed key
is always refused. A connection that fails raises a LaunchError that says why
in the terms of the fix (refused, no answer, unknown or changed host key,
authentication), within :data:`CONNECT_TIMEOUT_SECONDS` for a host that does
not answer. The launcher that uses it is :mod:`antler.node.launch.ssh`.
"""

from __future__ import annotations

import base64
import errno
import getpass
import hashlib
import os
import socket
from dataclasses import dataclass
from typing import Any

import paramiko

from antler.node.launch.errors import LaunchError
from antler.node.nodespec import SSH, Node, parse_destination

CONNECT_TIMEOUT_SECONDS = 8.0
"""CONNECT_TIMEOUT_SECONDS bounds the TCP connect, the SSH banner and the authentication, each."""
KEEPALIVE_SECONDS = 5
"""KEEPALIVE_SECONDS: the SSH transport sends a keepalive this often, so a dead path is noticed."""


@dataclass(frozen=True)
class Target:
    """Where an SSH node goes, after ``~/.ssh/config``: user, address, port, and the host key's name."""

    user: str
    host: str
    port: int
    key_files: tuple[str, ...]

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts names it: ``host``, or ``[host]:port`` off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}:{self.port}"


def target(spec: SSH, config_path: str | None = None) -> Target:
    """Resolve a destination with ``~/.ssh/config`` (HostName, User, Port, IdentityFile)."""
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
    """Return a host key's type and SHA256 fingerprint, as ``ssh-keygen -l`` prints it."""
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
    """Open an authenticated SSH connection; it returns it and the host key it added, if any.

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
