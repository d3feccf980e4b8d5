"""The values of test IDs as numbers and quantities: what they sort by, and ID columns that keep their type.

A test's ID is text (it names the test's folder: ``rig_limit=1000``), but
what a researcher swept is mostly a number or a quantity (``100``, ``40ms``,
``50mbit``, ``64K``). Sorted as text, ``'1000'`` comes before ``'100'``
(issue 30). :func:`id_magnitude` reads the number a value stands for,
:func:`id_sort_key` orders values by it, and :func:`typed_id_column` gives
:meth:`antler.results.Results.concat` ID columns that sort as numbers:
integers as ``Int64``, other numbers as ``float64``, quantities as an ordered
categorical in the order of their magnitude (the text kept as written).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from antler.node.metric import Bitrate, Bytes, Duration

_INT = re.compile(r"^[-+]?[0-9]+$")
_LEADING_NUMBER = re.compile(r"^[-+]?[0-9]*\.?[0-9]+")


def id_number(value: str) -> int | float | None:
    """Return a value that is a plain number as an int or float, else None (``'100'`` is 100, ``'40ms'`` None)."""
    text = value.strip()
    if _INT.match(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return None
    return number if number == number else None  # "nan" is no number a sweep wrote


def id_magnitude(value: str) -> float | None:
    """Return the number an ID value stands for, or None for text.

    A plain number is itself; a duration is its seconds, a bitrate its bits
    per second, an amount of data its bytes (the units antler.node.metric
    reads); any other value that starts with a number (``2flows``) is that
    number.
    """
    number = id_number(value)
    if number is not None:
        return float(number)
    for parse in (lambda v: Duration.parse(v).seconds, lambda v: Bitrate.parse(v).bps, lambda v: Bytes.parse(v).n):
        try:
            return float(parse(value))
        except ValueError:
            continue
    m = _LEADING_NUMBER.match(value)
    return float(m.group()) if m else None


def id_sort_key(value: str) -> tuple[int, float, str]:
    """Return the key that orders ID values by magnitude (10ms, 40ms, 1s, 100 before 1000), then text after them."""
    magnitude = id_magnitude(value)
    return (0, magnitude, value) if magnitude is not None else (1, 0.0, value)


def id_order(values: Iterable[str]) -> list[str]:
    """Return the distinct values in the order of :func:`id_sort_key`."""
    return sorted(set(values), key=id_sort_key)


def typed_id_column(values: pd.Series) -> pd.Series:
    """Return a column of ID values (text, None where a test lacks the key) typed so that it sorts as numbers.

    Integers become ``Int64``, other numbers ``float64`` (missing: NA/NaN);
    values that are all quantities or numbers an ordered categorical in
    magnitude order; anything else stays text.
    """
    present = values.dropna().astype(str)
    if present.empty:
        return values
    numbers = [id_number(v) for v in present]
    if all(n is not None for n in numbers):
        if all(isinstance(n, int) for n in numbers):
            return values.map(lambda v: None if v is None or v != v else int(v)).astype("Int64")
        return values.map(lambda v: float("nan") if v is None or v != v else float(v)).astype("float64")
    if all(id_magnitude(v) is not None for v in present):
        return pd.Series(pd.Categorical(values, categories=id_order(present), ordered=True), index=values.index)
    return values
