"""The comparison page's charts across repetitions, on a small synthetic folder (antler.report.repeated)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from antler.report.index import comparison_page
from antler.report.repeated import overlaps, repeated_figures
from antler.report.spec import IndexSpec
from antler.report.summary import varying_keys
from antler.results import intervals, load
from tests.lab.repetitions import GOODPUT, write_reps

pytestmark = pytest.mark.no_netns


def test_overlap_of_closed_intervals() -> None:
    assert overlaps((1.0, 2.0), (2.0, 3.0)) and overlaps((1.0, 4.0), (2.0, 3.0))
    assert not overlaps((1.0, 2.0), (2.5, 3.0)) and not overlaps((2.5, 3.0), (1.0, 2.0))
    assert overlaps((float("nan"), float("nan")), (5.0, 6.0))  # no interval: no claim of a difference


def test_figures_draw_means_with_intervals_boxes_and_mark_what_differs(tmp_path: Path) -> None:
    root = write_reps(tmp_path / "reps")
    for test in root.iterdir():
        flows = pd.read_parquet(test / "flows.parquet")
        flows["fct_s"] = [GOODPUT[(test.name.split("_")[0][4:], test.name[-1])] / 10, float("nan")]
        flows.to_parquet(test / "flows.parquet")
    results = load(root)
    keys = varying_keys(results)
    assert keys == ["cca", "rep"]
    figs, notes = repeated_figures(results, IndexSpec(compare=("goodput_mbps",)), keys)
    titles = [f.layout.title.text for f in figs]
    assert titles == [
        "goodput_mbps vs cca: mean of the repetitions, 95 % interval",
        "jain vs cca: mean of the repetitions, 95 % interval",
        "goodput_mbps per flow: box of the repetitions",
        "fct_s per flow: box of the repetitions",
    ]  # no echo packets stored: no CDF
    (line,) = figs[0].data
    iv = intervals(results, "goodput_mbps").dropna(subset=["mean"]).set_index("id_cca")
    assert list(line.x) == ["bbr", "cubic"] and list(line.y) == pytest.approx(list(iv["mean"]))
    assert list(line.error_y.array) == pytest.approx(list(iv["ci_high"] - iv["mean"]))
    assert list(line.error_y.arrayminus) == pytest.approx(list(iv["mean"] - iv["ci_low"]))
    # cubic's [40, 44] and bbr's [70, 74]: far apart, so both are stars and a note says so.
    assert list(line.marker.symbol) == ["star", "star"]
    assert any(n.startswith("goodput_mbps, tcp: cca=bbr and cubic differ beyond their 95 % intervals") for n in notes)
    box = figs[3].data
    assert [t.type for t in box] == ["box"] and sorted(box[0].y) == sorted(v / 10 for v in GOODPUT.values())
    page, _ = comparison_page(results, IndexSpec(compare=("goodput_mbps",)))
    assert "Across repetitions" in page and "<td>cubic</td><td>3</td>" in page
