"""OmegaConf resolvers that put a rig (``dumbbell`` or ``testbed``) into an experiment: ``${rig_setup:}``, ``${rig_teardown:}``, ``${rig_emulator:}``.

Each reads the composed ``rig`` key of the config (the rig group an
experiment chose, with any overrides such as ``rig.rtt=40ms``) and returns
plain data: the set-up or tear-down runs (a list for a ``serial``), or the
name of the delay emulator the rig will use (``netem``, ``tun`` or ``none``), for
titles and IDs. A rig the kernel cannot build (a qdisc it lacks) fails the
composition with a message naming the qdiscs it has, before any test runs.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from antler.rig import dumbbell, testbed

RIGS = {dumbbell.KIND: dumbbell, testbed.KIND: testbed}
"""RIGS maps a rig's kind to its module (setup_runs, teardown_runs, facts, check, params)."""


def rig_data(root: DictConfig) -> dict[str, Any]:
    """Return the config's ``rig`` key as plain data, or raise ValueError when there is none."""
    if "rig" not in root or root.rig is None:
        raise ValueError("no rig in the config: add `- /rig: dumbbell` to the experiment's defaults")
    data = OmegaConf.to_container(root.rig, resolve=True)
    if not isinstance(data, dict):
        raise ValueError("rig must be a mapping")
    return {str(k): v for k, v in data.items()}


def _module(data: dict[str, Any]) -> Any:
    kind = str(data.get("kind", dumbbell.KIND))
    if kind not in RIGS:
        raise ValueError(f"unknown rig kind {kind!r} (known: {', '.join(RIGS)})")
    return RIGS[kind]


def rig_setup(*, _root_: DictConfig) -> list[dict[str, Any]]:
    """Return the ``${rig_setup:}`` resolver: the runs that build the configured rig."""
    data = rig_data(_root_)
    runs: list[dict[str, Any]] = _module(data).setup_runs(data)
    return runs


def rig_teardown(*, _root_: DictConfig) -> list[dict[str, Any]]:
    """Return the ``${rig_teardown:}`` resolver: the runs that report on and remove the rig."""
    data = rig_data(_root_)
    runs: list[dict[str, Any]] = _module(data).teardown_runs(data)
    return runs


def rig_emulator(*, _root_: DictConfig) -> str:
    """Return the ``${rig_emulator:}`` resolver: ``netem``, ``tun`` or ``none``, as the rig will use."""
    data = rig_data(_root_)
    emulator: str = _module(data).check(_module(data).params(data))
    return emulator


def rig_facts(config: dict[str, Any]) -> dict[str, Any] | None:
    """Describe the rig of a resolved job config for meta.json, or None if it has no rig."""
    data = config.get("rig")
    if not isinstance(data, dict):
        return None
    facts: dict[str, Any] = _module(data).facts(data)
    return facts


def register_resolvers() -> None:
    """Make the rig resolvers known to OmegaConf (idempotent)."""
    for name, fn in (("rig_setup", rig_setup), ("rig_teardown", rig_teardown), ("rig_emulator", rig_emulator)):
        OmegaConf.register_new_resolver(name, fn, replace=True)
