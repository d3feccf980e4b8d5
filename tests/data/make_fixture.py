"""Make_fixture writes the stored results the tests read, with known answers.

Run ``python tests/data/make_fixture.py [result] [sweep]`` to regenerate them
(the output is committed; without arguments, both).

``tests/data/result``: two tests, ``cca=cubic`` at 20 Mbit/s and ``cca=bbr``
at 30 Mbit/s, in the shape of the first result format (no flows.parquet, no
stream lengths: every stream flow has an FCT), each with:

- ``bulk``: an upload at the full rate for 4 s (server samples every 10 ms),
  with TCP_INFO RTTs rising from 20 to 40 ms;
- ``join``: a download at half the rate from 1 s to 3 s;
- six short flows ``sc-N`` (CUBIC) and ``sb-N`` (BBR) of known lengths and
  FCTs, for the FCT chart;
- ``udp``: an echo packet flow every 20 ms for 4 s, one-way delay 5 ms, RTT
  10 ms except 30 ms for sends in [1 s, 2.5 s); seq 50 lost, seq 60 received
  twice, seq 70 arriving after seq 71 (one late, one early).

``tests/data/sweep``: the sweep ``-m +experiment=cubic cca=cubic,reno
rig.rtt=10ms,40ms`` in miniature: four tests with the IDs, folder names and
flows that sweep makes (``tcp``, an upload of SWEEP_GOODPUT_MBPS from 0.5 s to
3 s, and ``udp``, an echo every 20 ms for 3 s with RTT rig_rtt plus a queue
delay cycling up to SWEEP_QUEUE_MS, losing SWEEP_LOST), analysed as a run
leaves them (flows.parquet, no pages): see write_sweep_test.

The same writer the runners feed (TestWriter) stores them, so the fixtures
have exactly the shape of a real result.
"""

from __future__ import annotations

import json
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from antler.node.items import Batch, FileData, LogEntry, PacketInfo, StreamInfo, SysInfo
from antler.node.schemas import SCHEMAS
from antler.results.store import TestWriter, write_meta

OUT = Path(__file__).resolve().parent / "result"
SWEEP_OUT = Path(__file__).resolve().parent / "sweep"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
RATES_MBPS = {"cubic": 20.0, "bbr": 30.0}
SHORT = [
    ("sc-1", 10_000),
    ("sb-2", 20_000),
    ("sc-3", 50_000),
    ("sb-4", 100_000),
    ("sc-5", 200_000),
    ("sb-6", 1_000_000),
]
"""SHORT lists the short flows: ID and length in bytes."""


def short_fct_s(length: int, rate_mbps: float) -> float:
    """Return a short flow's completion time in the fixture: 10 ms plus its serialisation."""
    return 0.010 + length * 8 / (rate_mbps * 1e6)


def ms(x: float) -> timedelta:
    """Return a timedelta of x milliseconds."""
    return timedelta(milliseconds=x)


