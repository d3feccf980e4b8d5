"""A worker process for the after reports of a sweep, at the lowest CPU priority.

The reports of a test (analysis, then plotly pages and matplotlib images)
take 0.4-0.7 s of CPU here. In a sweep they would hold up the next test for
that long; run in this worker instead, at nice 19, they overlap the next
test, whose set-up and measurement keep the CPU (under Linux's scheduler a
nice-19 task weighs 15 against a nice-0 task's 1024, about 1.5% of a contended
core, and the rig's SCHED_FIFO delay link and packet senders preempt it).

The worker is ``python -m antler.report.worker``: a fresh interpreter (never
forked from the driver's Ray threads), started when the sweep starts so its
imports (about a second) happen during the first test. It reads one request
per line on stdin (JSON: the test folder and its parsed ``test.after``,
pickled) and answers
one line on stdout (the errors and what the reports printed); it ignores
Ctrl-C, so the driver decides what to finish, and ends when stdin closes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import pickle
import signal
import sys
from pathlib import Path
from typing import Any, TextIO

from antler.report.spec import After

NICE = 19
"""NICE is the worker's CPU priority (man nice(1)): the lowest."""


class ReportWorker:
    """Runs after pipelines in its worker process, one at a time; ``close`` waits for them."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> ReportWorker:
        """Start the worker process."""
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "antler.report.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**24,  # a long traceback from a failed report is one line
        )
        return cls(proc)

    async def run_after(self, directory: Path, after: After, out: TextIO) -> list[str]:
        """Run a test's after pipeline in the worker, copy what it printed to out, and return its errors.

        ``after`` is the test's parsed ``test.after``; it travels pickled (the
        worker runs this same code), so it arrives exactly as parsed. Raises
        RuntimeError when the worker has died.
        """
        after_data = base64.b64encode(pickle.dumps(after)).decode()
        request = json.dumps({"dir": str(directory), "after": after_data}) + "\n"
        async with self._lock:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            try:
                self._proc.stdin.write(request.encode())
                await self._proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise RuntimeError("the report worker has died") from None
            line = await self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the report worker has died")
        answer: dict[str, Any] = json.loads(line)
        if answer["text"]:
            out.write(answer["text"])
            out.flush()
        return list(answer["errors"])

    async def close(self) -> None:
        """Tell the worker to end once its reports are done; ``wait`` waits for it."""
        async with self._lock:
            if self._proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self._proc.stdin.close()

    async def wait(self) -> None:
        """Wait for the worker to end (its interpreter's exit takes 0.7 s here: let it overlap other work)."""
        await self._proc.wait()


def main() -> None:
    """Serve report requests from stdin until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.nice(NICE)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout = sys.stderr  # whatever a report prints must not break the answers
    from antler.report.pipeline import run_after

    for line in sys.stdin:
        request = json.loads(line)
        out = io.StringIO()
        try:
            after = pickle.loads(base64.b64decode(request["after"]))
            errors = run_after(Path(request["dir"]), after, out)
        except Exception as e:  # the test folder vanished, say: the driver reports it
            errors = [f"reports failed: {type(e).__name__}: {e}"]
        answers.write(json.dumps({"errors": errors, "text": out.getvalue()}) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
