"""Refusing top-level config keys that nothing reads: a typo (``+durration=5s``) is an error, not a no-op.

A top-level key is read when it is one of the root specs (``test``,
``results``, ``ray``, ``sweep``, ``index``), a key the resolvers read from
the root (``rig``, ``seed``, the repetition ``rep``), the free-form
``labels`` (recorded, never read: the documented place for notes about a
run), or a name some interpolation of the config refers to (``${duration}``,
``${fct.lengths}``). Anything else set on the command line was set for
nothing: a sweep over it plans identical tests (issue 30).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf

from antler.node.spec import ConfigError

READ_BY_THE_TOOL = frozenset({"test", "results", "ray", "sweep", "index", "rig", "seed", "rep", "labels", "calibrate"})
"""READ_BY_THE_TOOL are the top-level keys the tool itself reads (or records, as ``labels``)."""

_REFERENCE = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)(?=[.}\[\s])")
"""_REFERENCE finds the top-level name of an absolute interpolation (``${fct.lengths}``), not a resolver (``${each:``)."""


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def referenced(cfg: DictConfig) -> set[str]:
    """Return the top-level names the config's interpolations refer to."""
    raw = OmegaConf.to_container(cfg, resolve=False)
    return {m.group(1) for s in _strings(raw) for m in _REFERENCE.finditer(s)}


def override_keys(overrides: list[str]) -> list[str]:
    """Return the top-level config keys a job's overrides set (``+durration=5s`` sets ``durration``), not groups."""
    names = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if "/" in key or "@" in key or key in ("experiment", "hydra") or key.startswith("hydra."):
            continue  # a config group's choice, or Hydra's own settings
        names.append(re.split(r"[.\[]", key, maxsplit=1)[0])
    return names


def check_read(cfg: DictConfig, overrides: list[str]) -> None:
    """Raise ConfigError for the first top-level key the overrides set that nothing reads, naming the nearest read key.

    Only keys set on the command line are checked: that is where a typo
    makes a key of its own. An experiment file's own parameters are its
    author's.
    """
    read = READ_BY_THE_TOOL | referenced(cfg)
    for name in override_keys(overrides):
        if name in read or name not in cfg:
            continue
        known = sorted(read & {str(k) for k in cfg} | READ_BY_THE_TOOL - {"rep"})
        close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            name,
            f"no part of the config reads this key; {hint}(read here: {', '.join(known)}; "
            "free-form notes go under labels: {...})",
        )
