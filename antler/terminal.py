"""The terminal: the tool's output, which never holds up, hangs or fails a test.

A test's data goes to its result folder; the terminal only shows it. So a
closed pipe (``antler-ray run ... | head -3``), a terminal paused with Ctrl-S,
or a pipe nobody reads must change nothing in a test. Before this module, a
broken pipe raised out of the live output into a node's cleanup, which then
left the rig's namespaces behind, and a full pipe would have blocked the
event loop that drives the test.

:class:`Terminal` takes lines into a bounded queue that one daemon thread
writes to the file descriptors with ``os.write``, never through
``sys.stdout``'s buffer: a write blocked on a stalled reader would otherwise
hold that buffer's lock when the interpreter exits, which aborts it ("could
not acquire lock ... at interpreter shutdown"). A write that fails (EPIPE when
the reader is gone, EIO when the terminal is) ends that stream's output for
good: later lines are dropped without a word. When the queue is full (the
reader is slower than the tool), lines are dropped and counted, and the
count is shown once the reader catches up; the test's ``log.txt`` has them
all.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

QUEUE_LINES = 10_000
"""QUEUE_LINES bounds the writes waiting for a slow terminal (about a megabyte of log lines)."""
CLOSE_SECONDS = 2.0
"""CLOSE_SECONDS is how long the command waits at its end for a slow terminal to take what is queued."""


class TermFile:
    """A text stream that queues to a :class:`Terminal` and never blocks or raises.

    Like a terminal's line buffering, whole lines are queued as they are
    written, the rest on ``flush`` (so a line is shown or dropped whole).
    """

    def __init__(self, terminal: Terminal, target: int | TextIO) -> None:
        self._terminal = terminal
        self._target = target
        self._pending = ""
        self._lock = threading.Lock()
        self.encoding = "utf-8"
        self.errors = "replace"

    def write(self, text: str) -> int:
        """Queue the whole lines of text; it returns len(text) even when they are dropped."""
        with self._lock:
            head, nl, tail = (self._pending + text).rpartition("\n")
            self._pending = tail
        if nl:
            self._terminal.put(self._target, head + nl)
        return len(text)

    def writelines(self, lines: Iterator[str] | list[str]) -> None:
        """Queue each line."""
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        """Queue what was written since the last whole line (tqdm's redrawn status line)."""
        with self._lock:
            text, self._pending = self._pending, ""
        if text:
            self._terminal.put(self._target, text)

    def fileno(self) -> int:
        """Return the file descriptor written (tqdm reads the terminal's width from it)."""
        if isinstance(self._target, int):
            return self._target
        return self._target.fileno()

    def isatty(self) -> bool:
        """Report whether the descriptor is a terminal."""
        try:
            return os.isatty(self.fileno())
        except (OSError, ValueError):
            return False

    def writable(self) -> bool:
        """Return True: writes never fail."""
        return True

    @property
    def closed(self) -> bool:
        """False: a stream whose reader went away keeps taking (and dropping) text."""
        return False


class Terminal:
    """Writes the tool's output from a thread of its own; ``out`` and ``err`` are its two streams.

    ``dropped`` counts the writes dropped because the queue was full, ``broken``
    names the descriptors whose reader went away.
    """

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None, size: int = QUEUE_LINES) -> None:
        out = sys.stdout if out is None else out
        err = sys.stderr if err is None else err
        self._streams = (out, err)  # held: a stream that is collected closes its descriptor
        self.out = TermFile(self, _target(out))
        self.err = TermFile(self, _target(err))
        self.dropped = 0
        self.broken: set[int | TextIO] = set()
        self._queue: queue.Queue[tuple[int | TextIO, str, int]] = queue.Queue(size)
        self._unshown = 0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_all, name="terminal", daemon=True)
        self._thread.start()

    def put(self, fd: int | TextIO, text: str) -> None:
        """Queue text for a descriptor (or stream), or drop and count it when the queue is full."""
        if fd in self.broken:
            return
        with self._lock:
            # The text carries the count dropped before it, so the notice shows where they were.
            try:
                self._queue.put_nowait((fd, text, self._unshown))
                self._unshown = 0
            except queue.Full:
                self.dropped += 1
                self._unshown += 1

    def _write_all(self) -> None:
        while True:
            fd, text, unshown = self._queue.get()
            if unshown:
                self._write(fd, f"[{unshown} lines not shown: the terminal was too slow; log.txt has them]\n")
            self._write(fd, text)
            self._queue.task_done()

    def _write(self, fd: int | TextIO, text: str) -> None:
        if fd in self.broken:
            return
        try:
            if isinstance(fd, int):
                data = text.encode("utf-8", "replace")
                while data:
                    n = os.write(fd, data)
                    data = data[n:]
            else:
                fd.write(text)
                fd.flush()
        except (OSError, ValueError):
            # EPIPE (the reader is gone), EIO (so is the terminal), EBADF or a closed stream: nobody reads any more.
            self.broken.add(fd)

    def drain(self, timeout_s: float = CLOSE_SECONDS) -> bool:
        """Wait up to timeout_s for the queue to be written; it returns whether it was."""
        deadline = time.monotonic() + timeout_s
        done = self._queue.all_tasks_done
        with done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                done.wait(left)
        return True


def _target(stream: TextIO) -> int | TextIO:
    """_Target is the descriptor under a stream, or the stream itself when it has none (pytest's capture)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError, AttributeError):
        return stream
    with contextlib.suppress(OSError, ValueError, AttributeError):
        stream.flush()  # what was printed before goes first
    return fd


@contextlib.contextmanager
def redirected(terminal: Terminal) -> Iterator[Terminal]:
    """Send ``sys.stdout`` and ``sys.stderr`` to the terminal's streams until the block ends.

    Everything the command prints while it runs tests (the live output, the
    reports' ``emit_log: ["-"]``, tqdm's status line) then goes through the
    queue; at the end the terminal gets :data:`CLOSE_SECONDS` to take what
    is left, and the command ends whatever it did.
    """
    saved: tuple[TextIO, TextIO] = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = terminal.out, terminal.err  # type: ignore[assignment]
    try:
        yield terminal
    finally:
        sys.stdout, sys.stderr = saved
        terminal.out.flush()
        terminal.err.flush()
        terminal.drain()
