"""Stream, Transfer, Upload and Download: what one stream flow is and when it stops."""

from __future__ import annotations

from dataclasses import dataclass

from antler.node.flow import check_flow
from antler.node.items import StreamInfo, now
from antler.node.metric import Bytes, Duration
from antler.node.sockopt import Sockopt

DEFAULT_DURATION = Duration(60_000_000_000)
DEFAULT_BUF_LEN = 128 * 1024
NO_INTERVAL = Duration(0)


@dataclass(frozen=True)
class Stream:
    """One direction of a stream flow: its ID, direction (``up`` = client to server) and sender's CCA."""

    flow: str
    direction: str
    cca: str = ""

    def info(self, server: bool, node_id: str, length: int = 0) -> StreamInfo:
        """Return the StreamInfo for one end of this stream, with the time now as its base."""
        return StreamInfo(now(), self.flow, self.direction, self.cca, server, node_id, length)


@dataclass(frozen=True)
class Transfer:
    """The parameters of an upload or download.

    The sender stops after ``duration`` or, if set, ``length`` bytes, whichever
    comes first (a ``length`` flow measures flow completion time).
    ``sample_io_interval`` is the least time between StreamIO samples (0 = a
    sample per read or write); ``tcp_info_interval`` the time between TCP_INFO
    samples of the sending socket (0 = none). ``cca`` is set on the socket with
    TCP_CONGESTION (empty = the kernel default); ``dscp`` goes into IP_TOS /
    IPV6_TCLASS; ``ecn`` must stay 0, as the kernel owns TCP's ECN bits;
    ``sockopt`` lists raw options for the client socket.
    """

    flow: str
    duration: Duration = DEFAULT_DURATION
    length: Bytes | None = None
    sample_io_interval: Duration = NO_INTERVAL
    tcp_info_interval: Duration = NO_INTERVAL
    buf_len: int = DEFAULT_BUF_LEN
    cca: str = ""
    dscp: int = 0
    ecn: int = 0
    sockopt: tuple[Sockopt, ...] = ()

    direction = ""  # set by Upload and Download

    def validate(self) -> None:
        """Raise ValueError for a bad flow ID or a number out of its range."""
        check_flow(self.flow)
        if self.duration.ns <= 0:
            raise ValueError("duration must be positive")
        if self.length is not None and self.length.n <= 0:
            raise ValueError("length must be positive (leave it out for a duration-only flow)")
        if self.sample_io_interval.ns < 0 or self.tcp_info_interval.ns < 0:
            raise ValueError("sample intervals must not be negative")
        if not 0 < self.buf_len <= 64 * 1024 * 1024:
            raise ValueError(f"buf_len {self.buf_len} must be between 1 and 64Mi")
        if not 0 <= self.dscp <= 63:
            raise ValueError(f"dscp {self.dscp} must be 0-63")
        if not 0 <= self.ecn <= 3:
            raise ValueError(f"ecn {self.ecn} must be 0-3")
        if self.ecn:
            raise ValueError(
                f"ecn {self.ecn} on a TCP flow: the kernel owns TCP's ECN bits (it marks ECT itself once ECN is "
                "negotiated: set the sysctl net.ipv4.tcp_ecn=1 on both ends with a system step); dscp applies"
            )
        if len(self.cca) > 15:
            raise ValueError(f"cca {self.cca!r} is longer than the kernel's 15 characters")

    @property
    def tos(self) -> int:
        """The IP TOS / traffic class byte from dscp and ecn."""
        return (self.dscp << 2) | self.ecn

    @property
    def length_bytes(self) -> int:
        """The length limit in bytes, 0 for none."""
        return self.length.n if self.length is not None else 0

    def stream(self, cca: str) -> Stream:
        """Return this transfer's Stream with the CCA in effect."""
        return Stream(self.flow, self.direction, cca)


@dataclass(frozen=True)
class Upload(Transfer):
    """A stream transfer from client to server."""

    direction = "up"


@dataclass(frozen=True)
class Download(Transfer):
    """A stream transfer from server to client."""

    direction = "down"
