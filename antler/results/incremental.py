"""Incremental runs: which tests of an invocation run, and which are linked from the prior result folder.

As antler's ``run`` does, a test that passed in the prior result folder with
the same resolved ``test`` config is not run again: its folder is hard-linked
into the new result folder (no data copied, nothing modified). A test that is
new, failed, was interrupted, or whose ``test`` config changed runs, and the
plan says why. Changes outside ``test`` (``index.*``, ``results.*``) never
force a run, and a change to ``test.after`` alone re-runs only the reports.

With a filter (:class:`antler.testid.IdFilter`) the tests it selects run
whatever their state, and the others are linked as they stand in the prior
folder (failed or not, as antler does), or skipped when it lacks them.

The prior folder is the one ``latest`` points at, unless a killed run left an
``in-progress`` folder (its writer is gone): that one is newer, so a sweep
killed at test k resumes from it. A sweep stopped with Ctrl-C ends normally,
so its folder is ``latest``. A test that did not pass there with the same
config is looked for in the root's other result folders, newest first, and
linked from the first where it did (issue 30: running another experiment in
between made ``latest`` a folder without the sweep, so all of it ran
again); the plan's reason names the folder. Only meta.json files are read
here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from antler.results.store import IN_PROGRESS, LATEST, RESULT_FORMAT_VERSION, owner, result_folders
from antler.testid import IdFilter, id_text

MAX_CHANGES_SHOWN = 3
"""MAX_CHANGES_SHOWN is how many changed config paths a reason names before "and N more"."""


class Action(Enum):
    """What an invocation does with one test."""

    RUN = "run"
    LINK = "link"
    SKIP = "skip"


@dataclass(frozen=True)
class Wanted:
    """One test the invocation asks for: its folder, ID and whole resolved config (plain data)."""

    path: str
    test_id: Mapping[str, str]
    config: Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    """What happens to one test, and why.

    ``source`` is the prior test folder a linked test comes from. With
    ``keep_config`` (a test the filter left out) the linked test keeps its
    stored config and reports; otherwise it takes the invocation's config,
    and ``rerun_reports`` says its ``test.after`` changed, so its reports are
    made afresh from the linked data.
    """

    path: str
    test_id: Mapping[str, str]
    action: Action
    reason: str
    source: Path | None = None
    keep_config: bool = False
    rerun_reports: bool = False

    def line(self) -> str:
        """Return the decision as the command prints it: ``run  ID: reason``."""
        verb = {Action.RUN: "run ", Action.LINK: "link", Action.SKIP: "skip"}[self.action]
        return f"{verb} {id_text(self.test_id)}: {self.reason}"


@dataclass
class Plan:
    """An invocation's decisions, in the order of its tests, and the prior folder they compare with."""

    prior: Path | None
    decisions: list[Decision] = field(default_factory=list)

    def of(self, action: Action) -> list[Decision]:
        """Return the decisions with one action."""
        return [d for d in self.decisions if d.action is action]

    @property
    def nothing_to_do(self) -> bool:
        """True when no test runs and every linked test is the prior folder's as it stands: no folder is made then.

        Tests linked from an earlier folder make a new one, so ``latest``
        holds the whole sweep again.
        """
        links = self.of(Action.LINK)
        from_prior = all(
            self.prior is not None and d.source is not None and d.source.is_relative_to(self.prior) for d in links
        )
        return not self.of(Action.RUN) and not any(d.rerun_reports for d in links) and from_prior

    def moved(self, old: Path, new: Path) -> Plan:
        """Return the plan with sources under folder old found under new (a recovered in-progress)."""
        decisions = []
        for d in self.decisions:
            if d.source is not None and d.source.is_relative_to(old):
                d = replace(d, source=new / d.source.relative_to(old))
            decisions.append(d)
        return Plan(new if self.prior == old else self.prior, decisions)

    def summary(self) -> str:
        """Count the decisions: ``2 to run, 1 to link, 0 skipped``."""
        return (
            f"{len(self.of(Action.RUN))} to run, {len(self.of(Action.LINK))} to link"
            + (f", {len(self.of(Action.SKIP))} skipped" if self.of(Action.SKIP) else "")
            + (f" (compared with {self.prior})" if self.prior is not None else " (no prior results)")
        )


def prior_folder(root: Path) -> Path | None:
    """Return the result folder an invocation compares with: a killed run's in-progress, else latest.

    An in-progress folder whose writer is alive is not a prior result (the
    invocation will refuse to start beside it); None when there is neither.
    """
    in_progress = root / IN_PROGRESS
    if in_progress.is_dir() and owner(in_progress) is None:
        return in_progress
    latest = root / LATEST
    if latest.is_dir():
        return root / latest.resolve().name
    return None


