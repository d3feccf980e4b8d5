"""Ctrl-C while tests run: the first stops them and keeps what they measured, the second exits at once.

As antler does. The first SIGINT cancels the running tests: their nodes run
their cleanup (servers stopped, commands interrupted, namespaces deleted),
the reports of the tests that ended are made, the interrupted test is marked
so in its meta.json and the result folder gets its dated name; the command
then exits with status 130 (within 10 s of the signal during
``+experiment=cubic`` here, see docs/reliability.md).

The second SIGINT exits at once, with status 130 and no traceback, after the
few things that take no time (at most :data:`EXIT_SECONDS`, on a thread of
their own, so that nothing the signal interrupted can hold them up): the
running tests are marked interrupted and the result folder is moved to its
dated name, and the namespaces and command sessions this invocation holds on
this host are removed (antler.node.launch.reclaim). Whatever is left
elsewhere (a node on another host) is reclaimed by the next run there.

Asyncio's own runner is not used: on a second SIGINT it raises
KeyboardInterrupt into whatever runs, then cancels every task and waits for
them without a bound; with the tests' cleanup shielded from cancellation,
that wait was where the command hung.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine
from types import FrameType, TracebackType
from typing import Any, TypeVar

from antler import exitcode

T = TypeVar("T")

EXIT_SECONDS = 3.0
"""EXIT_SECONDS bounds what a second Ctrl-C does before the process exits."""
FINISH_SECONDS = 5.0
"""FINISH_SECONDS bounds the wait for tasks still running when the command's main task has ended."""
NOTICE = "interrupted: stopping the tests, keeping what they measured (Ctrl-C again exits at once)"


class Interrupts:
    """Handles SIGINT for a command that runs tests; use it as a context manager, and ``run`` the tests.

    ``emergency`` is what a second Ctrl-C does before the exit; it returns
    lines to print. Outside ``run`` (before the event loop starts, or after it
    ended), a first Ctrl-C raises KeyboardInterrupt as Python's default does.
    """

    def __init__(self, emergency: Callable[[], list[str]]) -> None:
        self.emergency = emergency
        self.count = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self._saved: Any = None

    def __enter__(self) -> Interrupts:
        self._saved = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        signal.signal(signal.SIGINT, self._saved)

    def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run main on a new event loop until it returns; the first Ctrl-C cancels it.

        Raises KeyboardInterrupt if main ends canceled (it did not handle the cancel itself).
        """
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            task = loop.create_task(main)
            self._loop, self._task = loop, task
            try:
                return loop.run_until_complete(task)
            except asyncio.CancelledError:
                raise KeyboardInterrupt() from None
            finally:
                self._loop, self._task = None, None
                _finish(loop)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count > 1:
            self._exit_now()
        loop, task = self._loop, self._task
        if loop is None or task is None or task.done():
            raise KeyboardInterrupt()
        # On the loop, not here: the signal may have interrupted code holding a lock the notice needs.
        loop.call_soon_threadsafe(self._stop, task)

    def _stop(self, task: asyncio.Task[Any]) -> None:
        print(NOTICE, file=sys.stderr, flush=True)
        task.cancel()

    def _exit_now(self) -> None:
        """_Exit_now does the emergency work on a thread, for at most EXIT_SECONDS, then exits with 130."""

        def work() -> None:
            _say("second Ctrl-C: exiting now")
            try:
                lines = self.emergency()
            except BaseException as e:
                lines = [f"could not finish: {type(e).__name__}: {e}"]
            for line in lines:
                _say(line)

        thread = threading.Thread(target=work, name="exit-now", daemon=True)
        thread.start()
        thread.join(EXIT_SECONDS)
        os._exit(exitcode.INTERRUPTED)


def _say(line: str) -> None:
    """_Say writes a line straight to descriptor 2: the terminal's queue may be held by the code the signal interrupted."""
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode(errors="replace"))


def _finish(loop: asyncio.AbstractEventLoop) -> None:
    """_Finish cancels the tasks main left and waits a bounded time for them, the async generators and the executor."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    with contextlib.suppress(BaseException):
        if tasks:
            loop.run_until_complete(asyncio.wait(tasks, timeout=FINISH_SECONDS))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_asyncgens(), FINISH_SECONDS))
        loop.run_until_complete(asyncio.wait_for(loop.shutdown_default_executor(), FINISH_SECONDS))
