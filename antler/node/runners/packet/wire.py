"""The packet wire format: PacketHeader, PacketFlag, Seq and Packet.

A packet is a header, an optional HMAC tag, then zero padding up to the
packet's length (the length includes the header, as in antler)::

    offset  size  field
    0       2     magic 0xA7 0x1E
    2       1     version (1)
    3       1     flags (PacketFlag)
    4       8     seq, unsigned big-endian
    12      1     flow length n (1..16)
    13      n     flow ID, ASCII
    13+n    16    HMAC tag, if flags has SIGNED (see antler.node.hmac)

Anything that does not parse (wrong magic or version, unknown flags, a
sequence number above :data:`MAX_SEQ`, truncated, a bad flow ID, a bad or
missing tag when a key is set) raises :class:`BadPacket`, whose ``reason`` a
server counts.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

import antler.node.hmac as hmac
from antler.node.flow import FLOW_ID, MAX_FLOW_LEN

MAGIC = b"\xa7\x1e"
VERSION = 1
_FIXED = struct.Struct("!2sBBQB")
FIXED_LEN = _FIXED.size
"""FIXED_LEN is the header length without the flow ID and tag."""
SEQ_AT = 4
"""SEQ_AT is where the sequence number sits in a packet (after magic, version and flags)."""
_SEQ = struct.Struct("!Q")

MAX_UDP_PAYLOAD = 65507
"""MAX_UDP_PAYLOAD is the largest UDP payload over IPv4."""

Seq = int
"""Seq is a packet sequence number, assigned by the client from 0 in send order (uint64 on the wire)."""
MAX_SEQ = (1 << 63) - 1
"""MAX_SEQ is the highest sequence number a packet may carry: packet_io's seq column is int64."""


class PacketFlag(enum.IntFlag):
    """Represents the flag bits on a packet."""

    ECHO = 1
    """ECHO marks a packet that requests an echo from the server."""
    REPLY = 2
    """REPLY marks a packet that is a server's reply to an echo request."""
    SIGNED = 4
    """SIGNED marks a packet that carries an HMAC tag after its header."""


class BadPacket(ValueError):
    """A datagram that is not a valid packet; reason is a short key for counting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PacketHeader:
    """The header of a packet: flags, sequence number and flow."""

    flag: PacketFlag
    seq: Seq
    flow: str


def set_seq(buf: bytearray, seq: int) -> None:
    """Write a sequence number into an encoded packet (sign it afterwards)."""
    _SEQ.pack_into(buf, SEQ_AT, seq)


def header_len(flow: str, signed: bool) -> int:
    """Return the header length for a flow ID, with or without a tag."""
    return FIXED_LEN + len(flow) + (hmac.TAG_LEN if signed else 0)


@dataclass(frozen=True)
class Packet:
    """A packet sent either way between a PacketClient and a PacketServer.

    Only the header is meaningful; ``length`` is the total length in bytes,
    header included, reached with zero padding.
    """

    header: PacketHeader
    length: int

    def encode(self, key: bytes | None = None) -> bytes:
        """Return the packet's bytes, signed with key if one is given.

        Raises ValueError when ``length`` is shorter than the header (and tag).
        """
        h = self.header
        flag = h.flag | PacketFlag.SIGNED if key else h.flag & ~PacketFlag.SIGNED
        flow = h.flow.encode("ascii")
        hlen = header_len(h.flow, bool(key))
        if self.length < hlen:
            raise ValueError(f"packet length {self.length} is shorter than its header ({hlen} bytes)")
        buf = bytearray(self.length)
        _FIXED.pack_into(buf, 0, MAGIC, VERSION, int(flag), h.seq, len(flow))
        buf[FIXED_LEN : FIXED_LEN + len(flow)] = flow
        if key:
            hmac.sign_in_place(key, buf, FIXED_LEN + len(flow))
        return bytes(buf)


ECHO, REPLY, SIGNED = 1, 2, 4
"""ECHO, REPLY and SIGNED are the PacketFlag bits as plain ints, for the per-packet paths (enum ops cost µs)."""
_KNOWN_FLAGS = ECHO | REPLY | SIGNED
_flows: dict[bytes, str] = {}
"""_flows caches flow IDs already checked, so the per-packet path skips the regex."""


def parse(data: bytes | bytearray | memoryview, key: bytes | None = None) -> tuple[int, int, str]:
    """Check a datagram and return its (flags, seq, flow), or raise BadPacket.

    It is :func:`decode` without building objects, for the per-packet paths.
    The flow ID must be a whole ID of 1 to 16 characters (antler.node.flow),
    else the reason is ``bad-flow``. With a key, an unsigned packet is rejected (reason ``unsigned``) as is one
    with a wrong tag (``bad-signature``).
    """
    n = len(data)
    if n < FIXED_LEN:
        raise BadPacket("truncated")
    magic, version, flag, seq, flow_len = _FIXED.unpack_from(data, 0)
    if magic != MAGIC:
        raise BadPacket("bad-magic")
    if version != VERSION:
        raise BadPacket("bad-version")
    if flag & ~_KNOWN_FLAGS:
        raise BadPacket("bad-flags")
    if seq > MAX_SEQ:
        # Clients count from 0; a forged one this high would not fit the int64 seq column.
        raise BadPacket("bad-seq")
    if not 1 <= flow_len <= MAX_FLOW_LEN:
        raise BadPacket("bad-flow")
    end = FIXED_LEN + flow_len
    if n < end:
        raise BadPacket("truncated")
    raw = bytes(data[FIXED_LEN:end])
    flow = _flows.get(raw)
    if flow is None:
        try:
            flow = raw.decode("ascii")
        except UnicodeDecodeError:
            raise BadPacket("bad-flow") from None
        if not FLOW_ID.fullmatch(flow):
            raise BadPacket("bad-flow")
        if len(_flows) < 65536:
            _flows[raw] = flow
    if flag & SIGNED and n < end + hmac.TAG_LEN:
        raise BadPacket("truncated")
    if key:
        if not flag & SIGNED:
            raise BadPacket("unsigned")
        if not hmac.verify_in_place(key, data, end):
            raise BadPacket("bad-signature")
    return flag, seq, flow


def decode(data: bytes | bytearray | memoryview, key: bytes | None = None) -> Packet:
    """Parse a datagram into a Packet, checking its tag if a key is given (see :func:`parse`)."""
    flag, seq, flow = parse(data, key)
    return Packet(PacketHeader(PacketFlag(flag), seq, flow), len(data))


def reply_to(data: bytes | bytearray | memoryview, key: bytes | None = None) -> bytes:
    """Return the echo reply to a valid request: same bytes, flags ECHO cleared and REPLY set, re-signed."""
    flag = (data[3] & ~ECHO) | REPLY
    flag = flag | SIGNED if key else flag & ~SIGNED
    if key:
        buf = bytearray(data)
        buf[3] = flag
        hmac.sign_in_place(key, buf, FIXED_LEN + buf[12])
        return bytes(buf)
    return b"".join((data[:3], flag.to_bytes(1, "big"), data[4:]))
