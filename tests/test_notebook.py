"""The analysis notebook runs from top to bottom on the fixture result."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.no_netns

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "result"


def test_analysis_notebook_executes_on_a_stored_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTLER_RESULTS", str(FIXTURE))
    nb = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}}
    ).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.output_type == "error" for o in c.outputs) for c in code)
    goodput_cell = code[1]
    # The pandas plot was drawn, and the mean goodput of the bulk flows is in the table.
    assert any("image/png" in o.get("data", {}) for o in goodput_cell.outputs)
    text = "".join(o.get("data", {}).get("text/plain", "") for o in goodput_cell.outputs)
    assert "20.0" in text and "30.0" in text
    flows = "".join(o.get("data", {}).get("text/plain", "") for o in code[2].outputs)
    assert "udp" in flows and "packet" in flows
