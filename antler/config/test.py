"""TestSpec: one test of an experiment, as the ``test`` key of the config sets it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from antler.node.hmac import resolve_key
from antler.node.metric import Duration
from antler.node.run import Run
from antler.node.runners.packet.wire import header_len
from antler.node.spec import ConfigError, FieldError, parse
from antler.report.expect import ExpectationError, parse_expectation
from antler.report.spec import After, ChartsFCT, ChartsTimeSeries, During
from antler.testid import ID_PART, id_path, id_text


@dataclass(frozen=True)
class TestSpec:
    """A test: its ID, output path, timeout, HMAC choice, run tree, reports and what a suspect run is.

    With ``hmac``, packets are signed with a key from ``ANTLER_HMAC_KEY``, else
    from the file ``hmac_key_file``, else a random key made for the test
    (antler.node.hmac.resolve_key); the key itself is never in the config.
    """

    id: dict[str, str] = field(default_factory=dict)
    path: str = ""
    timeout: Duration = field(default_factory=lambda: Duration(660_000_000_000))
    hmac: bool = False
    hmac_key_file: str = ""
    run: Run = field(default_factory=Run)
    during: During = field(default_factory=During)
    after: After = field(default_factory=After)
    expect: list[str] = field(default_factory=list)
    """expect lists conditions on the results that pass or fail after the analysis (antler.report.expect)."""
    health: str = "warn"
    """What a suspect test is (antler.report.verdict): ``warn`` says so and passes, ``fail`` fails it."""

    def validate(self) -> None:
        """Raise ValueError for an empty ID, a key or value off ID_PART, a path that leaves the folder,
        or, with hmac on and no key in the environment, a key file that cannot be read or is empty."""
        if not self.id:
            raise ValueError("test.id needs at least one key, e.g. {experiment: NAME}")
        for k, v in self.id.items():
            if not ID_PART.fullmatch(k):
                raise ValueError(f"test ID key {k!r} must match {ID_PART.pattern}")
            if not ID_PART.fullmatch(v):
                raise ValueError(f"test ID value {v!r} (key {k!r}) must match {ID_PART.pattern}")
        if self.health not in ("warn", "fail"):
            raise FieldError("health", f"{self.health!r} must be warn or fail")
        if self.path and (self.path.startswith("/") or ".." in self.path.split("/")):
            raise ValueError(f"test path {self.path!r} must be relative, without '..'")
        if self.hmac and self.hmac_key_file:
            # Read now, so a missing key file stops the run before anything starts (it
            # failed the test with a traceback, after writing its folder).
            try:
                resolve_key(True, self.hmac_key_file)
            except (OSError, ValueError) as e:
                reason = e.strerror if isinstance(e, OSError) and e.strerror else "the file is empty"
                raise ValueError(f"hmac_key_file {self.hmac_key_file!r}: {reason}") from None

    def output_path(self) -> str:
        """Return the test's folder under the result folder, from path or its ID."""
        if self.path:
            return self.path
        return id_path(self.id)

    def id_text(self) -> str:
        """Return the ID as ``k=v k=v``, for humans."""
        return id_text(self.id)

    def flows(self, kind: str = "") -> list[str]:
        """List, sorted, the IDs of the flows the run tree drives (its stream and packet clients: Run.flows).

        With ``kind`` (``stream`` or ``packet``), only the flows of that kind.
        The tree is the resolved one, so IDs made by resolvers
        (``${each:...}``) are in it.
        """
        return list(self.run.flows(kind))

    def check_flow_names(self, path: str = "test") -> None:
        """Check every flow the reports name against the run tree's flows.

        A ``flow_label`` key must be a flow of the tree, and a ``charts_fct``
        series pattern must match one of its stream flows (the chart draws
        only those): a typo would otherwise draw nothing and say nothing.
        Each ``expect`` entry must parse and name a known table, column and
        flow (antler.report.expect), e.g. ``test.expect[0]: ... unknown flow``.
        Raises ConfigError with the path below ``path`` (the config's ``test``
        key), e.g. ``test.after.report[0].charts_time_series.flow_label.bluk:
        no flow 'bluk' (flows: rtt, tcp)``.
        """
        flows = self.flows()
        for i, text in enumerate(self.expect):
            try:
                parse_expectation(text, flows)
            except ExpectationError as e:
                raise ConfigError(f"{path}.expect[{i}]", str(e)) from None
        for group, steps in (("default", self.after.default), ("report", self.after.report)):
            for i, step in enumerate(steps):
                name, spec = step.step()
                at = f"{path}.after.{group}[{i}].{name}"
                if isinstance(spec, (ChartsTimeSeries, ChartsFCT)):
                    for flow in spec.flow_label:
                        if flow not in flows:
                            raise ConfigError(f"{at}.flow_label.{flow}", f"no flow {flow!r} ({flows_text(flows)})")
                if isinstance(spec, ChartsFCT):
                    streams = self.flows("stream")
                    for j, series in enumerate(spec.series):
                        if not any(re.search(series.pattern, f) for f in streams):
                            raise ConfigError(
                                f"{at}.series[{j}].pattern",
                                f"no stream flow matches {series.pattern!r} ({flows_text(streams, 'stream flows')})",
                            )

    def check_feedback_keys(self, path: str = "test") -> None:
        """Check that each client's ``addr_key`` is a ``listen_addr_key`` some server of the tree publishes.

        The client reads its server's address from the feedback under that
        key when it starts; a key no server sets fails only then, after the
        rig is built (issue 30: every bound a runner checks, vet checks
        first). Raises ConfigError naming the client's key and the keys the
        servers publish.
        """
        published: set[str] = set()
        wanted: list[tuple[str, str]] = []
        for at, r in self.run.walk(f"{path}.run"):
            found = r.runner()
            if found is None:
                continue
            name, runner = found
            listen_key, addr_key = getattr(runner, "listen_addr_key", ""), getattr(runner, "addr_key", "")
            if listen_key:
                published.add(str(listen_key))
            if addr_key and not getattr(runner, "addr", ""):
                wanted.append((f"{at}.{name}.addr_key", str(addr_key)))
        for at, key in wanted:
            if key not in published:
                keys = ", ".join(sorted(published)) or "none"
                raise ConfigError(at, f"no server of the test publishes {key!r} (servers' listen_addr_key: {keys})")

    def check_packet_headers(self, path: str = "test") -> None:
        """Check that every packet a packet_client sends has room for its header (and HMAC tag, with ``hmac``).

        The header holds the flow ID, so its length is the flow's
        (:func:`antler.node.runners.packet.wire.header_len`); the client
        refused a shorter packet only when it started, after the rig was
        built (issue 30: every bound a runner checks, vet checks first).
        Raises ConfigError naming the sender and the lengths.
        """
        for at, r in self.run.walk(f"{path}.run"):
            client = r.packet_client
            if client is None:
                continue
            need = header_len(client.flow, self.hmac)
            for i, sender in enumerate(client.sender):
                short = [n for n in sender.sender().length if n < need]
                if short:
                    tag = " and HMAC tag (test.hmac)" if self.hmac else ""
                    raise ConfigError(
                        f"{at}.packet_client.sender[{i}]",
                        f"packet length {short[0]} is shorter than flow {client.flow!r}'s header{tag}: {need} bytes",
                    )


FLOWS_SHOWN = 10
"""FLOWS_SHOWN is how many flow IDs an error message lists (an fct test has 40)."""


def flows_text(flows: list[str], what: str = "flows") -> str:
    """Return a list of flow IDs for an error message: ``flows: a, b``, ``flows: none``, or the first few."""
    shown = ", ".join(flows[:FLOWS_SHOWN]) or "none"
    more = f", ... ({len(flows)} in all)" if len(flows) > FLOWS_SHOWN else ""
    return f"{what}: {shown}{more}"


def parse_run(data: Any, path: str = "run") -> Run:
    """Build and validate a run tree from plain data, raising ConfigError with the path."""
    return parse(Run, data, path)
