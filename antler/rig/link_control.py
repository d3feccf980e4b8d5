"""The delay link's control socket: a schedule's changes of delay, loss and rate, applied between packets.

The link (:mod:`antler.rig.delay`, ``--control NAME``) binds a datagram
socket to the abstract name NAME, which is private to its network namespace,
and reads it in the same ``select`` as its TUN devices, so a change lands
between two packets, never during one. A message is JSON naming the link's
device and what to change::

    {"dev": "d-fwd", "delay_ns": 40000000}     # packets from now on are held 40 ms
    {"dev": "d-fwd", "loss": 0.01}
    {"dev": "d-ret", "rate_bps": 10000000}     # its bottleneck sends at 10 Mbit/s from the next packet

and the answer, to the sender's address, is ``{"t_ns": T}`` with the wall
clock (UTC ns) when the change took effect, or ``{"error": "..."}``.
Packets already held keep the delay they were given: after a delay falls,
new packets wait behind them (a link's packets never overtake each other).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from dataclasses import replace
from typing import Any

from antler.rig.delay_link import Link


class Control:
    """The socket a schedule changes a running delay link through, and what it does with each message."""

    def __init__(self, name: str, links: list[Link]) -> None:
        """Bind the abstract name (raises OSError when another link of this namespace holds it)."""
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(f"\0{name}")
        self.sock.setblocking(False)
        self.by_dev = {link.spec.dev: link for link in links}

    @property
    def fd(self) -> int:
        """The socket's fd, for the link's select."""
        return self.sock.fileno()

    def handle(self) -> None:
        """Apply every message waiting, answering each."""
        while True:
            try:
                data, sender = self.sock.recvfrom(4096)
            except BlockingIOError:
                return
            try:
                reply: dict[str, Any] = {"t_ns": self.apply(json.loads(data))}
            except (ValueError, KeyError, TypeError) as e:
                reply = {"error": str(e)}
            if sender:
                with contextlib.suppress(OSError):  # the asker is gone: nothing to tell
                    self.sock.sendto(json.dumps(reply).encode(), sender)
            print(f"delay: control {data.decode(errors='replace')} -> {reply}", flush=True)

    def apply(self, msg: dict[str, Any]) -> int:
        """Make one change and return the wall clock (UTC ns) it took effect at; raises ValueError for a bad one."""
        link = self.by_dev.get(str(msg.get("dev")))
        if link is None:
            raise ValueError(f"no link on device {msg.get('dev')!r} (links: {', '.join(self.by_dev)})")
        spec = link.spec
        if "delay_ns" in msg:
            spec = replace(spec, delay_ns=int(msg["delay_ns"]))
        if "loss" in msg:
            loss = float(msg["loss"])
            if not 0 <= loss <= 1:
                raise ValueError(f"loss {loss} is not a probability")
            spec = replace(spec, loss=loss)
        if "rate_bps" in msg:
            if link.bottleneck is None:
                raise ValueError(f"link {spec.dev} is not a bottleneck: it has no rate")
            link.bottleneck.set_rate(int(msg["rate_bps"]), time.monotonic_ns())
        link.spec = spec
        return time.time_ns()
