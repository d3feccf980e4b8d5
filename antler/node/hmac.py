"""HMAC signing of packets and stream headers, and where a test's key comes from.

Tags are HMAC-SHA256 truncated to :data:`TAG_LEN` bytes (as RFC 4868 allows
for authentication), which keeps small probe packets small. The key is a
secret: nothing here logs it, and it never appears in results.
"""

from __future__ import annotations

import hmac as _hmac
import os
from pathlib import Path

TAG_LEN = 16
"""TAG_LEN is the length of a tag in bytes (HMAC-SHA256 truncated to 128 bits)."""

KEY_ENV = "ANTLER_HMAC_KEY"
"""KEY_ENV is the environment variable that holds the HMAC key, as text."""

_ZERO_TAG = bytes(TAG_LEN)
_taken: str = ""
"""_taken is the key the command line took out of its environment (take_env_key)."""


def take_env_key() -> None:
    """Move the key out of this process's environment, keeping it for resolve_key.

    The command line calls it before it starts Ray or any command, so no
    worker or command it starts inherits the key (antler.node.secrets).
    """
    global _taken
    text = os.environ.pop(KEY_ENV, "")
    if text:
        _taken = text


def env_key() -> str:
    """Return the key text from the environment (or taken from it by take_env_key), or ""."""
    return os.environ.get(KEY_ENV, "") or _taken


def tag(key: bytes, data: bytes | bytearray | memoryview) -> bytes:
    """Return the truncated HMAC-SHA256 of data under key."""
    return _hmac.digest(key, data, "sha256")[:TAG_LEN]


def verify(key: bytes, data: bytes | bytearray | memoryview, got: bytes | bytearray | memoryview) -> bool:
    """Report whether got is the tag of data under key, in constant time."""
    return _hmac.compare_digest(tag(key, data), bytes(got))


def sign_in_place(key: bytes, buf: bytearray, offset: int) -> None:
    """Write the tag of buf, computed with its tag field zeroed, at offset.

    The tag covers the whole message (header and padding), so neither can be
    altered without the key.
    """
    buf[offset : offset + TAG_LEN] = _ZERO_TAG
    buf[offset : offset + TAG_LEN] = tag(key, buf)


def verify_in_place(key: bytes, buf: bytes | bytearray | memoryview, offset: int) -> bool:
    """Check a message signed by :func:`sign_in_place` (buf is not modified)."""
    if offset < 0 or offset + TAG_LEN > len(buf):
        return False
    view = memoryview(buf)
    got = bytes(view[offset : offset + TAG_LEN])
    unsigned = b"".join((view[:offset], _ZERO_TAG, view[offset + TAG_LEN :]))
    return _hmac.compare_digest(tag(key, unsigned), got)


def resolve_key(enabled: bool, key_file: str = "", environ: dict[str, str] | None = None) -> bytes | None:
    """Return a test's HMAC key, or None if the test does not use HMAC.

    The key comes from the environment variable ``ANTLER_HMAC_KEY``, else from
    the file ``key_file`` (``test.hmac_key_file``: a path, so the secret itself
    is never written into the config that is saved with the results), else it
    is a random key made for this test: every node of a test gets its key from
    the root, so both ends of a flow always agree. Raises ValueError for an
    empty key file (OSError if it cannot be read).
    """
    if not enabled:
        return None
    text = env_key() if environ is None else environ.get(KEY_ENV, "")
    if text:
        return text.encode()
    if key_file:
        data = Path(key_file).expanduser().read_bytes().strip()
        if not data:
            raise ValueError(f"HMAC key file {key_file} is empty")
        return data
    return os.urandom(32)
