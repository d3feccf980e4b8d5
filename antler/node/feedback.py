"""Feedback: the string-keyed values runners return for later runners.

A stream server returns its bound address under ``listen_addr_key``, and a
client later in a serial finds it under ``addr_key``. The same key from two
runs is an error, never a silent overwrite: antler once shipped a merge that
merged nothing, and a last-writer-wins merge would hide the same class of bug.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Feedback = dict[str, Any]


class FeedbackConflict(ValueError):
    """Two runs returning feedback under the same key."""

    def __init__(self, key: str, old: Any, new: Any) -> None:
        super().__init__(f"feedback key {key!r} set twice (values {old!r} and {new!r})")
        self.key = key


def merge(*parts: Mapping[str, Any]) -> Feedback:
    """Return the union of feedback maps, raising FeedbackConflict on a repeated key."""
    out: Feedback = {}
    for part in parts:
        for key, value in part.items():
            if key in out:
                raise FeedbackConflict(key, out[key], value)
            out[key] = value
    return out
