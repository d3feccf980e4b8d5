"""Read what the userspace bottleneck needs from an IP packet, and mark it CE: IPv4 and IPv6 headers.

:func:`parse` reads a packet's IP length, ECN codepoint and flow key (the
5-tuple: protocol, source and destination addresses, and the ports for TCP,
UDP, SCTP and UDP-Lite) from the first bytes of the header, without copying
the packet. :func:`with_ecn` rewrites the ECN bits; for IPv4 it fixes the
header checksum incrementally as RFC 1624 (eqn. 3) gives it, so a marked
packet costs a few integer operations, not a checksum over the header.

The addresses in a flow key are the raw 4 or 16 bytes (cheap to take and to
hash); :func:`address_text` spells them for records. Everything here is the
standard library: the link process runs on any python3.
"""

from __future__ import annotations

import ipaddress

PORTED = frozenset((6, 17, 132, 136))
"""PORTED are the IP protocols whose first four payload bytes are the source and destination ports."""
ETHERNET_HEADER_BYTES = 14
"""ETHERNET_HEADER_BYTES is what htb counts per packet on a veth beyond the IP length (no FCS, no preamble)."""
_V6_EXTENSIONS = frozenset((0, 43, 60))
"""_V6_EXTENSIONS are the IPv6 extension headers skipped to reach the ports (hop-by-hop, routing, options)."""

FlowKey = tuple[int, bytes, bytes, int, int]
"""FlowKey is (protocol, source address, destination address, source port, destination port); ports 0 if none."""


def parse(data: bytes) -> tuple[int, int, FlowKey | None]:
    """Return ``(ip_length_bytes, ecn, flow_key)`` of an IP packet as a TUN device gives it (no link header).

    The length is the header's own total length (IPv4) or payload length plus
    40 (IPv6), falling back to ``len(data)`` when the header is cut short; the
    ECN codepoint is the two low bits of the TOS / traffic class. A packet
    that is neither IPv4 nor IPv6, or too short for its header, has ECN 0
    (Not-ECT) and flow key None. A fragment other than the first has ports 0.
    """
    n = len(data)
    if n < 20:
        return n, 0, None
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        length = (data[2] << 8) | data[3]
        proto = data[9]
        sport = dport = 0
        # Ports only in the first fragment (offset 0) and where the header holds them.
        if proto in PORTED and not ((data[6] & 0x1F) or data[7]) and n >= ihl + 4:
            sport = (data[ihl] << 8) | data[ihl + 1]
            dport = (data[ihl + 2] << 8) | data[ihl + 3]
        return length or n, data[1] & 3, (proto, data[12:16], data[16:20], sport, dport)
    if version == 6:
        if n < 40:
            return n, 0, None
        length = 40 + ((data[4] << 8) | data[5])
        ecn = (data[1] >> 4) & 3
        proto, at = data[6], 40
        while proto in _V6_EXTENSIONS and n >= at + 8:
            proto, at = data[at], at + 8 * (data[at + 1] + 1)
        sport = dport = 0
        if proto in PORTED and n >= at + 4:
            sport = (data[at] << 8) | data[at + 1]
            dport = (data[at + 2] << 8) | data[at + 3]
        return length, ecn, (proto, data[8:24], data[24:40], sport, dport)
    return n, 0, None


def with_ecn(data: bytes, ecn: int) -> bytes:
    """Return the packet with its ECN codepoint set to ecn (0-3); IPv4's header checksum is kept valid.

    The checksum is updated as RFC 1624 eqn. 3 gives: ``HC' = ~(~HC + ~m + m')``
    in one's complement over the 16-bit word m that holds the TOS byte. A
    packet that is neither IPv4 nor IPv6 is returned unchanged.
    """
    if len(data) < 20:
        return data
    version = data[0] >> 4
    b = bytearray(data)
    if version == 4:
        old_word = (b[0] << 8) | b[1]
        b[1] = (b[1] & 0xFC) | ecn
        new_word = (b[0] << 8) | b[1]
        check = (b[10] << 8) | b[11]
        s = (~check & 0xFFFF) + (~old_word & 0xFFFF) + new_word
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        check = ~s & 0xFFFF
        b[10], b[11] = check >> 8, check & 0xFF
    elif version == 6 and len(data) >= 40:
        # Traffic class straddles bytes 0 and 1; its ECN bits are bits 4-5 of byte 1. No header checksum.
        b[1] = (b[1] & 0xCF) | (ecn << 4)
    else:
        return data
    return bytes(b)


def ipv4_checksum(header: bytes) -> int:
    """Return the IPv4 header checksum of header computed afresh (RFC 791), its checksum field read as zero."""
    b = bytearray(header)
    b[10] = b[11] = 0
    s = sum((b[i] << 8) | b[i + 1] for i in range(0, len(b) - 1, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def address_text(raw: bytes) -> str:
    """Return a flow key's address (4 or 16 raw bytes) as text, e.g. ``10.77.1.1`` or ``fd00::1``."""
    return str(ipaddress.ip_address(raw))
