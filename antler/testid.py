"""Test IDs: the key/value maps that name a test, its folder and its lines in pages and logs.

A test's ID (``test.id``) is a map such as ``{experiment: cubic, cca: bbr}``;
its keys and values match :data:`ID_PART`, so every ID is also a folder name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

ID_PART = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
"""ID_PART is what a test ID's keys and values must match."""


def id_text(test_id: Mapping[str, str]) -> str:
    """Id_text is a test ID as ``k=v k=v``, for people (pages, logs, the terminal)."""
    return " ".join(f"{k}={v}" for k, v in test_id.items())


def id_path(test_id: Mapping[str, str]) -> str:
    """Id_path is the folder a test's results go to when it sets no ``path``: ``k-v_k-v``."""
    return "_".join(f"{k}-{v}" for k, v in test_id.items())
