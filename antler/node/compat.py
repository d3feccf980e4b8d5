"""What the node side uses of Python 3.11 that 3.9 and 3.10 lack: the standard 3.11 names, or a small backport.

A node that runs as a process (a local or SSH node) runs on the host's own
``python3``, which may be 3.9 (Debian 11) or 3.10 (Ubuntu 22.04); the node's
code takes these names from here. On 3.11 and newer each one *is* the
standard library's, so a node in the driver's environment behaves exactly as
before. The backports follow the semantics of CPython 3.11's
``asyncio.TaskGroup`` (Lib/asyncio/taskgroups.py) and ``asyncio.timeout``
(Lib/asyncio/timeouts.py) as far as the node uses them: the first failing
task cancels its siblings and the group raises an ExceptionGroup of every
failure; a timeout that expires cancels the block and raises TimeoutError.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from datetime import timezone
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")

UTC = timezone.utc
"""UTC is ``datetime.UTC`` (an alias of ``timezone.utc``, new in 3.11)."""

AsyncTimeout = asyncio.TimeoutError
"""AsyncTimeout is what asyncio raises when a wait times out: the builtin TimeoutError from 3.11 on, its own class before."""

if sys.version_info >= (3, 11):
    from asyncio import TaskGroup, timeout  # novermin (3.11 and newer only)
    from builtins import BaseExceptionGroup, ExceptionGroup  # novermin (3.11 and newer only)
else:  # pragma: no cover - exercised by the tests that run the node on Python 3.9

    class BaseExceptionGroup(BaseException):
        """The 3.11 builtin's stand-in: a message and the exceptions it groups."""

        def __init__(self, message: str, exceptions: list[BaseException]) -> None:
            super().__init__(message, tuple(exceptions))
            self.message = message
            self.exceptions = tuple(exceptions)

        def __str__(self) -> str:
            n = len(self.exceptions)
            return f"{self.message} ({n} sub-exception{'' if n == 1 else 's'})"

    class ExceptionGroup(BaseExceptionGroup, Exception):
        """A BaseExceptionGroup of Exceptions only (an ``except Exception`` catches it, as in 3.11)."""

    def _group(message: str, errors: list[BaseException]) -> BaseExceptionGroup:
        if all(isinstance(e, Exception) for e in errors):
            return ExceptionGroup(message, errors)
        return BaseExceptionGroup(message, errors)

    class TaskGroup:
        """An ``async with`` block that waits for the tasks made in it; the first failure cancels the rest."""

        def __init__(self) -> None:
            self._tasks: set[asyncio.Task[Any]] = set()
            self._errors: list[BaseException] = []
            self._parent: asyncio.Task[Any] | None = None
            self._waiter: asyncio.Future[None] | None = None
            self._exiting = False
            self._aborting = False
            self._parent_cancel_requested = False

        async def __aenter__(self) -> TaskGroup:
            self._parent = asyncio.current_task()
            return self

        def create_task(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
            """Start coro as a task of the group."""
            task = asyncio.get_running_loop().create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._on_done)
            return task

        def _abort(self) -> None:
            self._aborting = True
            for t in self._tasks:
                if not t.done():
                    t.cancel()

        def _on_done(self, task: asyncio.Task[Any]) -> None:
            self._tasks.discard(task)
            if self._waiter is not None and not self._tasks and not self._waiter.done():
                self._waiter.set_result(None)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is None:
                return
            self._errors.append(exc)
            if not self._aborting:
                self._abort()
                if not self._exiting and self._parent is not None and not self._parent.done():
                    # The block's own body is still running: stop it (3.11 does the same).
                    self._parent_cancel_requested = True
                    self._parent.cancel()

        async def __aexit__(
            self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> bool:
            self._exiting = True
            propagate_cancel: BaseException | None = None
            if et is asyncio.CancelledError:
                if not self._parent_cancel_requested:
                    propagate_cancel = exc
            elif exc is not None and not self._aborting:
                self._abort()
            while self._tasks:
                self._waiter = asyncio.get_running_loop().create_future()
                try:
                    await self._waiter
                except asyncio.CancelledError as e:
                    if not self._parent_cancel_requested:
                        propagate_cancel = e
                    self._abort()
                self._waiter = None
            if propagate_cancel is not None and not self._errors:
                raise propagate_cancel
            if et is not None and et is not asyncio.CancelledError and exc is not None:
                self._errors.append(exc)
            if self._errors:
                errors, self._errors = self._errors, []
                raise _group("unhandled errors in a TaskGroup", errors)
            return self._parent_cancel_requested and et is asyncio.CancelledError

    class _Timeout:
        """The ``async with timeout(delay)`` block: cancelled after delay seconds, which raises TimeoutError."""

        def __init__(self, delay: float | None) -> None:
            self._delay = delay
            self._handle: asyncio.TimerHandle | None = None
            self._expired = False

        async def __aenter__(self) -> _Timeout:
            task = asyncio.current_task()
            if self._delay is not None and task is not None:
                self._handle = asyncio.get_running_loop().call_later(max(self._delay, 0.0), self._expire, task)
            return self

        def _expire(self, task: asyncio.Task[Any]) -> None:
            self._expired = True
            task.cancel()

        async def __aexit__(
            self, et: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> None:
            if self._handle is not None:
                self._handle.cancel()
            if self._expired and et is asyncio.CancelledError:
                raise asyncio.TimeoutError from exc

    def timeout(delay: float | None) -> _Timeout:
        """Return a block that is cancelled after delay seconds (None: never), raising TimeoutError."""
        return _Timeout(delay)


__all__ = ["UTC", "AsyncTimeout", "BaseExceptionGroup", "ExceptionGroup", "TaskGroup", "timeout"]
