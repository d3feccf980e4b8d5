"""Joining a Ray cluster: the session, token auth, the hosts it declares and the code its workers run.

:class:`RaySession` connects the driver to the configured cluster, or starts
an embedded local Ray. Before joining a cluster by address it turns on Ray's
token auth when this host has a token (:func:`use_token_if_any`) and probes
the address (:func:`probe`), so a cluster that cannot be joined is said in one
line with what to do (:class:`JoinError`), not after 20 s of C++ warnings.
:func:`cluster_hosts` lists the hosts the cluster declares (``host:NAME``
resources, see antler.node.launch.ray); :func:`runtime_env` ships the
driver's package to the workers, and :func:`code_version` tells two copies of
it apart.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray

import antler
from antler.node import lease

HOST_RESOURCE = "host:"
"""HOST_RESOURCE prefixes the custom resource that names a cluster host (``host:NAME``)."""


def package_dir() -> Path:
    """Return the folder of the antler package this process runs."""
    return Path(antler.__file__).resolve().parent


@functools.cache
def code_version() -> str:
    """Return the package version plus a digest of its sources.

    Two copies with the same version number but different code differ here, so
    a host running a stale copy is caught even between releases. A process's
    code does not change under it, so an actor that hosts node after node
    digests it once (40 ms here).
    """
    root = package_dir()
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{antler.__version__}+{h.hexdigest()[:12]}"


def runtime_env() -> dict[str, Any]:
    """Ship the driver's own package to every worker of the Ray job.

    Ray uploads a local folder only at the job level (``ray.init``), so a
    process that connects to Ray itself should pass this too; the version
    check at launch catches one that did not.
    """
    env = {lease.INVOCATION_ENV: os.environ[lease.INVOCATION_ENV]} if lease.INVOCATION_ENV in os.environ else {}
    # The invocation's identity too, which the nodes' leases record (antler.node.lease).
    return {"py_modules": [str(package_dir())], **({"env_vars": env} if env else {})}


RAY_DIAGNOSTIC_LOGGERS = ("ray._private.authentication",)
"""RAY_DIAGNOSTIC_LOGGERS are Ray's loggers whose start-up notices (its token authentication mode) are Ray's, not the tool's."""
DIAGNOSTICS_LOG = "antler-driver.log"
"""DIAGNOSTICS_LOG is the file in Ray's session logs folder the diverted notices go to."""


