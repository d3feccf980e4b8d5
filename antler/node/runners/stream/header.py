"""The stream header: what a client tells the server before any data flows.

Wire format, both ways (request and the server's reply)::

    magic    4 bytes  b"AnSt"
    version  1 byte   HEADER_VERSION
    flags    1 byte   0 (reserved)
    length   2 bytes  big-endian length of the body
    body     length   UTF-8 JSON object

The request body names the flow, its direction, CCA and stop rules (see
:class:`Header`). Unknown keys are ignored, so a later version can add one,
such as the ``sig`` HMAC signature the packet protocol's keyed mode may fill,
without breaking older servers. The reply body is ``{"ok": true}`` or
``{"error": "..."}``, so a server-side failure (an unknown CCA for a download)
reaches the client with its cause.

A server reads a header with a deadline and a size limit, and checks every
field, so random bytes from a stray client end that connection only: the
server drops it, counts it by reason, and keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import asdict, dataclass, replace
from typing import Any

import antler.node.compat as compat
import antler.node.hmac as hmac
from antler.node.flow import check_flow

MAGIC = b"AnSt"
HEADER_VERSION = 1
MAX_BODY = 4096
_PREFIX = struct.Struct("!4sBBH")
DIRECTIONS = ("up", "down")


class HeaderError(Exception):
    """A header that is malformed, too large, late or cut short.

    ``reason`` is a short key a server counts by (as a packet server counts
    BadPacket reasons): ``bad-magic``, ``bad-version``, ``too-long``,
    ``timeout``, ``cut-short``, ``not-json``, ``bad-field``.
    """

    def __init__(self, message: str, reason: str = "bad-field") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Header:
    """The request a client sends: which flow, which way, and when to stop.

    ``direction`` is ``up`` (client sends) or ``down`` (server sends). The
    sender stops after ``duration_ns`` or ``length`` bytes (0 = no length
    limit), whichever comes first; the interval fields tell the server how to
    sample when it is the sender. ``sig`` is the hex HMAC tag of the other
    fields (see :meth:`signed`) when the test uses HMAC, else empty.
    """

    flow: str
    direction: str
    cca: str = ""
    duration_ns: int = 0
    length: int = 0
    sample_io_interval_ns: int = 0
    tcp_info_interval_ns: int = 0
    buf_len: int = 131072
    tos: int = 0
    sig: str = ""

    def check(self) -> None:
        """Raise HeaderError for a field out of its range."""
        try:
            check_flow(self.flow)
        except ValueError as e:
            raise HeaderError(str(e)) from None
        if self.direction not in DIRECTIONS:
            raise HeaderError(f"direction {self.direction!r} is not up or down")
        if not isinstance(self.cca, str) or len(self.cca) > 15:
            raise HeaderError(f"invalid cca {self.cca!r}")
        for name in ("duration_ns", "length", "sample_io_interval_ns", "tcp_info_interval_ns", "buf_len", "tos"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HeaderError(f"{name} must be a non-negative integer, got {v!r}")
        if not 0 < self.buf_len <= 64 * 1024 * 1024:
            raise HeaderError(f"buf_len {self.buf_len} out of range")
        if self.tos > 255:
            raise HeaderError(f"tos {self.tos} out of range")

    def _signed_bytes(self) -> bytes:
        fields = asdict(self)
        fields.pop("sig")
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: bytes) -> Header:
        """Return the header with ``sig`` set to the HMAC tag of its other fields."""
        return replace(self, sig=hmac.tag(key, self._signed_bytes()).hex())

    def verified(self, key: bytes) -> bool:
        """Report whether ``sig`` is the right tag under key (False if missing)."""
        try:
            got = bytes.fromhex(self.sig)
        except ValueError:
            return False
        return len(got) == hmac.TAG_LEN and hmac.verify(key, self._signed_bytes(), got)

    def encode(self) -> bytes:
        """Return the header on the wire."""
        return frame(asdict(self))

    @classmethod
    def decode(cls, body: dict[str, Any]) -> Header:
        """Build a checked header from a request body, raising HeaderError for a missing or bad field."""
        known = {k: v for k, v in body.items() if k in cls.__dataclass_fields__}
        try:
            h = cls(**known)
        except TypeError as e:
            raise HeaderError(f"incomplete header: {e}") from None
        h.check()
        return h


def frame(body: dict[str, Any]) -> bytes:
    """Return a JSON body with the magic, version and length before it.

    Raises HeaderError (reason ``too-long``) for a body over MAX_BODY bytes.
    """
    data = json.dumps(body, separators=(",", ":")).encode()
    if len(data) > MAX_BODY:
        raise HeaderError(f"header body of {len(data)} bytes exceeds {MAX_BODY}", "too-long")
    return _PREFIX.pack(MAGIC, HEADER_VERSION, 0, len(data)) + data


async def read_frame(sock: socket.socket, timeout: float) -> dict[str, Any]:
    """Read one framed JSON object from a non-blocking socket, within timeout seconds.

    Raises HeaderError, with a reason to count (``bad-magic``, ``bad-version``,
    ``too-long``, ``timeout``, ``not-json``, ``cut-short``), for anything else.
    """
    try:
        async with compat.timeout(timeout):
            prefix = await _read_exactly(sock, _PREFIX.size)
            magic, version, _flags, length = _PREFIX.unpack(prefix)
            if magic != MAGIC:
                raise HeaderError(f"not an antler stream header (starts {prefix[:4]!r})", "bad-magic")
            if version != HEADER_VERSION:
                raise HeaderError(
                    f"header version {version} not supported (this node speaks {HEADER_VERSION})", "bad-version"
                )
            if length > MAX_BODY:
                raise HeaderError(f"header body of {length} bytes exceeds {MAX_BODY}", "too-long")
            data = await _read_exactly(sock, length)
    except compat.AsyncTimeout:
        raise HeaderError(f"no complete header within {timeout:g}s", "timeout") from None
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise HeaderError(f"header body is not JSON: {e}", "not-json") from None
    if not isinstance(body, dict):
        raise HeaderError("header body is not a JSON object", "not-json")
    return body


async def _read_exactly(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise HeaderError(f"connection closed after {len(buf)} of {n} header bytes", "cut-short")
        buf += chunk
    return bytes(buf)