def prior_tests(folder: Path | None) -> dict[str, tuple[Path, dict[str, Any]]]:
    """Map each test folder under folder (relative path) to its directory and meta.json."""
    if folder is None or not folder.is_dir():
        return {}
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for meta_path in sorted(folder.rglob("meta.json")):
        if meta_path.parent == folder:
            continue
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue  # a test killed before its meta.json was whole: not a result
        if isinstance(meta, dict):
            found[meta_path.parent.relative_to(folder).as_posix()] = (meta_path.parent, meta)
    return found


def earlier_folders(root: Path, prior: Path | None) -> list[Path]:
    """Return the result folders under root other than prior and in-progress, newest first."""
    skip = {IN_PROGRESS, prior.name if prior is not None else ""}
    return [f for f in reversed(result_folders(root)) if f.name not in skip]


def plan(wanted: list[Wanted], root: Path, run_all: bool = False, selected: IdFilter | None = None) -> Plan:
    """Decide, for each wanted test, whether to run it, link it from a result folder, or skip it.

    Without ``selected``, a test links from the prior folder where it passed
    with the same config there, else from the newest earlier folder where it
    did; else it runs, for the reason the prior folder gives.
    """
    prior = prior_folder(root)
    tests = prior_tests(prior)
    where = prior.name if prior is not None else ""
    out = Plan(prior)
    earlier: list[tuple[str, dict[str, tuple[Path, dict[str, Any]]]]] | None = None
    for w in wanted:
        found = tests.get(w.path)
        if run_all:
            out.decisions.append(Decision(w.path, w.test_id, Action.RUN, "-a/--all runs every test"))
        elif selected:
            if selected.accepts(w.test_id):
                out.decisions.append(Decision(w.path, w.test_id, Action.RUN, f"selected by --filter {selected}"))
            elif found is None:
                reason = f"not selected by --filter, and not in {where}" if where else "not selected by --filter"
                out.decisions.append(Decision(w.path, w.test_id, Action.SKIP, reason))
            else:
                status = str(found[1].get("status", "?"))
                note = "" if status == "ok" else f" (status {status} there)"
                reason = f"not selected by --filter; linked as it stands in {where}{note}"
                out.decisions.append(Decision(w.path, w.test_id, Action.LINK, reason, found[0], keep_config=True))
        else:
            decision = _incremental(w, found, where)
            if decision.action is not Action.LINK:
                if earlier is None:
                    # Read only when some test needs it: a root can hold many folders.
                    earlier = [(f.name, prior_tests(f)) for f in earlier_folders(root, prior)]
                older = (_incremental(w, t[w.path], name) for name, t in earlier if w.path in t)
                decision = next((d for d in older if d.action is Action.LINK), decision)
            out.decisions.append(decision)
    return out


def _incremental(w: Wanted, found: tuple[Path, dict[str, Any]] | None, where: str) -> Decision:
    if found is None:
        return Decision(w.path, w.test_id, Action.RUN, "new")
    directory, meta = found
    version = int(meta.get("format_version", 0) or 0)
    if version > RESULT_FORMAT_VERSION:
        return Decision(w.path, w.test_id, Action.RUN, f"its result in {where} is in a newer format ({version})")
    status = meta.get("status")
    if status != "ok":
        return Decision(w.path, w.test_id, Action.RUN, "failed before" if status == "failed" else "interrupted before")
    old_test = _plain((meta.get("config") or {}).get("test") or {})
    new_test = _plain(w.config.get("test") or {})
    old_after, new_after = old_test.pop("after", None), new_test.pop("after", None)
    changes = config_changes(old_test, new_test, "test")
    if changes:
        shown = ", ".join(changes[:MAX_CHANGES_SHOWN])
        more = f" and {len(changes) - MAX_CHANGES_SHOWN} more" if len(changes) > MAX_CHANGES_SHOWN else ""
        return Decision(w.path, w.test_id, Action.RUN, f"config changed: {shown}{more}")
    if old_after != new_after:
        reason = f"passed in {where}; test.after changed, so its reports are made again"
        return Decision(w.path, w.test_id, Action.LINK, reason, directory, rerun_reports=True)
    return Decision(w.path, w.test_id, Action.LINK, f"passed in {where}", directory)


def config_changes(old: Any, new: Any, path: str) -> list[str]:
    """List the paths where two plain configs differ (``test.run.serial[1].sleep``), in order."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in [*old, *(k for k in new if k not in old)]:
            if old.get(k, _ABSENT) != new.get(k, _ABSENT):
                out += config_changes(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{path}.{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in config_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [path]


_ABSENT = object()


def _plain(data: Any) -> Any:
    # meta.json holds the config as JSON wrote it (tuples as lists, odd types
    # as strings): the invocation's config goes the same way before comparing.
    return json.loads(json.dumps(data, default=str))
