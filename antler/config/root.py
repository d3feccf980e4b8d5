"""RootSpec: a job's whole config, parsed once: ``results``, ``ray``, ``sweep``, ``index``, ``calibrate``, ``test``.

:func:`antler.config.compose.compose_jobs` builds one per job from the
resolved config; the commands, the sweep and the reports read these typed
values, never the raw dict (which is kept only to be recorded in meta.json and
config.yaml, and compared by incremental runs). Other top-level keys are an
experiment's parameters, which its run tree interpolates, and the rig, which
its resolvers parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from antler.config.sweep import SweepSpec, sweep_spec
from antler.config.test import TestSpec, flows_text
from antler.node.spec import ConfigError, parse
from antler.report.spec import IndexSpec


@dataclass(frozen=True)
class ResultsSpec:
    """The ``results`` key: ``root_dir``, where result folders go (relative to the working directory)."""

    root_dir: str = "results"


@dataclass(frozen=True)
class RaySpec:
    """The ``ray`` key: ``address``, a Ray cluster to join (or ``auto``).

    None (or empty) joins the cluster RAY_ADDRESS names, else starts an
    embedded local Ray when a test needs one.
    """

    address: str | None = None

    def __post_init__(self) -> None:
        if not self.address:
            object.__setattr__(self, "address", None)


@dataclass(frozen=True)
class RootSpec:
    """One job's config as typed specs: the test, and where and how the invocation runs it."""

    test: TestSpec
    results: ResultsSpec = field(default_factory=ResultsSpec)
    ray: RaySpec = field(default_factory=RaySpec)
    sweep: SweepSpec = field(default_factory=SweepSpec)
    index: IndexSpec = field(default_factory=IndexSpec)
    calibrate: str = "auto"
    """When the rig is calibrated before the tests: ``auto`` (once per host, kernel and rig setting), ``always``, ``off``."""


CALIBRATE_MODES = ("auto", "always", "off")


def parse_root(config: Mapping[str, Any], swept: Mapping[str, str] | None = None) -> RootSpec:
    """Parse the root keys of a resolved job config, raising ConfigError naming the bad value.

    ``swept`` are the job's swept keys: ``sweep`` cannot be swept (its
    settings are the invocation's). The ``index.flow`` pattern must match a
    flow of the test (:func:`check_index`).
    """
    test = parse(TestSpec, config.get("test"), "test")
    test.check_flow_names("test")
    test.check_feedback_keys("test")
    test.check_packet_headers("test")
    root = RootSpec(
        test=test,
        results=parse(ResultsSpec, config.get("results"), "results"),
        ray=parse(RaySpec, config.get("ray"), "ray"),
        sweep=sweep_spec(config, swept),
        index=parse(IndexSpec, config.get("index"), "index"),
        calibrate=_calibrate(config.get("calibrate", "auto")),
    )
    check_index(root.index, test)
    return root


def _calibrate(value: Any) -> str:
    # YAML reads a bare off as False.
    mode = "off" if value is False else value
    if mode not in CALIBRATE_MODES:
        raise ConfigError("calibrate", f"{value!r} must be auto, always or off")
    return str(mode)


def check_index(spec: IndexSpec, test: TestSpec, path: str = "index") -> None:
    """Raise ConfigError when ``index.flow`` matches none of a test's flows.

    The index charts the flows it matches, so a pattern that matches none
    draws nothing; the default ``.*`` is fine for a test without flows.
    """
    flows = test.flows()
    if not flows and spec.flow == IndexSpec.flow:
        return
    pattern = re.compile(spec.flow)
    if not any(pattern.search(f) for f in flows):
        raise ConfigError(f"{path}.flow", f"no flow matches {spec.flow!r} ({flows_text(flows)})")
