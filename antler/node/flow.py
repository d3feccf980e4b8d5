"""Flow IDs: the rule every stream and packet flow's identifier follows.

The rule is antler's: lowercase, starting with a letter, then letters, digits,
``.`` and ``-``, at most 16 characters. Flow IDs become file names, chart
labels and keys in result tables, so anything else is refused at config time.
"""

from __future__ import annotations

import re

MAX_FLOW_LEN = 16
"""MAX_FLOW_LEN is the longest flow ID, in characters (one byte each on the packet wire)."""
FLOW_ID = re.compile(rf"[a-z][a-z0-9.-]{{0,{MAX_FLOW_LEN - 1}}}")
"""FLOW_ID is the pattern a whole flow ID must match (use ``fullmatch``: ``match`` accepts any suffix)."""


def check_flow(flow: str) -> None:
    """Raise ValueError if flow is not a valid flow ID."""
    if not isinstance(flow, str) or not FLOW_ID.fullmatch(flow):
        raise ValueError(
            f"invalid flow ID {flow!r}: use lowercase letters, digits, '.' and '-', "
            "starting with a letter, at most 16 characters"
        )
