"""The packet client: sends a flow's packets on a precise schedule and records replies."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import heapq
import json
import os
import select
import socket
import subprocess
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import antler.node.runners.packet.sendproc as sendproc
import antler.node.runners.packet.sock as psock
from antler.node.feedback import Feedback
from antler.node.flow import check_flow
from antler.node.items import PacketInfo, sockaddr_text
from antler.node.kinds import NULL
from antler.node.runners.packet.clock import FlowClock
from antler.node.runners.packet.sender import PacketSenders, SendPlan
from antler.node.runners.packet.wire import (
    ECHO,
    FIXED_LEN,
    MAX_UDP_PAYLOAD,
    REPLY,
    BadPacket,
    Packet,
    PacketFlag,
    PacketHeader,
    header_len,
    parse,
)
from antler.node.sockopt import Sockopt, check_addr, set_tos

if TYPE_CHECKING:
    from antler.node.context import Context
    from antler.node.recorder import Columns

LATE_MIN_S, LATE_MAX_S, LATE_UNKNOWN_S = 0.2, 3.0, 1.0
"""After the last send, replies are awaited for 4x the largest RTT seen, within [LATE_MIN_S, LATE_MAX_S],
or LATE_UNKNOWN_S if no reply came at all (a lost server gives loss figures, not a hang)."""
POLL_SECONDS = 0.1
"""POLL_SECONDS is the longest the receive thread waits before checking for a stop."""
LATE_POLL_SECONDS = 0.005
"""LATE_POLL_SECONDS is how often the wait for late replies checks whether all have come."""
CLOSE_SECONDS = 5.0
"""CLOSE_SECONDS is how long a stopped sender process may take to report before it is killed."""
PLAN_CHUNK = 4096 * 11
"""PLAN_CHUNK is how many bytes of plan are written to the sender at once (4,096 packets)."""
REPLY_AHEAD = 1 << 20
"""REPLY_AHEAD bounds how far a reply's seq may run ahead of the sends recorded (they arrive in chunks)."""


