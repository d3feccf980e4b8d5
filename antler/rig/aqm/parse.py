"""Read a ``rig.qdisc`` string, spelled as ``tc`` spells it, into a userspace queue discipline.

One string serves both bottlenecks: ``codel target 5ms interval 100ms ecn``
goes to ``tc qdisc add ... codel target 5ms ...`` on the kernel path and to
:func:`make_queue` here. Words follow tc's grammar: a kind, then options, each
a keyword with one value or a lone flag (``ecn``/``noecn``). Times are written
with a unit as tc reads them (``5ms``, ``5000us``, ``1s``, also ``msec``,
``usec``, ``sec``); a bare number, which tc would read as microseconds, is
refused because it reads two ways. Sizes are read as tc's ``get_size`` reads
them (so the same text means the same bytes to both): a bare number is bytes,
``k``/``kb`` 1024 bytes, ``m``/``mb`` 1024², ``g``/``gb`` 1024³ (any case),
``kbit``/``mbit``/``gbit`` the same in bits.

``py:MODULE:CLASS key=value ...`` loads the user's own discipline
(:mod:`antler.rig.aqm.plugin`).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from antler.node.metric import Duration, UnitError
from antler.rig.aqm.base import DropSink, QueueDiscipline, ignore_drop

_TC_TIME_SUFFIX = re.compile(r"(secs?|msecs?|usecs?)$")
_TC_TIME_UNIT = {"sec": "s", "secs": "s", "msec": "ms", "msecs": "ms", "usec": "us", "usecs": "us"}
_TC_SIZE = re.compile(r"([0-9]+(?:\.[0-9]*)?)([a-zA-Z]*)")
_TC_SIZE_UNIT = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kbit": 1024 // 8,
    "m": 1024**2,
    "mb": 1024**2,
    "mbit": 1024**2 // 8,
    "g": 1024**3,
    "gb": 1024**3,
    "gbit": 1024**3 // 8,
}


def parse_time_ns(text: str) -> int:
    """Return the duration in tc's spelling (``5ms``, ``5000us``, ``15msec``, ``1s``) in ns.

    Raises ValueError for a bare number (tc reads it as µs: write the unit) or
    anything else :meth:`Duration.parse` refuses.
    """
    if re.fullmatch(r"[0-9.]+", text) and text not in ("0", "0.0"):
        raise ValueError(f"time {text!r} has no unit (write e.g. {text}us or 5ms)")
    m = _TC_TIME_SUFFIX.search(text)
    if m:
        text = text[: m.start()] + _TC_TIME_UNIT[m.group(1)]
    try:
        return Duration.parse(text).ns
    except UnitError as e:
        raise ValueError(str(e)) from None


def parse_size_bytes(text: str) -> int:
    """Return the size in tc's spelling (``1514``, ``64k``, ``32mb``, ``8kbit``) in bytes, as tc's get_size.

    Raises ValueError for any other spelling.
    """
    m = _TC_SIZE.fullmatch(text)
    factor = _TC_SIZE_UNIT.get(m.group(2).lower()) if m else None
    if m is None or factor is None:
        raise ValueError(f"size {text!r} is not bytes as tc writes them (e.g. 1514, 64k, 32mb, 8kbit)")
    return int(float(m.group(1)) * factor)


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number")
    return int(text)


def _positive(text: str) -> int:
    n = _count(text)
    if n < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return n


def _float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not x >= 0:
        raise ValueError(f"{text!r} must not be negative")
    return x


def _sixteenths(text: str) -> float:
    """Read a PI gain as tc's pie reads it, a whole number of sixteenths from 0 to 32: ``2`` is 0.125."""
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number of sixteenths (tc's pie: alpha 2 is 0.125, beta 20 is 1.25)")
    n = int(text)
    if n > 32:
        raise ValueError(f"{text!r} is above 32 sixteenths (2.0)")
    return n / 16


def _time_or_packets(text: str) -> tuple[int, bool]:
    """Read ``1ms`` as (1000000, False) and ``10p``/``10pkts`` as (10, True): a time or a packet count."""
    m = re.fullmatch(r"([0-9]+)(p|pkt|pkts|packets)", text)
    if m:
        return int(m.group(1)), True
    return parse_time_ns(text), False


_VALUE_READERS = {
    "N": _positive,
    "N0": _count,
    "TIME": parse_time_ns,
    "BYTES": parse_size_bytes,
    "FLOAT": _float,
    "TIME|Np": _time_or_packets,
    "N/16": _sixteenths,
}


_SHOWN = {"N0": "N", "FLOAT": "NUMBER"}
"""How a value spelling is shown to the user where it differs from its reader's name."""


def shown(spelling: str) -> str:
    """Return a value spelling as the grammar shows it, e.g. ``N`` for a count that may be 0."""
    return _SHOWN.get(spelling, spelling)


@dataclass(frozen=True)
class Kind:
    """One discipline the userspace bottleneck implements: its tc name, grammar and class.

    ``options`` maps a keyword to (value spelling, constructor keyword) for a
    keyword with a value, ``flags`` a lone word to (constructor keyword,
    value). ``limit_in_packets`` says whether ``rig.limit`` applies.
    """

    name: str
    target: str
    options: dict[str, tuple[str, str]]
    flags: dict[str, tuple[str, object]]
    limit_in_packets: bool
    rfc: str

    @property
    def synopsis(self) -> str:
        """The kind's grammar as a man page writes it, e.g. ``pfifo [limit N]``."""
        words = [self.name] + [f"[{k} {shown(v)}]" for k, (v, _) in self.options.items()]
        groups: dict[str, list[str]] = {}
        for flag, (kw, _) in self.flags.items():
            groups.setdefault(kw, []).append(flag)
        words += [f"[{'|'.join(g)}]" for g in groups.values()]
        return " ".join(words)

    def build_class(self) -> type:
        """Return the discipline's class (imported on first use)."""
        module, _, cls = self.target.partition(":")
        return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


_ECN: dict[str, tuple[str, object]] = {"ecn": ("ecn", True), "noecn": ("ecn", False)}
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("pfifo", "antler.rig.aqm.fifo:Pfifo", {"limit": ("N", "limit")}, {}, True, "tail drop"),
        Kind("bfifo", "antler.rig.aqm.fifo:Bfifo", {"limit": ("BYTES", "limit")}, {}, False, "tail drop"),
        Kind(
            "codel",
            "antler.rig.aqm.codel:Codel",
            {
                "limit": ("N", "limit"),
                "target": ("TIME", "target"),
                "interval": ("TIME", "interval"),
                "ce_threshold": ("TIME", "ce_threshold"),
            },
            _ECN,
            True,
            "RFC 8289",
        ),
        Kind(
            "fq_codel",
            "antler.rig.aqm.fq_codel:FqCodel",
            {
                "limit": ("N", "limit"),
                "flows": ("N", "flows"),
                "quantum": ("BYTES", "quantum"),
                "target": ("TIME", "target"),
                "interval": ("TIME", "interval"),
                "ce_threshold": ("TIME", "ce_threshold"),
                "memory_limit": ("BYTES", "memory_limit"),
            },
            _ECN,
            True,
            "RFC 8290",
        ),
        Kind(
            "pie",
            "antler.rig.aqm.pie:Pie",
            {
                "limit": ("N", "limit"),
                "target": ("TIME", "target"),
                "tupdate": ("TIME", "tupdate"),
                "alpha": ("N/16", "alpha"),
                "beta": ("N/16", "beta"),
            },
            _ECN,
            True,
            "RFC 8033",
        ),
        Kind(
            "dualpi2",
            "antler.rig.aqm.dualpi2:DualPi2",
            {
                "limit": ("N", "limit"),
                "coupling_factor": ("N", "coupling_factor"),
                "step_thresh": ("TIME|Np", "step_thresh"),
                "min_qlen_step": ("N0", "min_qlen_step"),
                "classic_protection": ("N0", "classic_protection"),
                "target": ("TIME", "target"),
                "tupdate": ("TIME", "tupdate"),
                "alpha": ("FLOAT", "alpha"),
                "beta": ("FLOAT", "beta"),
            },
            {
                "drop_on_overload": ("drop_overload", True),
                "overflow": ("drop_overload", False),
                "drop_enqueue": ("drop_early", True),
                "drop_dequeue": ("drop_early", False),
                "l4s_ect": ("any_ect", False),
                "any_ect": ("any_ect", True),
                "split_gso": ("split_gso", True),
                "no_split_gso": ("split_gso", False),
            },
            True,
            "RFC 9332",
        ),
    )
}
"""KINDS are the disciplines the userspace bottleneck implements, by tc name."""


