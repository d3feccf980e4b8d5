"""Quantities with units: Duration, Bytes and Bitrate, parsed from config text.

A value without a unit is an error (except a bare ``0`` duration, as in Go's
``time.ParseDuration``), because a bare ``10`` could mean seconds or
milliseconds and the test would silently measure something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

_NUM = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"

_DURATION_UNITS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_DURATION_PART = re.compile(_NUM + r"(ns|us|µs|μs|ms|s|m|h)")

# Decimal SI prefixes (either case, as tc and iperf3 write them) and binary
# ones (Ki, Mi, ...). The unit's own case carries the meaning: lowercase ``b``
# is a bit, capital ``B`` a byte, everywhere.
_PREFIX = {
    "": 1,
    "k": 1_000,
    "m": 1_000_000,
    "g": 1_000_000_000,
    "t": 1_000_000_000_000,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}
_QUANTITY = re.compile(_NUM + r"\s*([kKmMgGtT]i?|)(.*)")

RATE_BITS = ("bit", "bits", "b", "bps", "bit/s", "bits/s", "b/s")
"""RATE_BITS are the units a Bitrate reads as bits per second (``50Mbit``, ``50Mbps``, ``50Mb/s``)."""
RATE_BYTES = ("B/s", "Bps")
"""RATE_BYTES are the units a Bitrate reads as bytes per second (``50MB/s`` = ``50MBps`` = 400 Mbit/s)."""
AMOUNT_BYTES = ("", "B", "byte", "bytes")
"""AMOUNT_BYTES are the units Bytes reads as bytes (none: ``64K`` is 64,000 bytes, as iperf3 reads it)."""
AMOUNT_BITS = ("b", "bit", "bits")
"""AMOUNT_BITS are the units Bytes reads as bits (a whole number of bytes of them)."""

_RATE_HELP = "write bits per second as 50Mbit, 50Mbps or 50Mb/s, or bytes per second as 50MB/s or 50MBps"
_BYTES_HELP = "write e.g. 1500, 64K, 2MB, 1MiB (bytes) or 8kbit (bits)"


def _split(text: str) -> tuple[Fraction, int, str] | None:
    """_split reads text as a number, a prefix and a unit: (number, prefix factor, unit), or None."""
    m = _QUANTITY.fullmatch(text)
    if not m:
        return None
    prefix = m.group(2)
    return Fraction(m.group(1)), _PREFIX[prefix.lower()], m.group(3)


class UnitError(ValueError):
    """A quantity that could not be parsed, with the reason."""


@dataclass(frozen=True, order=True)
class Duration:
    """A length of time in integer nanoseconds."""

    ns: int

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """Return the Duration in text like ``1.5s``, ``100ms`` or ``1m30s``.

        Raises UnitError (a ValueError) for a number without a unit (only 0
        may omit it), an unknown unit, or a value that is not text or a number.
        """
        if isinstance(value, Duration):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise UnitError(f"duration must be text with a unit, like 100ms, not {value!r}")
        text = str(value).strip()
        if text in ("0", "0.0"):
            return cls(0)
        if isinstance(value, (int, float)):
            raise UnitError(f"duration {value!r} has no unit (use ns, us, ms, s, m or h)")
        pos, total = 0, 0.0
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if not m:
                raise UnitError(f"invalid duration {text!r} (use a number and a unit: ns, us, ms, s, m or h)")
            total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
            pos = m.end()
        if not text:
            raise UnitError("empty duration")
        return cls(round(total))

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return self.ns / 1e9

    def __str__(self) -> str:
        ns = self.ns
        if ns == 0:
            return "0s"
        for unit, size in (
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ):
            if ns % size == 0:
                return f"{ns // size}{unit}"
        return f"{ns}ns"


@dataclass(frozen=True, order=True)
class Bytes:
    """An amount of data in bytes, parsed from text like ``64K`` or ``2MB``."""

    n: int

    @classmethod
    def parse(cls, value: Any) -> Bytes:
        """Return Bytes from an integer (bytes) or text with an SI or binary prefix and a unit.

        A unit of ``B``, ``byte`` or none counts bytes (``64K`` = 64,000);
        ``b``, ``bit`` or ``bits`` counts bits, which must make whole bytes
        (``8kbit`` = 1,000). Raises UnitError for a rate's spelling
        (``2MB/s``), a part of a byte, a negative count or anything else.
        """
        if isinstance(value, Bytes):
            return value
        if isinstance(value, bool):
            raise UnitError(f"invalid byte count {value!r} ({_BYTES_HELP})")
        if isinstance(value, int):
            if value < 0:
                raise UnitError(f"negative byte count {value}")
            return cls(value)
        if not isinstance(value, str):
            raise UnitError(f"invalid byte count {value!r} ({_BYTES_HELP})")
        text = value.strip()
        parts = _split(text)
        if parts is None:
            raise UnitError(f"invalid byte count {text!r} ({_BYTES_HELP})")
        number, factor, unit = parts
        if unit in RATE_BITS[3:] or unit in RATE_BYTES or unit.endswith("/s") or unit.lower().endswith("ps"):
            raise UnitError(f"{text!r} is a rate, not an amount of data ({_BYTES_HELP})")
        if unit in AMOUNT_BYTES:
            n = number * factor
        elif unit in AMOUNT_BITS:
            n = number * factor / 8
            if n.denominator != 1:
                raise UnitError(f"{text!r} is not a whole number of bytes ({number * factor} bits)")
        else:
            raise UnitError(f"unknown unit {unit!r} in {text!r} ({_BYTES_HELP})")
        if n.denominator != 1:
            raise UnitError(f"{text!r} is not a whole number of bytes")
        return cls(int(n))

    def __str__(self) -> str:
        return f"{self.n}B"


@dataclass(frozen=True, order=True)
class Bitrate:
    """A data rate in bits per second, parsed from text like ``50Mbit``."""

    bps: int

    @classmethod
    def parse(cls, value: Any) -> Bitrate:
        """Return a Bitrate from text like ``50Mbit``, ``50mbit``, ``1.5Gbps`` or ``50MB/s``.

        Bits per second are ``bit``, ``bits``, ``b``, ``bps``, ``bit/s`` or
        ``b/s`` (lowercase ``b``, as iperf3 and tc read it); bytes per second
        only ``B/s`` or ``Bps`` (capital ``B``: ``50MB/s`` is 400 Mbit/s).
        Prefixes are k, M, G, T in either case, or Ki, Mi, Gi, Ti. A bare
        ``0`` is no rate. Raises UnitError naming the accepted spellings for
        anything else: no unit, an amount of data (``50MB``), a spelling that
        reads two ways (``50MBPS``), or a part of a bit per second.
        """
        if isinstance(value, Bitrate):
            return value
        if isinstance(value, bool):
            raise UnitError(f"invalid bitrate {value!r} ({_RATE_HELP})")
        text = str(value).strip()
        if text in ("0", "0.0"):
            return cls(0)
        if isinstance(value, (int, float)):
            raise UnitError(f"bitrate {value!r} has no unit ({_RATE_HELP})")
        parts = _split(text)
        if parts is None:
            raise UnitError(f"invalid bitrate {text!r} ({_RATE_HELP})")
        number, factor, unit = parts
        if unit in RATE_BITS:
            bps = number * factor
        elif unit in RATE_BYTES:
            bps = number * factor * 8
        elif unit == "":
            raise UnitError(f"bitrate {text!r} has no unit ({_RATE_HELP})")
        elif unit in AMOUNT_BYTES:
            raise UnitError(f"{text!r} is an amount of data, not a rate ({_RATE_HELP})")
        else:
            raise UnitError(f"bitrate {text!r} reads two ways or not at all ({_RATE_HELP})")
        if bps.denominator != 1:
            raise UnitError(f"bitrate {text!r} is not a whole number of bits per second ({_RATE_HELP})")
        return cls(int(bps))

    @property
    def mbps(self) -> float:
        """The rate in megabits per second."""
        return self.bps / 1e6

    def __str__(self) -> str:
        for unit, size in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
            if self.bps >= size and self.bps % size == 0:
                return f"{self.bps // size}{unit}"
        return f"{self.bps}bit"


@dataclass(frozen=True, order=True)
class Probability:
    """A chance in [0, 1], parsed from ``0 <= p < 1`` or a percentage with ``%``.

    ``0.01`` and ``1%`` are one in a hundred, ``100%`` is certain. A bare
    number of 1 or more is refused, because ``1`` reads two ways (certain, or
    one percent) and ``5`` is a percentage without its sign.
    """

    p: float

    @classmethod
    def parse(cls, value: Any) -> Probability:
        """Return the Probability in a number below 1 or a percentage from 0% to 100%.

        Raises UnitError for a bare number of 1 or more (with the spelling
        that works), a negative value, a percentage above 100% or text that
        is not a number.
        """
        if isinstance(value, Probability):
            return value
        if isinstance(value, bool):
            raise UnitError(f"invalid probability {value!r} (write e.g. 0.01 or 1%)")
        text = str(value).strip()
        try:
            p = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            raise UnitError(f"probability {text!r} is not a number (write e.g. 0.01 or 1%)") from None
        if text.endswith("%"):
            if not 0.0 <= p <= 1.0:
                raise UnitError(f"probability {text!r} is not between 0% and 100%")
            return cls(p)
        if p != p or p < 0:
            raise UnitError(f"probability {text!r} is not between 0 and 1")
        if p >= 1:
            hint = "100% for certain, or 1% for one in a hundred" if p == 1 else f"{text}% for a percentage"
            raise UnitError(f"probability {text!r} is ambiguous: a bare number must be below 1 (write {hint})")
        return cls(p)

    def __str__(self) -> str:
        return f"{self.p * 100:.12g}%"