@dataclass(frozen=True)
class PacketClient:
    """The client for packet flows (UDP).

    It sends to ``addr`` (``host:port``), or to the address found in the
    feedback under ``addr_key``, with every sender in ``sender`` running
    concurrently on the flow ``flow``. ``dscp`` and ``ecn`` set the IP TOS or
    IPv6 traffic class; ``sockopt`` sets further socket options.
    """

    flow: str = ""
    addr: str = ""
    addr_key: str = ""
    protocol: str = "udp"
    max_packet_size: int = 1480
    dscp: int = 0
    ecn: int = 0
    sockopt: tuple[Sockopt, ...] = ()
    sender: tuple[PacketSenders, ...] = ()
    flow_kind: ClassVar[str] = "packet"

    def validate(self) -> None:
        """Raise ValueError for a bad flow ID, address, protocol, TOS bits, or a sender's length."""
        check_flow(self.flow)
        if not self.addr and not self.addr_key:
            raise ValueError("packet_client needs addr or addr_key")
        if self.protocol not in psock.PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(psock.PROTOCOLS)}, not {self.protocol!r}")
        if self.addr:
            check_addr(self.addr, self.protocol, "addr")
        if not 1 <= self.max_packet_size <= MAX_UDP_PAYLOAD:
            raise ValueError(f"max_packet_size must be between 1 and {MAX_UDP_PAYLOAD}")
        if not 0 <= self.dscp <= 63:
            raise ValueError("dscp must be between 0 and 63")
        if not 0 <= self.ecn <= 3:
            raise ValueError("ecn must be between 0 and 3")
        if not self.sender:
            raise ValueError("packet_client needs at least one sender")
        for s in self.sender:
            for n in s.sender().length:
                if n > self.max_packet_size:
                    raise ValueError(f"packet length {n} is above max_packet_size {self.max_packet_size}")

    def expected_seconds(self) -> float:
        """Return the longest sender's duration plus the shortest late-reply wait."""
        return max(s.sender().expected_seconds() for s in self.sender) + LATE_MIN_S

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Send the flow, wait for late replies within a bound, and return.

        Raises ValueError without an address or for a packet shorter than its
        header, OSError for the socket, RuntimeError if the sender process fails.
        """
        addr = self.addr or str(feedback.get(self.addr_key, ""))
        if not addr:
            raise ValueError(f"flow {self.flow}: no address in feedback key {self.addr_key!r}")
        signed = ctx.hmac_key is not None
        hlen = header_len(self.flow, signed)
        for ps in self.sender:
            short = [n for n in ps.sender().length if n < hlen]
            if short:
                raise ValueError(
                    f"flow {self.flow}: packet length {short[0]} is shorter than the header ({hlen} bytes)"
                )
        try:
            check_addr(addr, self.protocol, "server address")
            family, sockaddr = psock.resolve(addr, self.protocol, passive=False)
        except (OSError, ValueError) as e:
            raise OSError(f"flow {self.flow}: {e}") from None
        s = socket.socket(family, socket.SOCK_DGRAM)
        try:
            set_tos(s, self.dscp, self.ecn)
            granted = [g for g in (opt.apply(s) for opt in self.sockopt) if g]
            for g in granted:
                ctx.rec.log(f"flow {self.flow}: {g}")
            psock.grow_rcvbuf(s)
            psock.enable_rx_timestamps(s)
            psock.enable_rx_tos(s)  # replies' marking, as it arrives, goes into packet_io.tos
            # Bind now so replies to the very first packet have a socket to land on.
            s.bind(("::", 0) if family == socket.AF_INET6 else ("0.0.0.0", 0))
        except OSError as e:
            s.close()
            raise OSError(f"flow {self.flow}: socket for {addr} ({self.protocol}): {e.strerror or e}") from None
        except BaseException:
            s.close()
            raise
        flow = _Flow(ctx, self, s, sockaddr, addr, "; ".join(granted))
        try:
            await flow.run()
        finally:
            await flow.close()
        return {}


class _Flow:
    """_Flow is one running PacketClient.

    Packets leave from a sender process of their own (sendproc.py), which has
    its CPU time to itself; this process feeds it the plan, records what it
    reports sending, and receives the replies on a thread that is never held
    up by a spinning timer. Receive times come from the kernel.
    """

    def __init__(
        self, ctx: Context, spec: PacketClient, s: socket.socket, sockaddr: Any, addr: str, sockopts: str = ""
    ) -> None:
        self.ctx = ctx
        self.addr = addr
        self.spec = spec
        self.sock = s
        self.sockaddr = sockaddr
        self.key = ctx.hmac_key
        self.clock = FlowClock()
        local, remote = sockaddr_text(s.getsockname()), sockaddr_text(sockaddr)
        ctx.rec.send(PacketInfo(self.clock.tinit, spec.flow, False, ctx.node_id, local, remote, sockopts))
        self.cols: Columns = ctx.rec.columns("packet_io", spec.flow, server=False)
        self.sent = 0
        self.echo_sent = 0
        self.replies = 0
        self.max_rtt_ns = 0
        self.realtime = False
        self.errors: Counter[str] = Counter()
        # Per sequence number: the send time (-1: not sent), whether a reply came.
        self._send_t = array("q")
        self._replied = bytearray()
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._buf = bytearray(spec.max_packet_size + 1)
        self._view = memoryview(self._buf)

    async def run(self) -> None:
        self.sock.setblocking(False)  # shared with the sender, which counts a full buffer as a send error
        # Forked from the node's own thread: the sender dies with it (PDEATHSIG).
        proc = self._proc = sendproc.spawn(self.sock.fileno())
        assert proc.stdin is not None and proc.stdout is not None
        self._start(self._write_plan, proc.stdin.fileno())
        self._start(self._receive)
        reader = self._start(self._read_sent, proc.stdout.fileno())
        await asyncio.to_thread(reader.join)
        code = await asyncio.to_thread(proc.wait)
        if self._stop.is_set():
            return
        if code != 0:
            assert proc.stderr is not None
            detail = proc.stderr.read().decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"flow {self.spec.flow}: the sender process failed: {detail[-1] if detail else code}")
        if self.echo_sent:
            await asyncio.to_thread(self._await_replies)

    def _start(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        t = threading.Thread(target=target, args=args, name=f"packet-{self.spec.flow}-{target.__name__}", daemon=True)
        t.start()
        self._threads.append(t)
        return t

    async def close(self) -> None:
        self._stop.set()
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()  # it stops and reports what it sent
            try:
                await asyncio.to_thread(proc.wait, CLOSE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        # The threads end on their own once the sender has exited (end of file,
        # a broken pipe, the stop flag): their pipes are closed after, never under them.
        for t in self._threads:
            await asyncio.to_thread(t.join)
        if proc is not None:
            for f in (proc.stdin, proc.stdout, proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
        self.sock.close()
        text = f"flow {self.spec.flow}: sent {self.sent} packets to {self.addr}"
        if self.echo_sent:
            text += f", {self.replies} of {self.echo_sent} echo requests answered"
        if proc is not None and not self.realtime:
            text += "; sender at normal priority (no real-time scheduling allowed)"
        if self.errors:
            text += "; " + ", ".join(f"{v} {k}" for k, v in sorted(self.errors.items()))
        self.ctx.rec.log(text)

    def _templates(self) -> list[tuple[int, bool, str]]:
        flag = {True: PacketFlag.ECHO, False: PacketFlag(0)}
        wanted = {(n, ps.sender().echo) for ps in self.spec.sender for n in ps.sender().length}
        return [
            (n, echo, Packet(PacketHeader(flag[echo], 0, self.spec.flow), n).encode(self.key).hex())
            for n, echo in sorted(wanted)
        ]

    def _write_plan(self, fd: int) -> None:
        """_Write_plan sends the sender its set-up and the merged plan of every sender, then end of file."""
        config = {
            "fd": self.sock.fileno(),
            "addr": list(self.sockaddr),
            "templates": self._templates(),
            "key": self.key.hex() if self.key is not None else None,
            "tag_at": FIXED_LEN + len(self.spec.flow),
            "priority": sendproc.RT_PRIORITY,
        }
        pack = sendproc.PLAN.pack
        try:
            sendproc.write_all(fd, json.dumps(config).encode() + b"\n")
            # Merge the senders' plans into one time-ordered schedule, so
            # sequence numbers follow send order across senders.
            heap: list[tuple[int, int, int, bool]] = []
            plans: list[SendPlan] = [ps.sender().plan() for ps in self.spec.sender]
            for i, plan in enumerate(plans):
                first = next(plan, None)
                if first is not None:
                    heap.append((first[0], i, first[1], first[2]))
            heapq.heapify(heap)
            chunk = bytearray()
            while heap and not self._stop.is_set():
                offset, i, length, echo = heapq.heappop(heap)
                chunk += pack(offset, length, echo)
                if len(chunk) >= PLAN_CHUNK:
                    sendproc.write_all(fd, chunk)
                    chunk = bytearray()
                nxt = next(plans[i], None)
                if nxt is not None:
                    heapq.heappush(heap, (nxt[0], i, nxt[1], nxt[2]))
            sendproc.write_all(fd, chunk)
        except OSError:
            pass  # the sender is gone (stopped, or failed: its exit status says why)
        finally:
            assert self._proc is not None and self._proc.stdin is not None
            with contextlib.suppress(OSError):
                self._proc.stdin.close()  # end of file: the plan is complete

    def _read_sent(self, fd: int) -> None:
        """_Read_sent records the packets the sender reports, until it exits."""
        first = os.read(fd, 1)
        self.realtime = first == b"R"
        size = sendproc.SENT.size
        from_mono, append, send_t = self.clock.from_mono, self.cols.append, self._send_t
        tos = (self.spec.dscp << 2) | self.spec.ecn  # what the socket sends with (set_tos)
        pending = b""
        while data := os.read(fd, 1 << 16):
            pending += data
            whole = len(pending) - len(pending) % size
            for t, deadline, seq, length, flags, err in sendproc.SENT.iter_unpack(pending[:whole]):
                if err:
                    send_t.append(-1)
                    self.errors[_send_error(err)] += 1
                    continue
                tt = from_mono(t)
                append(tt, seq, length, flags, True, from_mono(deadline), tos)
                send_t.append(tt)
                self.sent += 1
                if flags & ECHO:
                    self.echo_sent += 1
            pending = pending[whole:]

    def _receive(self) -> None:
        """_Receive records replies until the flow stops."""
        s = self.sock
        while not self._stop.is_set():
            ready, _, _ = select.select([s], [], [], POLL_SECONDS)
            if ready:
                self._drain()

    def _late_bound_ns(self) -> int:
        if not self.max_rtt_ns:
            return int(LATE_UNKNOWN_S * 1e9)
        return int(min(max(4 * self.max_rtt_ns, LATE_MIN_S * 1e9), LATE_MAX_S * 1e9))

    def _await_replies(self) -> None:
        end = time.monotonic_ns() + self._late_bound_ns()
        while self.replies < self.echo_sent and not self._stop.is_set() and time.monotonic_ns() < end:
            self._stop.wait(LATE_POLL_SECONDS)

    def _drain(self) -> None:
        """_drain handles the datagrams waiting on the socket."""
        s, key, clock, cols, flow = self.sock, self.key, self.clock, self.cols, self.spec.flow
        limit = self.spec.max_packet_size
        buf, view = self._buf, self._view
        send_t, replied = self._send_t, self._replied
        while True:
            try:
                n, anc, msg_flags, _ = s.recvmsg_into([buf], psock.ANC_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.errors["receive errors"] += 1
                return
            t_wall, tos, _ = psock.rx_meta(anc)
            t = clock.from_wall(t_wall)
            if n > limit or msg_flags & psock.TRUNC:
                self.errors["oversized packets dropped"] += 1
                continue
            try:
                flag, seq, got_flow = parse(view[:n], key)
            except BadPacket as e:
                self.errors[f"invalid packets dropped ({e.reason})"] += 1
                continue
            # A reply's seq is at most a little ahead of the sends recorded so far.
            if not flag & REPLY or got_flow != flow or seq >= len(send_t) + REPLY_AHEAD:
                self.errors["unexpected packets dropped"] += 1
                continue
            cols.append(t, seq, n, flag, False, NULL, max(tos, 0))
            if seq >= len(replied):
                replied.extend(bytes(seq + 1 - len(replied)))
            if not replied[seq]:
                replied[seq] = 1
                self.replies += 1
                if seq < len(send_t) and send_t[seq] >= 0:
                    self.max_rtt_ns = max(self.max_rtt_ns, t - send_t[seq])


def _send_error(err: int) -> str:
    if err in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
        return "send errors (socket buffer full)"
    return f"send errors ({os.strerror(err)})"