@contextlib.contextmanager
def ray_diagnostics_to_log(logs_dir: Callable[[], Path | None]) -> Iterator[list[logging.LogRecord]]:
    """Divert the notices of RAY_DIAGNOSTIC_LOGGERS made in the block from stderr into Ray's session log.

    Ray prints "Token authentication is enabled ..." on every start (issue
    30); the tool's output should be the tool's. The records are kept while
    the block runs and then appended to DIAGNOSTICS_LOG in the folder
    ``logs_dir()`` returns (Ray's session logs, where its other messages
    are), or dropped when it returns None. Yields the list of records.
    """
    kept: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    handler = Keep()
    loggers = [logging.getLogger(name) for name in RAY_DIAGNOSTIC_LOGGERS]
    saved = [lg.propagate for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        yield kept
    finally:
        for lg, propagate in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate
        folder = logs_dir() if kept else None
        if folder is not None:
            with contextlib.suppress(OSError), open(folder / DIAGNOSTICS_LOG, "a") as f:
                for record in kept:
                    f.write(f"{record.levelname} {record.name}: {record.getMessage()}\n")


def _ray_logs_dir() -> Path | None:
    """_ray_logs_dir returns this process's Ray session logs folder, or None when not connected."""
    node = getattr(ray._private.worker, "_global_node", None)
    try:
        return Path(node.get_logs_dir_path()) if node is not None else None
    except Exception:  # a Ray without a session folder here (ray:// client)
        return None


class RaySession:
    """Connects this process to Ray: the configured cluster, or an embedded local one.

    With no address (neither ``ray.address`` in the config nor RAY_ADDRESS) it
    starts a local Ray itself, dashboard off and quiet, and shuts it down in
    ``shutdown``; a Ray this process is already connected to is used as is.
    """

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self.started = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Connect to Ray if this process is not connected yet (blocking).

        Raises JoinError, in one line saying what to do, when the cluster at
        the address does not answer or refuses this host's token.
        """
        with self._lock:
            if ray.is_initialized():
                return
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
            with ray_diagnostics_to_log(_ray_logs_dir):
                self._init(address, quiet)

    def _init(self, address: str | None, quiet: dict[str, Any]) -> None:
        """_init connects to the cluster at address, or starts an embedded Ray."""
        if address:
            if address != "auto" and not address.startswith("ray://"):
                use_token_if_any()
                probe(address)
            # The driver's own package, so a cluster host never runs a stale copy.
            ray.init(address=address, runtime_env=runtime_env(), **quiet)
        else:
            # An embedded Ray runs on this machine, from this very package:
            # shipping it would only cost each actor 1-2 s of runtime-env set-up.
            # "local": a new one, never the last `ray start` cluster Ray finds
            # recorded in /tmp/ray (a stale record made a run wait 80 s and fail).
            ray.init(address="local", include_dashboard=False, **quiet)
            self.started = True

    def shutdown(self) -> None:
        """Stop Ray if this session started it."""
        with self._lock:
            if self.started and ray.is_initialized():
                ray.shutdown()
            self.started = False


class JoinError(Exception):
    """A Ray cluster this process cannot join, said in one line with what to do."""


AUTH_MODE = "RAY_AUTH_MODE"
"""AUTH_MODE is Ray's environment variable for its authentication mode (``token`` or ``disabled``)."""
PROBE_TIMEOUT_SECONDS = 5.0
"""PROBE_TIMEOUT_SECONDS bounds the TCP connect that checks a cluster address answers at all."""


def token_file() -> Path:
    """Return where Ray keeps this host's cluster token: RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token").expanduser()


def use_token_if_any() -> None:
    """Turn on Ray's token auth for this process when a token is at hand and no mode is set.

    ``ray start --head`` (Ray 2.60) enables token auth when ~/.ray/auth_token
    exists, which any local ``ray.init`` creates; but a driver given an
    explicit address joins without the token unless RAY_AUTH_MODE=token, and
    then fails after 20 s with InvalidAuthToken. Ray does the same for
    ``address=auto``. A token sent to a cluster without auth is ignored, so
    turning it on is always safe.
    """
    if os.environ.get(AUTH_MODE) is not None:
        return  # the user chose
    if not (os.environ.get("RAY_AUTH_TOKEN") or token_file().is_file()):
        return
    os.environ[AUTH_MODE] = "token"
    # Ray caches its config when it is imported; it re-reads it like this in
    # its own ray._private.authentication.authentication_token_setup.
    config = getattr(ray._raylet, "Config", None)
    if config is not None:
        config.initialize("")


def probe(address: str) -> None:
    """Check that a Ray cluster answers at address and accept this host's token, raising JoinError.

    Ray's own failure would come after 20 s as a traceback under a line of
    C++ warnings a second; this takes well under a second (0.3 s here).
    """
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # a form ray.init understands and we do not: it will say
    try:
        socket.create_connection((host, int(port)), PROBE_TIMEOUT_SECONDS).close()
    except OSError as e:
        raise JoinError(
            f"no Ray cluster answers at {address} ({e.strerror or e}): check ray.address "
            "(the head's IP and port, 6379 unless `ray start --head --port` said otherwise)"
        ) from None
    gcs_client = getattr(ray._raylet, "GcsClient", None)  # Ray's own check, as `ray status` uses
    if gcs_client is None:
        return
    try:
        with _quiet_stderr():
            gcs_client(address=address)
    except ray.exceptions.AuthenticationError:
        mode = os.environ.get(AUTH_MODE, "")
        if mode.lower() == "token":
            source = "RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else str(token_file())
            what = f"refused this host's token ({source}): replace it with"
        elif mode:
            what = f"needs a token and {AUTH_MODE}={mode} sends none: unset {AUTH_MODE} and copy"
        else:
            what = f"needs a token and this host has none: copy to {token_file()}"
        raise JoinError(
            f"the Ray cluster at {address} {what} the head host's ~/.ray/auth_token "
            "(`ray get-auth-token` there prints it; RAY_AUTH_TOKEN=... works too)"
        ) from None
    except Exception:
        return  # anything else: ray.init says it in its own words


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """_Quiet_stderr silences file descriptor 2 (Ray's C++ logs a warning there for a refused token)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def cluster_hosts() -> dict[str, str]:
    """Map each host name the live cluster declares to its Ray node ID."""
    hosts: dict[str, str] = {}
    for n in ray.nodes():
        if not n.get("Alive"):
            continue
        for res in n.get("Resources", {}):
            if res.startswith(HOST_RESOURCE):
                hosts[res.removeprefix(HOST_RESOURCE)] = n["NodeID"]
    return hosts