def userspace_kinds() -> dict[str, str]:
    """Return each kind the userspace bottleneck implements with its grammar, e.g. ``{"pfifo": "pfifo [limit N]"}``.

    ``py:MODULE:CLASS key=value ...`` (the user's own class) is always there too.
    """
    return {name: kind.synopsis for name, kind in KINDS.items()} | {"py": "py:MODULE:CLASS [key=value ...]"}


def parse_words(text: str) -> tuple[Kind, dict[str, Any]]:
    """Return the Kind of a tc-spelled discipline and its constructor keywords, raising ValueError for bad text.

    The error names the offending word and what the kind accepts.
    """
    words = text.split()
    if not words:
        raise ValueError("empty queue discipline (use e.g. pfifo, codel, fq_codel ecn, pie, dualpi2)")
    kind = KINDS.get(words[0])
    if kind is None:
        raise ValueError(
            f"unknown queue discipline {words[0]!r}: the userspace bottleneck has {', '.join(KINDS)}, "
            "or py:MODULE:CLASS for your own"
        )
    kwargs: dict[str, Any] = {}
    i = 1
    while i < len(words):
        word = words[i]
        if word in kind.flags:
            key, value = kind.flags[word]
            kwargs[key] = value
            i += 1
            continue
        if word not in kind.options:
            raise ValueError(f"{kind.name}: unknown word {word!r} (accepted: {kind.synopsis})")
        spelling, key = kind.options[word]
        if i + 1 >= len(words):
            raise ValueError(f"{kind.name}: {word} needs a value ({word} {shown(spelling)})")
        raw = words[i + 1]
        try:
            kwargs[key] = _VALUE_READERS[spelling](raw)
        except ValueError as e:
            raise ValueError(f"{kind.name}: {word} {raw!r}: {e} ({word} {shown(spelling)})") from None
        i += 2
    return kind, kwargs


