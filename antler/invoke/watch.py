"""Watching one test's testbed: provenance, health sampled during it, and its verdict, for its folder.

:class:`TestWatch` is what :func:`antler.invoke.testdir.run_test` starts
before a test's tree runs and stops after it: a sampler thread
(:class:`antler.rig.health.Sampler`) records the host's CPU, the node and
delay link processes' CPU and the rig namespaces' socket drops into
``health.parquet``; once the rig is up it reads back what the kernel really
has there (:func:`antler.rig.snapshot.read_rig`); the delay link's closing
log line is caught on its way to the log; at the end the verdict
(:func:`antler.report.verdict.judge`) goes into meta.json ``health`` beside
``provenance``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from antler.config.compose import Job
from antler.invoke.calibrate import key_hash, rig_key
from antler.invoke.provenance import host_provenance, seeds
from antler.node.items import Batch, Item, LogEntry
from antler.node.launch.netns import inode
from antler.report.calibration import CALIBRATION_FILE
from antler.report.verdict import Health, Reason, bottleneck_drops, judge
from antler.rig.health import PERIOD_S, Sampler
from antler.rig.snapshot import qdisc_installed, read_rig

HEALTH_FILE = "health.parquet"
ROLES = ("left", "mid", "right")


def rig_namespaces(config: dict[str, Any], renamed: dict[str, str] | None = None) -> dict[str, str]:
    """Return the namespaces of a job's rig on this host by role, or {} for no rig or one on other hosts.

    ``renamed`` maps a namespace name to the one a placed test gives it.
    """
    rig = config.get("rig")
    if not isinstance(rig, dict) or rig.get("kind") != "dumbbell":
        return {}
    out = {}
    for role in ROLES:
        netns = ((rig.get("nodes") or {}).get(role) or {}).get("netns") or {}
        name = netns.get("name") or (rig.get("nodes") or {}).get(role, {}).get("id", "")
        if name:
            out[role] = (renamed or {}).get(name, name)
    return out


class TestWatch:
    """Provenance and health of one test: start it before the tree runs, stop it after, merge meta()."""

    def __init__(
        self, job: Job, directory: Path, renamed: dict[str, str] | None = None, result_dir: Path | None = None
    ) -> None:
        self.job = job
        self.directory = directory
        self.result_dir = result_dir
        self.namespaces = rig_namespaces(job.config, renamed)
        # Every namespace a node of the test lives in (the rig's among them) has its socket drops watched.
        watched = {(renamed or {}).get(n.netns_name, n.netns_name) for n in job.test.run.nodes() if n.netns_name}
        watched |= set(self.namespaces.values())
        rig = job.config.get("rig") or {}
        self._bottleneck = (str(rig.get("ifaces", {}).get("mid_right", "")), self._bottleneck_kind(rig))
        self.rig_read: dict[str, Any] = {}
        self.link_lines: list[str] = []
        self.bottleneck_dropped: int | None = None
        self.measured_ns: tuple[int, int] | None = None
        self._mid = str(((rig.get("nodes") or {}).get("mid") or {}).get("id", "")) if self.namespaces else ""
        self._set_up = False
        """_set_up turns True when the rig's set-up has ended: its warm-up ping answered, or a flow measured."""
        self.health = Health()
        self.sampler = Sampler(sorted(watched), PERIOD_S, self._rig_up if self.namespaces else None)

    @staticmethod
    def _bottleneck_kind(rig: dict[str, Any]) -> str:
        rate = str(rig.get("rate", "0")).strip()
        qdisc = str(rig.get("qdisc", "") or "pfifo").split()[0]
        return qdisc if rate in ("0", "0bit", "") else "htb"

    def _rig_up(self) -> bool:
        """Read the rig back once its set-up has ended and mid has the bottleneck; it returns whether it did."""
        if not self._set_up or any(inode(ns) is None for ns in self.namespaces.values()):
            return False
        dev, kind = self._bottleneck
        if dev and not qdisc_installed(self.namespaces["mid"], dev, kind):
            return False
        self.rig_read = read_rig(self.namespaces)
        return True

    def wrap(self, sink: Any) -> Any:
        """Return a sink that passes every item on to sink, keeping the delay link's closing lines."""

        def watched(item: Item) -> None:
            if isinstance(item, LogEntry):
                if "release lateness" in item.text:
                    self.link_lines.extend(line for line in item.text.splitlines() if "release lateness" in line)
                elif item.node_id == self._mid and item.text.startswith("qdisc ") and " Sent " in item.text:
                    # The rig's tear-down logs tc -s qdisc show dev MID_RIGHT: the bottleneck's drops, for the record.
                    self.bottleneck_dropped = bottleneck_drops(item.text)
                elif "packets transmitted" in item.text:  # the rig's warm-up ping, its set-up's last step
                    self._set_up = True
            elif isinstance(item, Batch):
                self._set_up = True
                # The span in which the flows measured: the CPU rules judge it (antler.report.verdict.judge).
                t_ns = self.sampler.elapsed_ns()
                self.measured_ns = (self.measured_ns[0] if self.measured_ns else t_ns, t_ns)
            sink(item)

        return watched

    def start(self) -> None:
        """Start sampling."""
        self.sampler.start()

    def stop(self) -> None:
        """Stop sampling, write health.parquet and judge the test."""
        table = self.sampler.stop()
        pq.write_table(table, self.directory / HEALTH_FILE)
        self.health = judge(table.to_pandas(), self.link_lines, PERIOD_S, self.bottleneck_dropped, self.measured_ns)
        for reason in self._calibration_reasons():
            self.health.add(reason)

    def _calibration_reasons(self) -> list[Reason]:
        """Return the calibration warnings of this test's rig (calibration.json of the result folder) as reasons."""
        rig = self.job.config.get("rig")
        if self.result_dir is None or not isinstance(rig, dict):
            return []
        try:
            data = json.loads((self.result_dir / CALIBRATION_FILE).read_text())
        except (OSError, ValueError):
            return []
        mine = key_hash(rig_key(rig))
        return [
            Reason("calibration", f"calibration: {f['text']}", float(f["value"]), str(f["unit"]), 0)
            for entry in data.get("rigs", [])
            if key_hash(entry.get("key", {})) == mine
            for f in entry.get("findings", [])
            # Idle CPU before the tests is no fact of this test: its own CPU rows judge its load.
            if f.get("verdict") == "warning" and f.get("name") != "idle_cpu"
        ]

    def meta(self) -> dict[str, Any]:
        """Return meta.json's ``provenance`` and ``health`` for the test."""
        prov = {**host_provenance(), "seeds": seeds(self.job.config)}
        if self.namespaces:
            prov["rig"] = self.rig_read or {"error": "the rig was never up (the test ended before its set-up did)"}
        health = {
            **self.health.to_meta(),
            "line": self.health.line(),
            "started": self.sampler.started.isoformat(),
            "period_s": PERIOD_S,
            "sampler_errors": self.sampler.errors[:10],
        }
        return {"provenance": prov, "health": health}
