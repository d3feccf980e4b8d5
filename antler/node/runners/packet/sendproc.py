"""The packet sender process: releases a flow's packets on schedule, alone on its CPU time.

A packet client's sends run in a child process of their own, started with
:func:`spawn`. In the node's process the sender would share the GIL with the
receive thread, the recorder and the node's event loop: any of them holding
it when a deadline comes makes the packet late, by up to the interpreter's
switch interval (milliseconds). Alone, the process waits with the hybrid
timer (sleep, then spin), and at real-time priority where the host allows it
(:data:`RT_PRIORITY`), so other processes do not preempt it at a deadline.

Its only imports are the standard library and the small timer, wire and HMAC
modules. Protocol, over pipes:

- stdin: one JSON line (the socket's descriptor, destination, packet templates,
  HMAC key, priority), then the plan as :data:`PLAN` records (offset from the
  start in ns, length, echo) until end of file;
- stdout: one :data:`SENT` record per packet (monotonic send time, monotonic
  deadline, sequence number, length, flags, errno or 0), written in chunks
  when there is time to spare;
- SIGTERM stops it early; what it sent is still reported.
"""

from __future__ import annotations

import ctypes
import fcntl
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PLAN = struct.Struct("<qHB")
"""PLAN is one planned packet: offset from the start (ns), length, echo (0 or 1)."""
SENT = struct.Struct("<qqqHBB")
"""SENT is one packet sent: monotonic time (ns), monotonic deadline (ns), seq, length, flags, errno (0: sent)."""
RT_PRIORITY = 10
"""RT_PRIORITY is the SCHED_FIFO priority asked for (the delay link's too); without the privilege it runs normally."""
SPIN_SHARE = 4
"""SPIN_SHARE: the timer spins for at most 1/SPIN_SHARE of the gap between two packets, leaving the CPU
to the receivers at high rates (at 1,000 packets/s that is 250 µs, more than the timer needs)."""
START_DELAY_NS = 5_000_000
"""START_DELAY_NS puts the first deadline a little after the process is ready."""
SLACK_NS = 150_000
"""SLACK_NS: housekeeping (reading the plan, writing records) happens only this far ahead of a deadline ..."""
FLUSH_NS = 20_000_000
"""... and records are written every FLUSH_NS at most, or ..."""
FLUSH_BYTES = SENT.size * 256
"""... whenever FLUSH_BYTES are waiting, even at a deadline (at very high rates there is no slack)."""
PLAN_LOW = 2048
"""PLAN_LOW: below this many planned packets in hand, more of the plan is read while there is slack."""
PLAN_SHORT = 256
"""PLAN_SHORT: below this many in hand, the plan is read even without slack, rather than run dry at a deadline."""
PIPE_BYTES = (8 << 20, 1 << 20)
"""PIPE_BYTES are the pipe sizes asked for, in turn (beyond /proc/sys/fs/pipe-max-size needs privilege)."""
_F_SETPIPE_SZ = 1031
_PR_SET_PDEATHSIG = 1


class _Stop(Exception):
    """_Stop is SIGTERM: stop sending, report what was sent."""


def _on_term(signum: int, frame: object) -> None:
    raise _Stop()


