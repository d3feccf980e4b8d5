"""Socket options of a stream flow: congestion control and TCP_INFO (raw sockopts: antler.node.sockopt).

TCP_INFO is read with ``getsockopt(IPPROTO_TCP, TCP_INFO)`` on the flow's own
socket, the counterpart of the sock_diag sampling the Go original does from
outside: the same kernel struct, without a netlink round trip per sample.
"""

from __future__ import annotations

import socket
import struct

AVAILABLE_CCA_PATH = "/proc/sys/net/ipv4/tcp_available_congestion_control"
TCP_INFO_LEN = 256
"""TCP_INFO_LEN is the buffer asked of the kernel; older kernels fill less, the rest reads as zero."""


class CCAError(ValueError):
    """A congestion control algorithm the kernel does not offer."""


def available_ccas() -> list[str]:
    """List the congestion control algorithms the kernel offers."""
    try:
        with open(AVAILABLE_CCA_PATH) as f:
            return f.read().split()
    except OSError:
        return []


def set_cca(sock: socket.socket, cca: str) -> None:
    """Set the socket's congestion control algorithm (TCP_CONGESTION).

    Raises CCAError (a ValueError) naming the CCAs the kernel offers when it lacks this one.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cca.encode())
    except OSError as e:
        offered = " ".join(available_ccas()) or "unknown"
        raise CCAError(
            f"congestion control {cca!r} is not available ({e.strerror}); the kernel offers: {offered}"
        ) from None


def get_cca(sock: socket.socket) -> str:
    """Return the socket's congestion control algorithm."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode(errors="replace")


# struct tcp_info from linux/tcp.h, up to tcpi_snd_wnd (232 bytes, Linux 5.4+).
# The bitfield byte (snd/rcv wscale) and the app-limited byte are read as plain bytes.
_TCP_INFO = struct.Struct(
    "=8B"  # state, ca_state, retransmits, probes, backoff, options, wscale, app_limited
    "24I"  # rto .. total_retrans (24 u32, offsets 8..103)
    "4Q"  # pacing_rate, max_pacing_rate, bytes_acked, bytes_received
    "6I"  # segs_out, segs_in, notsent_bytes, min_rtt, data_segs_in, data_segs_out
    "4Q"  # delivery_rate, busy_time, rwnd_limited, sndbuf_limited
    "2I"  # delivered, delivered_ce
    "2Q"  # bytes_sent, bytes_retrans
    "4I"  # dsack_dups, reord_seen, rcv_ooopack, snd_wnd
)
assert _TCP_INFO.size == 232

TCP_INFO_COLUMNS = (
    "state",
    "ca_state",
    "rtt_us",
    "rttvar_us",
    "min_rtt_us",
    "snd_cwnd",
    "snd_ssthresh",
    "snd_mss",
    "unacked",
    "pacing_rate_bps",
    "delivery_rate_bps",
    "total_retrans",
    "lost",
    "bytes_sent",
    "bytes_retrans",
    "bytes_acked",
    "bytes_received",
    "notsent_bytes",
    "delivered_ce",
    "snd_wnd_bytes",
    "delivered",
    "ecn",
    "sacked",
)
"""TCP_INFO_COLUMNS are the tcp_info columns read_tcp_info returns, in order (after t_ns)."""


def read_tcp_info(sock: socket.socket) -> tuple[int, ...]:
    """Return one TCP_INFO sample of sock, in the order of TCP_INFO_COLUMNS.

    Rates are converted from the kernel's bytes per second to bits per second.
    """
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_LEN)
    if len(raw) < _TCP_INFO.size:
        raw = raw + bytes(_TCP_INFO.size - len(raw))
    v = _TCP_INFO.unpack_from(raw)
    u32 = v[8:32]  # rto=0 ato snd_mss=2 rcv_mss unacked=4 sacked lost=6 retrans fackets
    # last_data_sent=9 .. last_ack_recv=12, pmtu=13 rcv_ssthresh rtt=15 rttvar=16
    # snd_ssthresh=17 snd_cwnd=18 advmss reordering rcv_rtt rcv_space total_retrans=23
    pacing, _max_pacing, acked, received = v[32:36]
    _segs_out, _segs_in, notsent, min_rtt, _dsi, _dso = v[36:42]
    delivery_rate = v[42]
    delivered, delivered_ce = v[46:48]
    bytes_sent, bytes_retrans = v[48:50]
    snd_wnd = v[53]
    return (
        v[0],
        v[1],
        u32[15],
        u32[16],
        min_rtt,
        u32[18],
        u32[17],
        u32[2],
        u32[4],
        _bits(pacing),
        _bits(delivery_rate),
        u32[23],
        u32[6],
        bytes_sent,
        bytes_retrans,
        acked,
        received,
        notsent,
        delivered_ce,
        snd_wnd,
        delivered,
        bool(v[5] & TCPI_OPT_ECN),
        u32[5],
    )


_U64_MAX = 2**64 - 1
TCPI_OPT_ECN = 8
"""TCPI_OPT_ECN is tcpi_options' bit for a connection that negotiated ECN (linux/tcp.h)."""


def _bits(bytes_per_second: int) -> int:
    # The kernel reports ~0 for "no pacing limit"; keep that as the u64 maximum.
    return min(bytes_per_second * 8, _U64_MAX)