def make_queue(
    text: str,
    *,
    limit_default: int | None = None,
    drop: DropSink = ignore_drop,
    config_dir: Path | None = None,
) -> QueueDiscipline:
    """Return a new queue discipline for ``rig.qdisc`` text, e.g. ``fq_codel ecn`` or ``py:step:StepMarker k=1ms``.

    ``limit_default`` (``rig.limit``; None or 0 for the kind's own) is the
    limit in packets for a kind whose limit counts packets when the text sets
    none; ``drop`` receives every packet the discipline drops after taking it;
    ``config_dir`` is where ``py:MODULE`` is looked for first. Defaults are
    the Linux kernel's. Raises ValueError naming the bad word and what is
    accepted (the caller names ``rig.qdisc``).
    """
    stripped = text.strip()
    if stripped.startswith("py:"):
        from antler.rig.aqm.plugin import load_plugin

        return load_plugin(stripped, drop=drop, config_dir=config_dir)
    kind, kwargs = parse_words(stripped)
    if limit_default and kind.limit_in_packets and "limit" not in kwargs:
        kwargs["limit"] = limit_default
    try:
        return kind.build_class()(drop=drop, **kwargs)  # type: ignore[no-any-return]
    except ValueError as e:
        raise ValueError(f"{kind.name}: {e} (accepted: {kind.synopsis})") from None
