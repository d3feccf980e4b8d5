"""A stored test of competing stream flows at known rates and an echo flow at known RTTs (the fairness tests' data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from antler.node.items import Batch, PacketInfo, StreamInfo
from antler.results.store import TestWriter, write_meta
from tests.data.make_fixture import T0, batch, ms, stream_io

# flow: (cca, start s, Mbit/s in each second of its 4 s)
STREAMS = {
    "a": ("cubic", 1.0, [30, 30, 30, 30]),
    "b": ("bbr", 2.0, [10, 20, 30, 10]),
    "c": ("cubic", 1.5, [20, 20, 20, 20]),
}
"""STREAMS ends a at 5 s, c at 5.5 s, b at 6 s: the common window is [2, 5] s."""


def write_competition(path: Path, link_bps: float = 100e6) -> Path:
    """Write a stored test of STREAMS (receiver samples every 10 ms) and an echo flow 'ping'.

    'ping' sends every 50 ms at k * 50 ms + 25 ms (k = 0..139): RTT 10 ms
    while idle (before 1 s and after 6 s), while loaded 30 ms for even k
    and 40 ms for odd k.
    """
    w = TestWriter(path)
    for flow, (cca, start, rates) in STREAMS.items():
        w.write(StreamInfo(T0 + ms(start * 1000), flow, "up", cca, False))
        w.write(StreamInfo(T0 + ms(start * 1000), flow, "up", cca, True))
        t = np.arange(1, 401) * 0.01
        per_s = np.array(rates, float) * 1e6 / 8
        done = np.concatenate([[0], np.cumsum(per_s)])
        sec = np.minimum((t // 1).astype(int), 3)
        total = done[sec] + per_s[sec] * (t - sec)
        w.write(stream_io(flow, True, False, t, np.round(total)))
    w.write(PacketInfo(T0, "ping", False))
    w.write(PacketInfo(T0, "ping", True))
    k = np.arange(140)
    send = k * 0.05 + 0.025
    loaded = (send > 1.0) & (send < 6.0)
    rtt = np.where(loaded, np.where(k % 2 == 0, 0.030, 0.040), 0.010)
    for server, sent, t_s, flags in ((False, True, send, 1), (False, False, send + rtt, 0)):
        w.write(
            Batch(
                "packet_io",
                "ping",
                batch(
                    "packet_io",
                    flow="ping",
                    server=server,
                    t_ns=np.round(t_s * 1e9),
                    seq=k,
                    length=64,
                    flags=flags,
                    sent=sent,
                ),
            )
        )
    w.close()
    write_meta(path, {"test_id": {"t": "x"}, "rig": {"rate_bps": link_bps}})
    return path