class _Plan:
    """_Plan reads planned packets from stdin as the sender needs them.

    Records stay in the bytes read and are unpacked one at a time: unpacking
    thousands at once would hold up the packet due next by milliseconds.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        self.pos = 0
        self.eof = False

    def __len__(self) -> int:
        return (len(self.buf) - self.pos) // PLAN.size

    def read(self, block: bool) -> None:
        """Take what the pipe holds (waiting for it if block)."""
        if self.eof:
            return
        if not block and not select.select([self.fd], [], [], 0)[0]:
            return
        data = os.read(self.fd, 1 << 16)
        if not data:
            self.eof = True
            return
        self.buf = self.buf[self.pos :] + data
        self.pos = 0

    def line(self) -> bytes | None:
        """Return the first line (the set-up), leaving what follows it as plan; None at end of file."""
        while (end := self.buf.find(b"\n", self.pos)) < 0:
            if self.eof:
                return None
            self.read(block=True)
        first = self.buf[self.pos : end]
        self.pos = end + 1
        return first

    def pop(self) -> tuple[int, int, int] | None:
        """Return the next planned packet, or None at the end of the plan."""
        while not len(self):
            if self.eof:
                return None
            self.read(block=True)
        r: tuple[int, int, int] = PLAN.unpack_from(self.buf, self.pos)
        self.pos += PLAN.size
        return r


def _setup(priority: int) -> bool:
    """_Setup makes the process a good timer: 1 ns timer slack, dies with its parent, real-time if allowed."""
    from antler.node.runners.packet.timer import set_timer_slack

    set_timer_slack(1)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass
    # Nothing here makes garbage cycles; a collection would only delay a packet.
    gc.disable()
    if priority <= 0:
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (OSError, AttributeError):
        return False


def spawn(fd: int) -> subprocess.Popen[bytes]:
    """Start a sender process that will send on the socket with descriptor fd."""
    root = str(Path(__file__).resolve().parents[4])
    code = f"import sys; sys.path.insert(0, {root!r}); from antler.node.runners.packet.sendproc import main; main()"
    # -I -S: no site packages and no environment, so it starts in tens of ms.
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(fd,),
    )
    assert proc.stdin is not None and proc.stdout is not None
    for f in (proc.stdin, proc.stdout):
        _grow_pipe(f.fileno())
    return proc


def _grow_pipe(fd: int) -> None:
    # A full pipe would block the sender at a deadline while this process is
    # busy: a few MB hold seconds of plan and records even at 50,000 packets/s.
    for size in PIPE_BYTES:
        try:
            fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
            return
        except OSError:
            continue


def write_all(fd: int, data: bytes | bytearray) -> None:
    """Write all of data to fd (os.write may write part of it)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    """Run the sender: config line, then the plan, from stdin; records to stdout."""
    import antler.node.hmac as hmac
    import antler.node.runners.packet.wire as wire
    from antler.node.runners.packet.timer import HybridTimer

    signal.signal(signal.SIGTERM, _on_term)
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    plan = _Plan(stdin)
    line = plan.line()
    if line is None:
        return
    cfg: dict[str, Any] = json.loads(line)
    sock = socket.socket(fileno=cfg["fd"])
    addr = tuple(cfg["addr"])
    templates = {(n, bool(e)): bytes.fromhex(h) for n, e, h in cfg["templates"]}
    key = bytes.fromhex(cfg["key"]) if cfg["key"] else None
    tag_at = int(cfg["tag_at"])
    realtime = _setup(int(cfg.get("priority", RT_PRIORITY)))
    os.write(stdout, b"R" if realtime else b"N")  # ready; the parent notes the priority

    hyb = HybridTimer()
    mono = time.monotonic_ns
    out = bytearray()
    flushed = mono()

    def flush() -> None:
        nonlocal out, flushed
        if out:
            write_all(stdout, out)
            out = bytearray()
        flushed = mono()

    seq = 0
    start = last = mono() + START_DELAY_NS
    try:
        while (p := plan.pop()) is not None:
            offset, length, echo = p
            buf = bytearray(templates[(length, bool(echo))])
            wire.set_seq(buf, seq)
            if key is not None:
                hmac.sign_in_place(key, buf, tag_at)
            deadline = start + offset
            now = mono()
            if deadline - now > hyb.spin_ns + SLACK_NS:
                if len(plan) < PLAN_LOW:
                    plan.read(block=False)
                if out and now - flushed > FLUSH_NS:
                    flush()
            elif len(plan) < PLAN_SHORT:
                plan.read(block=False)  # no slack at this rate: a copy of 64 KB at most
            # Spin for at most a quarter of the gap since the last send: a real-time
            # process that never sleeps is throttled by the kernel (50 ms in
            # every second by default), which would stall the flow.
            now = hyb.wait_until(deadline, (deadline - last) // SPIN_SHARE)
            try:
                sock.sendto(buf, addr)
                err = 0
            except OSError as e:
                err = (e.errno or 255) & 0xFF
            out += SENT.pack(now, deadline, seq, length, buf[3], err)
            last = now
            seq += 1
            if len(out) >= FLUSH_BYTES:
                flush()
    except _Stop:
        pass
    except BrokenPipeError:
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    flush()


if __name__ == "__main__":
    main()
