"""Re-running the after reports of stored results into a new result folder (``antler-ray report``)."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import yaml

from antler.node.spec import ConfigError, parse
from antler.report.index import write_index
from antler.report.pipeline import after_of, report_output, report_outputs, run_after
from antler.report.spec import IndexSpec
from antler.report.summary import check_index_keys, varying_keys
from antler.results.store import Invocation, link_tree, write_meta
from antler.results.tables import load


def index_overrides(index: Any, overrides: list[str]) -> dict[str, Any]:
    """Return the comparison page's config (``index`` of the stored config) with ``index.KEY=VALUE`` overrides set.

    A value is read as YAML (``index.compare=[goodput_mbps,fct_s]`` is a
    list). Raises ConfigError naming an override that is not ``index.*`` or
    has no ``=``.
    """
    out: dict[str, Any] = dict(index or {})
    for item in overrides:
        key, sep, value = item.partition("=")
        path = key.split(".")
        if not sep or path[0] != "index" or len(path) < 2 or not all(path[1:]):
            raise ConfigError(repr(item), "report takes only index.KEY=VALUE (the comparison page's settings)")
        node = out
        for part in path[1:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[path[-1]] = yaml.safe_load(value) if value else None
    return out


def report(src: Path, root: Path, out: TextIO | None = None, overrides: list[str] | None = None) -> Path:
    """Re-run the after reports of the result folder src into a new folder under root; it returns that folder.

    The source is never modified: its data files are hard-linked (or copied)
    into the new folder, leaving out what the after pipeline produces, which
    is then produced afresh from the stored data. ``overrides``
    (``index.x=rig_limit``) change the comparison page's settings (see
    :func:`index_overrides`). Raises FormatError when src is in a result
    format newer than this code, ConfigError for an override the page does
    not take; both before anything is created.
    """
    results = load(src)  # refuses newer formats before anything is created
    config = next(iter(results.values())).meta.get("config", {}) if len(results) else {}
    index = parse(IndexSpec, index_overrides((config or {}).get("index"), overrides or []), "index")
    if overrides:
        check_index_keys(index, varying_keys(results))
    inv = Invocation(root)
    inv.begin()
    try:
        for key, test in results.items():
            after = after_of(test.meta)
            # The index and plotly.js of a test that is a whole folder are made afresh too.
            outputs = report_outputs(after) | {"index.html", "plotly-*.min.js"}
            dst = inv.test_dir(key) if key != "." else inv.dir
            link_tree(test.path, dst, partial(report_output, outputs=outputs))
            meta = dict(test.meta)
            meta["reported_from"] = str(test.path)
            # The tables are linked as stored: their format is the source's, upgraded again on load.
            meta["format_version"] = test.format_version
            write_meta(dst, meta)
            errors = run_after(dst, after, sys.stdout if out is None else out, root=inv.dir)
            if errors:
                print(f"{key}: {len(errors)} report(s) failed", file=sys.stderr)
        write_index(inv.dir, index)
    finally:
        final = inv.finish()
    return final
