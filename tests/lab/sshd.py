"""A real OpenSSH server for tests: temporary keys, a spare port, optionally inside a network namespace.

:func:`start_sshd` runs ``/usr/sbin/sshd -D`` with its own config, host key
and authorized key (all under a temporary folder), bound to one address, and
makes a client HOME whose ``~/.ssh`` holds the client key and a
``known_hosts`` with the server's key, so paramiko (which follows ``$HOME``)
connects with no prompt. The authenticated user is whoever runs the tests
(root here). ``stop`` ends the server by its PID.

Debian's sshd needs ``/run/sshd`` (its privilege-separation folder): it is
created if missing and left in place, since another sshd may use it.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
READY_TIMEOUT_SECONDS = 10.0


@dataclass
class SSHServer:
    """A running sshd: where it listens, who logs in, and the client HOME that reaches it."""

    address: str
    port: int
    user: str
    home: Path
    """home is the client HOME: ~/.ssh has the client key (id_ed25519) and known_hosts."""
    host_key_line: str
    """host_key_line is the server's key as a known_hosts line."""
    proc: subprocess.Popen[bytes]
    log: Path
    netns: str | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def destination(self) -> str:
        """``user@address:port``, as the ssh launcher takes it."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.user}@{host}:{self.port}"

    @property
    def known_hosts(self) -> Path:
        """The client's known_hosts file."""
        return self.home / ".ssh" / "known_hosts"

    def forget_host_key(self) -> None:
        """Empty the client's known_hosts."""
        self.known_hosts.write_text("")

    def stop(self) -> None:
        """End the server (by PID) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spare_port(address: str = "127.0.0.1") -> int:
    """Return a TCP port free on address right now."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """Make an ed25519 key pair without passphrase at path; it returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "antler-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_suffix(".pub").read_text().strip()


def start_sshd(
    tmp: Path,
    address: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    config: list[str] | None = None,
) -> SSHServer:
    """Start an sshd on address:port (a spare one by default), in netns if given.

    ``config`` adds sshd_config lines (e.g. ``SetEnv PATH=...``). Raises
    RuntimeError with the server's log if it does not listen within
    READY_TIMEOUT_SECONDS.
    """
    tmp.mkdir(parents=True, exist_ok=True)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    if port is None:
        port = spare_port(address) if netns is None else 22
    host_pub = keygen(tmp / "host_ed25519")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    client_pub = keygen(home / ".ssh" / "id_ed25519")
    (tmp / "authorized_keys").write_text(client_pub + "\n")
    key_type, key_b64 = host_pub.split()[:2]
    name = address if port == 22 else f"[{address}]:{port}"
    host_key_line = f"{name} {key_type} {key_b64}"
    (home / ".ssh" / "known_hosts").write_text(host_key_line + "\n")
    lines = [
        f"ListenAddress {address}:{port}" if ":" not in address else f"ListenAddress [{address}]:{port}",
        f"HostKey {tmp / 'host_ed25519'}",
        f"PidFile {tmp / 'sshd.pid'}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        # The keys live under /tmp, which is world-writable: sshd's owner checks would refuse them.
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "MaxStartups 100",
        "MaxSessions 100",
        "LogLevel VERBOSE",
        *(config or []),
    ]
    (tmp / "sshd_config").write_text("\n".join(lines) + "\n")
    log = tmp / "sshd.log"
    argv = [SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = SSHServer(address, port, getpass.getuser(), home, host_key_line, proc, log, netns, config or [])
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while "Server listening on" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"sshd did not start: {log.read_text(errors='replace')}")
        time.sleep(0.02)
    return server


@contextlib.contextmanager
def sshd(tmp: Path, **kw: object) -> Iterator[SSHServer]:
    """Run start_sshd for the length of a with block, stopping the server on exit (on failure too)."""
    server = start_sshd(tmp, **kw)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
