"""Flow identifiers: the rule every flow ID follows, shared by stream and packet flows."""

from __future__ import annotations

import re

FLOW_ID = re.compile(r"^[a-z][a-z0-9.-]{0,15}$")
"""FLOW_ID is antler's flow ID rule: lowercase, starting with a-z, then a-z, 0-9, '.' or '-', at most 16 characters."""


def check_flow(flow: str) -> None:
    """Check_flow raises ValueError if flow does not follow the flow ID rule."""
    if not FLOW_ID.match(flow):
        raise ValueError(
            f"invalid flow ID {flow!r}: use lowercase a-z first, then a-z, 0-9, '.' or '-', at most 16 characters"
        )
