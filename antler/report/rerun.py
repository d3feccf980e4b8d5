"""Re-running the after reports of stored results into a new result folder (``antler-ray report``)."""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path
from typing import TextIO

from antler.node.spec import parse
from antler.report.index import write_index
from antler.report.pipeline import after_of, report_output, report_outputs, run_after
from antler.report.spec import IndexSpec
from antler.results.store import Invocation, link_tree, write_meta
from antler.results.tables import load


def report(src: Path, root: Path, out: TextIO | None = None) -> Path:
    """Re-run the after reports of the result folder src into a new folder under root; it returns that folder.

    The source is never modified: its data files are hard-linked (or copied)
    into the new folder, leaving out what the after pipeline produces, which
    is then produced afresh from the stored data. Raises FormatError (before
    anything is created) when src is in a result format newer than this code.
    """
    results = load(src)  # refuses newer formats before anything is created
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
        config = next(iter(results.values())).meta.get("config", {}) if len(results) else {}
        write_index(inv.dir, parse(IndexSpec, (config or {}).get("index"), "index"))
    finally:
        final = inv.finish()
    return final
