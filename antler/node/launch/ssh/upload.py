"""The node code on an SSH host: the cache folder it is kept in, and its upload over SFTP.

The node zipapp (:mod:`antler.node.launch.zipapp`) goes to
``~/.cache/antler-ray/antler-node-HASH.pyz`` on the host (or the folder
:data:`CACHE_ENV` names), unless a file of its name and size is there
already; it is written under a temporary name and renamed, so two nodes on one
host never run half a file.
"""

from __future__ import annotations

import io
import os
import threading
import time

import paramiko

from antler.node.launch.zipapp import NodeApp

CACHE_ENV = "ANTLER_NODE_CACHE"
"""CACHE_ENV names the environment variable that sets the hosts' node cache folder (relative: to the SSH user's home)."""
DEFAULT_CACHE = ".cache/antler-ray"
"""DEFAULT_CACHE is the node cache folder on a host, relative to the SSH user's home."""


def cache_dir() -> str:
    """Return the node cache folder on hosts, as SFTP and the shell take it (relative: to the home)."""
    d = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    if d.startswith("~/"):
        d = d[2:]
    return d.rstrip("/") or "/"


def upload(client: paramiko.SSHClient, app: NodeApp) -> tuple[str, bool, float]:
    """Put the node zipapp in the host's cache unless it is there; it returns its path, whether it was
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
