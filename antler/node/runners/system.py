"""The system runner: executes a command, in the foreground or background.

Output modes for ``stdout`` and ``stderr`` follow antler: empty gathers the
output into one log entry when the command exits, ``stream`` logs a line at a
time, ``quiet`` discards it, and any other value is a file name in the test's
result folder.

Commands start in their own session, so a Ctrl-C at the terminal reaches the
tool, which then interrupts or kills them itself and waits for them: no
command outlives its test. What a foreground command leaves running in its
process group (``sh -c 'x &'``) is killed when the test ends. Each session is
leased (antler.node.lease) until nothing of it runs, so if the node is killed
outright, the next run kills what is left (antler.node.launch.reclaim).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import antler.node.compat as compat
from antler.node import lease
from antler.node.feedback import Feedback
from antler.node.items import RunnerError

if TYPE_CHECKING:
    from antler.node.context import Context

READ_SIZE = 65536
GRACE_SECONDS = 5.0
"""GRACE_SECONDS is how long an interrupted command may take to exit before it is killed."""


@dataclass(frozen=True)
class System:
    """Executes a system command."""

    command: str = ""
    args: tuple[str, ...] = ()
    background: bool = False
    ignore_errors: bool = False
    stdout: str = ""
    stderr: str = ""
    kill: bool = False

    def validate(self) -> None:
        """Raise ValueError when there is no command to run."""
        if not self.argv():
            raise ValueError("system needs a command or args")

    def argv(self) -> list[str]:
        """Return the command split on spaces (no escaping), then args."""
        return self.command.split() + list(self.args)

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Start the command and, unless in the background, wait for it."""
        argv = self.argv()
        name = os.path.basename(argv[0])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=_pipe(self.stdout),
                stderr=_pipe(self.stderr),
                env=ctx.env,
                start_new_session=True,
            )
        except OSError as e:
            return self._fail(ctx, f"{name}: could not start: {e.strerror or e}")
        _lease(proc.pid, argv)
        pumps = [
            asyncio.ensure_future(_pump(ctx, proc.stdout, self.stdout, name)),
            asyncio.ensure_future(_pump(ctx, proc.stderr, self.stderr, name)),
        ]
        if self.background:
            ctx.on_cancel(lambda: self._stop(ctx, proc, pumps, name))
            return {}
        try:
            await asyncio.gather(*pumps)
            code = await proc.wait()
        except asyncio.CancelledError:
            await _terminate(ctx, proc, self.kill, name)
            for p in pumps:
                p.cancel()
            lease.give_back(lease.SESSION, str(proc.pid))
            raise
        if _group_alive(proc.pid):
            ctx.on_cancel(lambda: _kill_left(ctx, proc.pid, name))
        else:
            lease.give_back(lease.SESSION, str(proc.pid))
        if code != 0:
            return self._fail(ctx, f"{' '.join(argv)}: exited with status {code}")
        return {}

    def _fail(self, ctx: Context, message: str) -> Feedback:
        if self.ignore_errors:
            ctx.rec.log(f"ignored: {message}")
            return {}
        raise RunnerError(message, ctx.rec.error(message))

    async def _stop(
        self, ctx: Context, proc: asyncio.subprocess.Process, pumps: list[asyncio.Task[None]], name: str
    ) -> None:
        exited_alone = proc.returncode is not None
        if not exited_alone:
            await _terminate(ctx, proc, self.kill, name)
        await asyncio.gather(*pumps, return_exceptions=True)
        code = await proc.wait()
        await _kill_left(ctx, proc.pid, name)
        if exited_alone and code != 0:
            self._fail(ctx, f"{' '.join(self.argv())}: background command exited with status {code}")


def _lease(pid: int, argv: list[str]) -> None:
    start = lease.start_ticks(pid)
    if start is not None:
        lease.take(lease.SESSION, str(pid), start, " ".join(argv)[:200])


def _group_alive(pgid: int) -> bool:
    """_Group_alive reports whether a process of group pgid still runs (the command's leader has exited)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _kill_left(ctx: Context, pgid: int, name: str) -> None:
    """_Kill_left kills what a command left running in its process group, and gives its session's lease back."""
    if _group_alive(pgid):
        ctx.rec.log(f"{name}: killing what it left running (process group {pgid})")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    lease.give_back(lease.SESSION, str(pgid))


def _pipe(mode: str) -> int:
    return asyncio.subprocess.DEVNULL if mode == "quiet" else asyncio.subprocess.PIPE


async def _terminate(ctx: Context, proc: asyncio.subprocess.Process, kill: bool, name: str) -> None:
    """Signal the command's process group and wait for it, killing it after a grace period.

    The whole group: a child that ignores SIGINT (or the leader's exit) is
    killed once the grace period is over, and the log says so.
    """
    sig = signal.SIGKILL if kill else signal.SIGINT
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACE_SECONDS
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), GRACE_SECONDS)
    except compat.AsyncTimeout:
        ctx.rec.log(f"{name}: still running {GRACE_SECONDS:g}s after SIGINT: killed")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    while _group_alive(proc.pid) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _pump(ctx: Context, stream: asyncio.StreamReader | None, mode: str, name: str) -> None:
    if stream is None:
        return
    if mode == "stream":
        while line := await stream.readline():
            ctx.rec.log(line.decode(errors="replace").rstrip("\n"))
    elif mode == "":
        chunks = [chunk async for chunk in _chunks(stream)]
        text = b"".join(chunks).decode(errors="replace").rstrip("\n")
        if text:
            ctx.rec.log(text)
    else:
        wrote = False
        async for chunk in _chunks(stream):
            ctx.rec.file(mode, chunk)
            wrote = True
        if not wrote:
            ctx.rec.file(mode, b"")


async def _chunks(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await stream.read(READ_SIZE):
        yield chunk
