"""Namespace hosts: a testbed of several "hosts" on this machine, each with its own sshd, for cluster tests.

Each host is what a researcher's testbed machine is to the tool: a network
namespace with a management address on a shared bridge and its own sshd,
plus test-network links to its neighbours that nothing has configured yet.
Its sshd is PID 1 of a PID namespace, in a mount namespace of its own (its own
``/tmp``, ``/run`` and home over ``/root``) and a UTS namespace with its own
hostname, so what a session on it starts sees only that host::

    ctl (the user's machine: ssh, `ray up`)        management: bridge in a switch namespace
      │ mgmt0 10.77.140.250                        10.77.140.0/24, host k at .(k+11)
    ──┴──────────── br0 ───────────────────
      │ mgmt0             │ mgmt0          │ mgmt0
    host 0  tn0 ─────── tn-l  host 1  tn-r ─────── tn0  host 2
            test network, unconfigured (left - mid - right)

Why each namespace: the shipped cluster commands run ``ray stop``, which
ends every Ray process it can see; in its own PID namespace it sees only its
host's. Ray keeps sockets and session files in ``/tmp/ray`` and its token in
``~/.ray``; per-host ``/tmp`` and home keep three raylets and the test
session's own Ray apart, as separate machines would. ``hostname -s`` names a
host's ``host:NAME`` resource, so each needs its own.

Everything is removed on exit, on failure too: killing a host's ``unshare``
kills its sshd (``--kill-child``), and with it, as PID 1, every process of
the host; then the namespaces and the host folders go. The folders live under
/var/tmp, not /tmp, because each host mounts its own folder over ``/tmp``; a
checkout and its virtualenv under ``/tmp`` (a CI clone) stay visible through
that folder, as a shared disk would.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.lab.netns import netns_list, sh, unique_name

MGMT_NET = "10.77.140"
"""MGMT_NET is the management /24 (inside the fixture's own namespaces only)."""
CTL_ADDR = f"{MGMT_NET}.250"
SSH_READY_SECONDS = 20.0
STOP_SECONDS = 20.0
SSH_OPTIONS = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10")  # fmt: skip

SSHD_CONFIG = """\
ListenAddress {addr}
Port 22
HostKey {dir}/host_key
PidFile none
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
"""

# Run by `unshare` inside the host's new namespaces, before sshd replaces it as PID 1.
HOST_INIT = """\
set -e
hostname "$1"
mount --bind "$2/home" /root
{private_tmp}
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -e -f "$2/sshd/sshd_config"
"""

CHECKOUT = Path(__file__).resolve().parents[2]
"""CHECKOUT is the repository these tests run from (tests/lab/hosts.py is two folders down)."""

SHARED_UNDER_TMP = sorted(
    {Path(p).resolve() for p in (CHECKOUT, sys.prefix) if Path(p).resolve().is_relative_to("/tmp")}
)
"""SHARED_UNDER_TMP are the checkout and virtualenv of these tests when they lie under /tmp (a CI clone):
every host sees them through its own /tmp, as it would on a shared disk (without, `ray` was "not found")."""


def private_tmp(tmp: Path) -> str:
    """Return the shell command mounting tmp over /tmp, with SHARED_UNDER_TMP still in place inside it."""
    steps = []
    for keep in SHARED_UNDER_TMP:
        inner = shlex.quote(str(tmp / keep.relative_to("/tmp")))
        steps.append(f"mkdir -p {inner} && mount --bind {shlex.quote(str(keep))} {inner}")
    steps.append(f"mount --rbind {shlex.quote(str(tmp))} /tmp")
    return " && ".join(steps)


@dataclass
class Host:
    """One namespace host: its hostname, namespace, management address and private folder."""

    name: str
    netns: str
    addr: str
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    pid_ns: int = 0
    """pid_ns is the inode of the host's PID namespace (0 until started)."""

    @property
    def home(self) -> Path:
        """The folder the host sees as /root."""
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        """The folder the host sees as /tmp."""
        return self.dir / "tmp"

    def pids(self) -> list[int]:
        """List the processes (host PIDs) living in the host's PID namespace."""
        return _pids_in_namespace("pid", self.pid_ns) if self.pid_ns else []


@dataclass
class NamespaceHosts:
    """The namespace hosts, the user's machine (``ctl``) and the links between them."""

    dir: Path
    key: Path
    switch: str
    ctl: str
    hosts: list[Host] = field(default_factory=list)
    links: list[tuple[str, str, str, str]] = field(default_factory=list)
    """links are the test-network veths: (host netns, iface, peer netns, peer iface)."""

    @property
    def ctl_home(self) -> Path:
        """The user's home on ctl (HOME there)."""
        return self.dir / "ctl" / "home"

    def ctl_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Return the environment of commands on ctl: this one, with ctl's HOME and no Ray address."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["HOME"] = str(self.ctl_home)
        env.update(extra or {})
        return env

    def ctl_argv(self, argv: Sequence[str]) -> list[str]:
        """Wrap a command to run on ctl: in its namespace, with ctl's own /tmp."""
        script = f'{private_tmp(self.dir / "ctl" / "tmp")} && exec "$@"'
        return ["ip", "netns", "exec", self.ctl, "unshare", "--mount", "--propagation", "private",
                "sh", "-c", script, "ctl", *argv]  # fmt: skip

    def on_ctl(self, argv: Sequence[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run a command on ctl and return its output (never raising on a non-zero exit)."""
        env = kw.pop("env", None) or self.ctl_env()
        return subprocess.run(self.ctl_argv(argv), capture_output=True, text=True, timeout=timeout, env=env, **kw)  # type: ignore[call-overload, no-any-return]

    def ssh_argv(self, host: Host, command: str) -> list[str]:
        """Return the ssh command (to run on ctl) that runs command on host as root."""
        return ["ssh", "-i", str(self.key), *SSH_OPTIONS, f"root@{host.addr}", command]

    def ssh(self, host: Host, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a shell command on a host over SSH from ctl, as a user would."""
        return self.on_ctl(self.ssh_argv(host, command), timeout)

    def host(self, name: str) -> Host:
        """Return the host with that hostname."""
        return next(h for h in self.hosts if h.name == name)


def _pids_in_namespace(kind: str, inode: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/{kind}").st_ino == inode:
                out.append(int(entry))
        except OSError:
            continue
    return out


def _netns_inode(name: str) -> int:
    try:
        return os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return -1


def _veth(a_ns: str, a: str, b_ns: str, b: str) -> None:
    sh("ip", "link", "add", a, "netns", a_ns, "type", "veth", "peer", "name", b, "netns", b_ns)
    sh("ip", "-n", a_ns, "link", "set", a, "up")
    sh("ip", "-n", b_ns, "link", "set", b, "up")


def _wait_settled(namespaces: Sequence[str]) -> None:
    """_Wait_settled waits until every link has carrier and no IPv6 address is tentative.

    The kernel brings both about a second or two after the links come up
    (linkwatch, duplicate address detection): a test that compares a host's
    addresses and routes before and after must start from the settled ones.
    """
    deadline = time.monotonic() + SSH_READY_SECONDS
    while time.monotonic() < deadline:
        busy = [ns for ns in namespaces
                if "NO-CARRIER" in sh("ip", "-n", ns, "link").stdout or sh("ip", "-n", ns, "-6", "addr", "show", "tentative").stdout]  # fmt: skip
        if not busy:
            return
        time.sleep(0.05)
    raise RuntimeError(f"links in {busy} did not settle")


def _wait_listening(host: Host, log: Path) -> None:
    deadline = time.monotonic() + SSH_READY_SECONDS
    while time.monotonic() < deadline:
        if "Server listening on" in log.read_text(errors="replace"):
            return
        if host.proc is not None and host.proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"sshd on {host.name} did not start: {log.read_text(errors='replace')[-2000:]}")


def _start(host: Host, authorized_key: str) -> None:
    for d in ("home/.ssh", "tmp", "sshd"):
        (host.dir / d).mkdir(parents=True, exist_ok=True)
    os.chmod(host.tmp, 0o1777)
    # What a fresh Debian account has: the shell start-up files (Ray's commands source ~/.bashrc).
    for f in Path("/etc/skel").glob(".*"):
        if f.is_file():
            shutil.copy(f, host.home / f.name)
    (host.home / ".ssh" / "authorized_keys").write_text(authorized_key)
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host.dir / "sshd" / "host_key"))
    (host.dir / "sshd" / "sshd_config").write_text(SSHD_CONFIG.format(addr=host.addr, dir=host.dir / "sshd"))
    log = host.dir / "sshd.log"
    host.proc = subprocess.Popen(
        ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc",
         "--kill-child", "--propagation", "private", "sh", "-c", HOST_INIT.format(private_tmp=private_tmp(host.tmp)), "host-init", host.name, str(host.dir)],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    _wait_listening(host, log)
    # sshd, PID 1 of the host, is the only child of unshare.
    (sshd,) = psutil.Process(host.proc.pid).children()
    host.pid_ns = os.stat(f"/proc/{sshd.pid}/ns/pid").st_ino


def _stop(hosts: Sequence[Host]) -> dict[str, list[int]]:
    """_Stop ends every process of the hosts and returns, per host, those still alive after STOP_SECONDS.

    Killing a host's unshare kills its sshd (``--kill-child``), and the death
    of PID 1 kills the rest of the PID namespace; that takes the kernel 1-2 s
    here, so all hosts are killed first and waited for together.
    """
    for host in hosts:
        if host.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(host.proc.pid, signal.SIGKILL)
            host.proc.wait(STOP_SECONDS)
    deadline = time.monotonic() + STOP_SECONDS
    while any(h.pids() for h in hosts) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {h.name: h.pids() for h in hosts if h.pids()}


@contextlib.contextmanager
def namespace_hosts(names: Sequence[str] = ("h1", "h2", "h3")) -> Iterator[NamespaceHosts]:
    """Yield namespace hosts named by names (a chain: the first - the second - ... on the test network).

    The test-network ifaces are ``tn0`` on the first and last host and
    ``tn-l``/``tn-r`` on those between. Raises RuntimeError if a host's sshd
    does not start; on exit everything is removed, and an AssertionError says
    what outlived it.
    """
    base = Path(tempfile.mkdtemp(prefix=f"antler-hosts-{os.getpid()}-", dir="/var/tmp"))
    tb = NamespaceHosts(dir=base, key=base / "ctl" / "home" / ".ssh" / "id_ed25519", switch=unique_name("tbs"),
                 ctl=unique_name("tbc"))  # fmt: skip
    made: list[str] = []
    try:
        tb.key.parent.mkdir(parents=True)
        (base / "ctl" / "tmp").mkdir()
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "antler-testbed", "-f", str(tb.key))
        public = tb.key.with_suffix(".pub").read_text()
        for ns in (tb.switch, tb.ctl):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", tb.switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", tb.switch, "link", "set", "br0", "up")

        def attach(ns: str, addr: str, port: str) -> None:
            _veth(ns, "mgmt0", tb.switch, port)
            sh("ip", "-n", tb.switch, "link", "set", port, "master", "br0")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "mgmt0")

        attach(tb.ctl, CTL_ADDR, "p-ctl")
        for k, name in enumerate(names):
            host = Host(name, unique_name("tbh"), f"{MGMT_NET}.{k + 11}", base / name)
            sh("ip", "netns", "add", host.netns)
            made.append(host.netns)
            sh("ip", "-n", host.netns, "link", "set", "lo", "up")
            attach(host.netns, host.addr, f"p-{k}")
            tb.hosts.append(host)
        for k in range(len(names) - 1):
            a, b = tb.hosts[k], tb.hosts[k + 1]
            a_if = "tn0" if k == 0 else "tn-r"
            b_if = "tn0" if k + 1 == len(names) - 1 else "tn-l"
            _veth(a.netns, a_if, b.netns, b_if)
            tb.links.append((a.netns, a_if, b.netns, b_if))
        for host in tb.hosts:
            _start(host, public)
        _wait_settled(made)
        yield tb
    except BaseException:
        failed = True
        raise
    else:
        failed = False
    finally:
        stragglers = _stop(tb.hosts)
        # What ran on ctl and outlived its command (ssh's connection masters,
        # which `ray up` leaves for ControlPersist) ends with ctl.
        for pid in _pids_in_namespace("net", _netns_inode(tb.ctl)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for ns in reversed(made):
            sh("ip", "netns", "del", ns, check=False)
        shutil.rmtree(base, ignore_errors=True)
        remaining = set(made) & netns_list()
        if not failed:  # never hide the error that ended the test
            assert not stragglers, f"processes outlived their namespace host: {stragglers}"
            assert not remaining, f"namespaces left behind: {sorted(remaining)}"