def batch(kind: str, **cols: object) -> pa.RecordBatch:
    """Build a record batch of kind from columns (scalars broadcast; a column not given is null)."""
    n = max(len(v) for v in cols.values() if isinstance(v, (list, np.ndarray)))  # type: ignore[arg-type]
    arrays = []
    for f in SCHEMAS[kind]:
        v = cols.get(f.name)
        if not isinstance(v, (list, np.ndarray)):
            v = [v] * n
        arrays.append(pa.array(v, type=f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMAS[kind])


def stream_io(flow: str, server: bool, sent: bool, t_s: np.ndarray, total: np.ndarray) -> Batch:
    """Return a batch of StreamIO samples."""
    return Batch(
        "stream_io",
        flow,
        batch(
            "stream_io",
            flow=flow,
            server=server,
            t_ns=np.round(t_s * 1e9).astype(np.int64),
            total_bytes=total.astype(np.int64),
            sent=sent,
        ),
    )


def write_test(cca: str, rate: float) -> None:
    """Write one test of the sweep."""
    d = OUT / f"cca-{cca}"
    d.mkdir(parents=True)
    w = TestWriter(d)
    bps = rate * 1e6 / 8
    w.write(LogEntry(T0 - ms(50), "-", "system", f"setting up {cca} at {rate:g} Mbit/s"))

    # bulk: upload, client tinit T0, server tinit T0 + 1 ms.
    w.write(StreamInfo(T0, "bulk", "up", cca, False))
    w.write(StreamInfo(T0 + ms(1), "bulk", "up", cca, True))
    t = np.arange(1, 401) * 0.010
    w.write(stream_io("bulk", True, False, t, bps * t))
    w.write(stream_io("bulk", False, True, np.arange(0, 400) * 0.010, bps * (np.arange(0, 400) * 0.010 + 0.005)))
    tt = np.arange(0, 40) * 0.1
    w.write(
        Batch(
            "tcp_info",
            "bulk",
            batch(
                "tcp_info",
                flow="bulk",
                server=False,
                t_ns=np.round(tt * 1e9).astype(np.int64),
                state=1,
                cca=cca,
                rtt_us=np.round(20_000 + 20_000 * np.arange(40) / 39).astype(np.int64),
                rttvar_us=1000,
                snd_cwnd=10,
                snd_ssthresh=100,
                snd_mss=1448,
                pacing_rate_bps=int(rate * 1e6),
                delivery_rate_bps=int(rate * 1e6),
                total_retrans=np.arange(40) // 10,
                lost=0,
                bytes_acked=np.round(bps * tt).astype(np.int64),
                bytes_received=0,
            ),
        )
    )

    # join: download at half rate from 1 s to 3 s; the client receives.
    w.write(StreamInfo(T0 + ms(1000), "join", "down", cca, False))
    w.write(StreamInfo(T0 + ms(1000), "join", "down", cca, True))
    t = np.arange(1, 201) * 0.010
    w.write(stream_io("join", False, False, t, bps / 2 * t))
    w.write(stream_io("join", True, True, np.arange(0, 200) * 0.010, bps / 2 * (np.arange(0, 200) * 0.010 + 0.002)))

    # Short flows for the FCT chart.
    for i, (flow, length) in enumerate(SHORT):
        start = T0 + ms(500 + 300 * i)
        fct = short_fct_s(length, rate)
        flow_cca = "cubic" if flow.startswith("sc") else "bbr"
        w.write(StreamInfo(start, flow, "up", flow_cca, False))
        w.write(StreamInfo(start, flow, "up", flow_cca, True))
        w.write(stream_io(flow, False, True, np.array([0.0]), np.array([length])))
        w.write(stream_io(flow, True, False, np.array([fct / 2, fct]), np.array([length // 2, length])))

    # udp: echo flow; client tinit T0, server tinit T0 + 2 ms.
    w.write(PacketInfo(T0, "udp", False))
    w.write(PacketInfo(T0 + ms(2), "udp", True))
    seq = np.arange(200)
    send = seq * 0.020
    w.write(
        Batch(
            "packet_io",
            "udp",
            batch(
                "packet_io",
                flow="udp",
                server=False,
                t_ns=np.round(send * 1e9),
                seq=seq,
                length=160,
                flags=1,
                sent=True,
            ),
        )
    )
    arrive = send + 0.005 - 0.002  # server-relative
    keep = seq != 50
    srv_seq, srv_t = seq[keep], arrive[keep]
    srv_t = np.where(srv_seq == 70, arrive[71] + 0.001, srv_t)  # 70 arrives after 71
    srv_seq = np.append(srv_seq, 60)  # 60 arrives twice
    srv_t = np.append(srv_t, arrive[60] + 0.0005)
    order = np.argsort(srv_t, kind="stable")
    srv_seq, srv_t = srv_seq[order], srv_t[order]
    w.write(
        Batch(
            "packet_io",
            "udp",
            batch(
                "packet_io",
                flow="udp",
                server=True,
                t_ns=np.round(srv_t * 1e9),
                seq=srv_seq,
                length=160,
                flags=1,
                sent=False,
            ),
        )
    )
    echoed = seq[keep]
    rtt = np.where((send[keep] >= 1.0) & (send[keep] < 2.5), 0.030, 0.010)
    w.write(
        Batch(
            "packet_io",
            "udp",
            batch(
                "packet_io",
                flow="udp",
                server=False,
                t_ns=np.round((send[keep] + rtt) * 1e9),
                seq=echoed,
                length=160,
                flags=0,
                sent=False,
            ),
        )
    )

    w.write(LogEntry(T0 + ms(4100), "-", "stream", "bulk: done"))
    w.write(LogEntry(T0 + ms(2000), "-", "packet", "udp: halfway"))
    w.write(
        SysInfo(
            "-",
            {
                "hostname": "fixture",
                "os": "Debian GNU/Linux 12 (bookworm)",
                "kernel": "Linux 6.1.0-fixture",
                "command": {"tc qdisc show": "qdisc pfifo 0: dev veth0 root limit 1000p"},
                "file": {"/etc/hostname": "fixture\n"},
                "env": {"LANG": "C.UTF-8"},
                "sysctl": {"net.ipv4.tcp_congestion_control": cca},
            },
        )
    )
    w.write(FileData("capture.pcap", b"\xd4\xc3\xb2\xa1" + bytes(range(256)) * 8))
    w.close()
    write_meta(
        d,
        {
            "test_id": {"experiment": "fixture", "cca": cca},
            "path": f"cca-{cca}",
            "status": "ok",
            "started": T0.isoformat(),
            "ended": (T0 + ms(4200)).isoformat(),
            "overrides": [f"cca={cca}"],
            "config": {"test": {"id": {"experiment": "fixture", "cca": cca}, "path": f"cca-{cca}"}},
            "versions": {"antler-ray": "fixture"},
            "host": {"hostname": "fixture"},
            "errors": 0,
        },
    )


SWEEP_GOODPUT_MBPS = {
    ("cubic", "10ms"): 45.0,
    ("cubic", "40ms"): 40.0,
    ("reno", "10ms"): 42.0,
    ("reno", "40ms"): 30.0,
}
"""SWEEP_GOODPUT_MBPS is the tcp flow's rate in each test of the sweep fixture, by (cca, rig_rtt)."""
SWEEP_QUEUE_MS = {"cubic": 20.0, "reno": 10.0}
"""SWEEP_QUEUE_MS is the largest queue delay the udp flow sees, by cca: packet i waits queue * (i % 10) / 9."""
SWEEP_LOST = {
    ("cubic", "10ms"): (),
    ("cubic", "40ms"): (75,),
    ("reno", "10ms"): (40, 80),
    ("reno", "40ms"): (30, 60, 90),
}
"""SWEEP_LOST are the seqs of the udp flow that never arrive, by (cca, rig_rtt), of SWEEP_PACKETS sent."""
SWEEP_PACKETS = 150
SWEEP_RETRANS = {"cubic": 2, "reno": 4}
"""SWEEP_RETRANS is the tcp flow's total_retrans at its end, by cca."""


def sweep_udp_rtt_ms(cca: str, rtt: str) -> np.ndarray:
    """Return the RTT of each udp packet of a sweep test, by seq (lost ones included)."""
    seq = np.arange(SWEEP_PACKETS)
    return float(rtt.removesuffix("ms")) + SWEEP_QUEUE_MS[cca] * (seq % 10) / 9


def write_sweep_test(cca: str, rtt: str) -> Path:
    """Write one test of the sweep fixture and analyses it (flows.parquet); returns its folder."""
    from antler.report.pipeline import run_after
    from antler.report.spec import After, Analyze, Report
    from antler.testid import id_path

    test_id = {"experiment": "cubic", "cca": cca, "rig_rtt": rtt}
    d = SWEEP_OUT / id_path(test_id)
    d.mkdir(parents=True)
    w = TestWriter(d)
    rate = SWEEP_GOODPUT_MBPS[(cca, rtt)]
    bps = rate * 1e6 / 8
    rtt_ms = float(rtt.removesuffix("ms"))
    w.write(LogEntry(T0 - ms(20), "left", "system", f"rig up: 50 Mbit/s, RTT {rtt}"))

    # tcp: upload from 0.5 s (the echo flow's lead) to 3 s; the server samples every 20 ms.
    start = T0 + ms(500)
    w.write(StreamInfo(start, "tcp", "up", cca, False, "left"))
    w.write(StreamInfo(start + ms(rtt_ms / 2), "tcp", "up", cca, True, "right"))
    t = np.arange(1, 126) * 0.020
    w.write(stream_io("tcp", True, False, t, bps * t))
    t = np.arange(0, 25) * 0.100
    w.write(stream_io("tcp", False, True, t, bps * (t + 0.005)))
    tt = np.arange(0, 25) * 0.1
    w.write(
        Batch(
            "tcp_info",
            "tcp",
            batch(
                "tcp_info",
                flow="tcp",
                server=False,
                t_ns=np.round(tt * 1e9).astype(np.int64),
                state=1,
                cca=cca,
                rtt_us=np.round((rtt_ms + SWEEP_QUEUE_MS[cca] * np.arange(25) / 24) * 1000).astype(np.int64),
                rttvar_us=500,
                snd_cwnd=10 + np.arange(25) * (2 if cca == "cubic" else 1),
                snd_ssthresh=2**31 - 1,
                snd_mss=1448,
                pacing_rate_bps=int(rate * 1e6),
                delivery_rate_bps=int(rate * 1e6),
                total_retrans=np.arange(25) * SWEEP_RETRANS[cca] // 24,
                lost=0,
                bytes_acked=np.round(bps * tt).astype(np.int64),
                bytes_received=0,
            ),
        )
    )

    # udp: an echo every 20 ms from 0 to 3 s; one-way delay half the RTT each way.
    w.write(PacketInfo(T0, "udp", False, "left"))
    w.write(PacketInfo(T0, "udp", True, "right"))
    seq = np.arange(SWEEP_PACKETS)
    send = seq * 0.020
    rtt_s = sweep_udp_rtt_ms(cca, rtt) / 1000
    keep = ~np.isin(seq, SWEEP_LOST[(cca, rtt)])
    for server, sent, when, seqs, flags in (
        (False, True, send, seq, 1),
        (True, False, (send + rtt_s / 2)[keep], seq[keep], 1),
        (True, True, (send + rtt_s / 2)[keep], seq[keep], 0),
        (False, False, (send + rtt_s)[keep], seq[keep], 0),
    ):
        w.write(
            Batch(
                "packet_io",
                "udp",
                batch(
                    "packet_io",
                    flow="udp",
                    server=server,
                    t_ns=np.round(when * 1e9).astype(np.int64),
                    seq=seqs,
                    length=160,
                    flags=flags,
                    sent=sent,
                ),
            )
        )
    w.write(LogEntry(T0 + ms(3000), "left", "stream", "tcp: done"))
    w.close()
    write_meta(
        d,
        {
            "test_id": test_id,
            "path": id_path(test_id),
            "status": "ok",
            "started": T0.isoformat(),
            "ended": (T0 + ms(3100)).isoformat(),
            "overrides": ["+experiment=cubic", f"cca={cca}", f"rig.rtt={rtt}"],
            "config": {"test": {"id": {"experiment": "cubic"}}, "cca": cca, "rig": {"rtt": rtt}},
            "versions": {"antler-ray": "fixture"},
            "host": {"hostname": "fixture"},
            "rig": {"kind": "dumbbell", "rate_bps": 50_000_000, "qdisc": "pfifo", "rtt_ms": rtt_ms, "emulator": "tun"},
            "errors": 0,
        },
    )
    # As a run leaves it, but for the pages (each would bring its own plotly.js).
    errors = run_after(d, After(default=(Report(analyze=Analyze()),)))
    assert not errors, errors
    return d


def main(which: list[str]) -> None:
    """Regenerate the fixtures named in which (result, sweep; none: both)."""
    which = which or ["result", "sweep"]
    if "result" in which:
        if OUT.exists():
            shutil.rmtree(OUT)
        for cca, rate in RATES_MBPS.items():
            write_test(cca, rate)
        (OUT / "README.txt").write_text(
            "Generated by tests/data/make_fixture.py; see its docstring for the known values.\n"
        )
    if "sweep" in which:
        if SWEEP_OUT.exists():
            shutil.rmtree(SWEEP_OUT)
        for cca, rtt in SWEEP_GOODPUT_MBPS:
            write_sweep_test(cca, rtt)
        (SWEEP_OUT / "README.txt").write_text(
            "Generated by tests/data/make_fixture.py sweep; see its docstring for the known values.\n"
        )
    for out in (OUT, SWEEP_OUT):
        print(json.dumps(sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
