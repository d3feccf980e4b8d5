"""Quantities with units: Duration, Bytes and Bitrate, parsed from config text.

A value without a unit is an error (except a bare ``0`` duration, as in Go's
``time.ParseDuration``), because a bare ``10`` could mean seconds or
milliseconds and the test would silently measure something else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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

# Decimal SI prefixes for both bytes and bits, and binary (Ki, Mi, ...) ones,
# as iperf3 users write them.
_PREFIX = {
    "": 1,
    "k": 1_000,
    "K": 1_000,
    "M": 1_000_000,
    "G": 1_000_000_000,
    "T": 1_000_000_000_000,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_BYTES = re.compile(_NUM + r"\s*(|k|K|M|G|T|Ki|Mi|Gi|Ti)(B|b|bit|bits|byte|bytes)?")
_BITRATE = re.compile(_NUM + r"\s*(|k|K|M|G|T|Ki|Mi|Gi|Ti)(bit|bps|Bps|b)(?:/s|ps)?", re.IGNORECASE)


class UnitError(ValueError):
    """UnitError is a quantity that could not be parsed, with the reason."""


@dataclass(frozen=True, order=True)
class Duration:
    """Duration is a length of time in integer nanoseconds."""

    ns: int

    @classmethod
    def parse(cls, value: Any) -> Duration:
        """Parse returns the Duration in text like ``1.5s``, ``100ms`` or ``1m30s``.

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
        """Seconds returns the duration in seconds."""
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
    """Bytes is an amount of data in bytes, parsed from text like ``64K`` or ``2MB``."""

    n: int

    @classmethod
    def parse(cls, value: Any) -> Bytes:
        """Parse returns Bytes from an integer or text with an SI or binary prefix."""
        if isinstance(value, Bytes):
            return value
        if isinstance(value, bool):
            raise UnitError(f"invalid byte count {value!r}")
        if isinstance(value, int):
            if value < 0:
                raise UnitError(f"negative byte count {value}")
            return cls(value)
        if not isinstance(value, str):
            raise UnitError(f"invalid byte count {value!r}")
        m = _BYTES.fullmatch(value.strip())
        if not m:
            raise UnitError(f"invalid byte count {value!r} (use e.g. 1500, 64K, 2MB, 1Mi)")
        n = float(m.group(1)) * _PREFIX[m.group(2)]
        if m.group(3) in ("b", "bit", "bits"):
            n /= 8
        return cls(round(n))

    def __str__(self) -> str:
        return f"{self.n}B"


@dataclass(frozen=True, order=True)
class Bitrate:
    """Bitrate is a data rate in bits per second, parsed from text like ``50Mbit``."""

    bps: int

    @classmethod
    def parse(cls, value: Any) -> Bitrate:
        """Parse returns a Bitrate from text like ``50Mbit``, ``50mbit`` or ``1.5Gbps``."""
        if isinstance(value, Bitrate):
            return value
        if isinstance(value, bool):
            raise UnitError(f"invalid bitrate {value!r}")
        text = str(value).strip()
        if text in ("0", "0.0"):
            return cls(0)
        if isinstance(value, (int, float)):
            raise UnitError(f"bitrate {value!r} has no unit (use e.g. 50Mbit)")
        m = _BITRATE.fullmatch(text)
        if not m:
            raise UnitError(f"invalid bitrate {text!r} (use e.g. 50Mbit, 1Gbit, 500kbit)")
        prefix = m.group(2)
        # tc writes "mbit" in lowercase; accept any case for the prefix.
        prefix = (
            {"k": "k", "m": "M", "g": "G", "t": "T"}.get(prefix.lower(), prefix)
            if len(prefix) == 1
            else prefix[0].upper() + "i"
        )
        bps = float(m.group(1)) * _PREFIX[prefix]
        if m.group(3) == "Bps":
            bps *= 8
        return cls(round(bps))

    @property
    def mbps(self) -> float:
        """Mbps returns the rate in megabits per second."""
        return self.bps / 1e6

    def __str__(self) -> str:
        for unit, size in (("Gbit", 10**9), ("Mbit", 10**6), ("kbit", 10**3)):
            if self.bps >= size and self.bps % size == 0:
                return f"{self.bps // size}{unit}"
        return f"{self.bps}bit"
