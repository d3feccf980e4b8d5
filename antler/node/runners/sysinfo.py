"""The sysinfo runner: gathers a node's system information, as antler's SysInfo.

It records the OS, the kernel, the output of chosen commands, the contents of
chosen files, environment variables whose names match patterns and sysctls
whose names match patterns, and sends them as one :class:`SysInfo` item; the
after pipeline renders it as ``sysinfo_<node>.html``.

Everything is read on the node's own thread: in a namespaced node that is the
thread inside the namespace, so ``/proc/sys/net`` shows the namespace's values
(an executor thread would show the host's).
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import antler.node.compat as compat
from antler.node.feedback import Feedback
from antler.node.items import SysInfo
from antler.node.secrets import mask_env
from antler.node.spec import check_regex

if TYPE_CHECKING:
    from antler.node.context import Context

MAX_FILE_BYTES = 1 << 20
"""MAX_FILE_BYTES is the most of a file recorded; system info is for reading, not archiving."""
COMMAND_TIMEOUT_S = 10.0
PROC_SYS = Path("/proc/sys")


@dataclass(frozen=True)
class SysCommand:
    """A command whose output is recorded: ``command`` split on spaces, then ``args``."""

    command: str = ""
    args: tuple[str, ...] = ()

    @classmethod
    def from_scalar(cls, value: Any) -> SysCommand:
        """Accept ``- uname -a``."""
        return cls(command=str(value))

    def argv(self) -> list[str]:
        """Return the command line."""
        return self.command.split() + list(self.args)

    def validate(self) -> None:
        """Raise ValueError when there is no command."""
        if not self.argv():
            raise ValueError("a sysinfo command needs a command or args")


@dataclass(frozen=True)
class SysInfoRunner:
    """Gathers system information on its node (runner type ``sysinfo``).

    ``env`` and ``sysctl`` are regular expressions matched against the whole
    name (sysctls in dotted form, e.g. ``net\\.ipv4\\.tcp_.*``). A variable
    whose name looks secret (antler.node.secrets.looks_secret) is recorded
    with its value masked; the HMAC key's variable is not in a node's
    environment at all.
    """

    os: bool = True
    kernel: bool = True
    command: tuple[SysCommand, ...] = ()
    file: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    sysctl: tuple[str, ...] = ()

    def validate(self) -> None:
        """Raise ValueError for a pattern that does not compile."""
        for p in (*self.env, *self.sysctl):
            check_regex("pattern", p)

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Gather the information and send it as a SysInfo item."""
        data: dict[str, Any] = {"hostname": platform.node()}
        if self.os:
            data["os"] = os_name()
            data["python"] = platform.python_version()
            data["cpus"] = os.cpu_count()
        if self.kernel:
            u = platform.uname()
            data["kernel"] = f"{u.system} {u.release} {u.version} {u.machine}"
        if self.command:
            data["command"] = {" ".join(c.argv()): await _output(c.argv(), ctx.env) for c in self.command}
        if self.file:
            data["file"] = {name: _read(Path(name)) for name in self.file}
        if self.env:
            pats = [re.compile(p) for p in self.env]
            # A variable whose name looks secret is recorded as set, never its value.
            data["env"] = mask_env({k: v for k, v in sorted(ctx.env.items()) if any(p.fullmatch(k) for p in pats)})
        if self.sysctl:
            data["sysctl"] = sysctls([re.compile(p) for p in self.sysctl])
        ctx.rec.send(SysInfo(ctx.node_id, data))
        return {}


def os_name() -> str:
    """Return the distribution's pretty name from os-release, or the platform."""
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        try:
            for line in Path(path).read_text().splitlines():
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
        except OSError:
            continue
    return platform.platform()


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        return f"(unreadable: {e.strerror or e})"
    text = data[:MAX_FILE_BYTES].decode(errors="replace")
    return text + ("\n(truncated)" if len(data) > MAX_FILE_BYTES else "")


async def _output(argv: list[str], env: dict[str, str]) -> str:
    """_output runs a command and returns its output; a failure is recorded as text, not raised."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
    except OSError as e:
        return f"(could not start: {e.strerror or e})"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), COMMAND_TIMEOUT_S)
    except compat.AsyncTimeout:
        proc.kill()
        await proc.wait()
        return f"(timed out after {COMMAND_TIMEOUT_S:g}s)"
    text = out.decode(errors="replace")
    return text if proc.returncode == 0 else f"{text}(exited with status {proc.returncode})"


def sysctls(patterns: list[re.Pattern[str]]) -> dict[str, str]:
    """Return the sysctls whose dotted names fully match one of the patterns."""
    out: dict[str, str] = {}
    for dirpath, _, files in os.walk(PROC_SYS):
        base = Path(dirpath).relative_to(PROC_SYS).as_posix().replace("/", ".")
        for f in files:
            name = f"{base}.{f}" if base != "." else f
            if any(p.fullmatch(name) for p in patterns):
                try:
                    out[name] = (PROC_SYS / dirpath / f).read_text().strip()
                except OSError:
                    continue  # write-only or permission-restricted entries
    return dict(sorted(out.items()))
