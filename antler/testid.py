"""Test IDs: the key/value maps that name a test, its folder and its lines in pages and logs.

A test's ID (``test.id``) is a map such as ``{experiment: cubic, cca: bbr}``;
its keys and values match :data:`ID_PART`, so every ID is also a folder name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

ID_PART = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
"""ID_PART is what a test ID's keys and values must match."""


def id_text(test_id: Mapping[str, str]) -> str:
    """Return a test ID as ``k=v k=v``, for people (pages, log, the terminal)."""
    return " ".join(f"{k}={v}" for k, v in test_id.items())


def id_path(test_id: Mapping[str, str]) -> str:
    """Return the folder a test's results go to when it sets no ``path``: ``k-v_k-v``."""
    return "_".join(f"{k}-{v}" for k, v in test_id.items())


def varying_id_keys(ids: Iterable[Mapping[str, str]]) -> list[str]:
    """List the keys whose values differ between the IDs, or that some ID lacks, in the order the IDs give them."""
    ids = list(ids)
    values: dict[str, set[str]] = {}
    for test_id in ids:
        for k, v in test_id.items():
            values.setdefault(k, set()).add(v)
    return [k for k, vs in values.items() if len(vs) > 1 or any(k not in i for i in ids)]


class IdFilter:
    """Selects tests by their ID with regexes, as antler's ``run FILTER...`` does.

    Each term is ``KEY=REGEX`` (some key matching KEY has a value matching
    REGEX) or a bare ``REGEX`` (some value matches); every term must match.
    Patterns are Python regexes searched anywhere in the key or value (antler's
    Go ``MatchString``), so ``rtt=10ms`` also matches ``110ms``: anchor with
    ``^10ms$``. No terms select every test.
    """

    def __init__(self, terms: list[str] | tuple[str, ...] = ()) -> None:
        """Raises ValueError naming the term whose regex does not compile."""
        self.terms = tuple(terms)
        self._parsed: list[tuple[re.Pattern[str] | None, re.Pattern[str]]] = []
        for term in self.terms:
            # Keys match ID_PART, which has no "=", so the first "=" splits.
            key, sep, value = term.partition("=")
            try:
                self._parsed.append((re.compile(key) if sep else None, re.compile(value if sep else term)))
            except re.error as e:
                raise ValueError(f"{term!r} is not a regex: {e}") from None

    def __bool__(self) -> bool:
        return bool(self.terms)

    def accepts(self, test_id: Mapping[str, str]) -> bool:
        """Report whether every term matches the ID."""
        return all(
            any((key is None or key.search(k)) and value.search(v) for k, v in test_id.items())
            for key, value in self._parsed
        )

    def __str__(self) -> str:
        return " ".join(self.terms)
