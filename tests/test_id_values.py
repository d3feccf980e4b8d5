"""ID values keep their type (issue 30): a rig_limit sweep of 100 and 1000 sorts as numbers everywhere.

Stored IDs are text (they name folders); ``antler.results`` gives them back
as numbers or magnitude-ordered quantities, the comparison page orders its
chart and table by magnitude, never draws against the repetition key, and
``antler-ray report DIR index.x=KEY`` redraws the page with another x.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.index import comparison_page
from antler.report.spec import IndexSpec
from antler.report.summary import x_key
from antler.results import load
from antler.results.ids import id_order, typed_id_column
from tests.lab.results import SWEEP

pytestmark = pytest.mark.no_netns

LIMITS = ("1000", "100", "20")
"""LIMITS are the swept rig_limit values, in the order their folders sort (as text, 1000 < 100 < 20)."""


def limit_sweep(result: Path, reps: int = 1) -> Path:
    """Make a result folder of a rig_limit sweep (a copy of one stored test per value and repetition)."""
    like = SWEEP / "experiment-cubic_cca-cubic_rig_rtt-10ms"
    for limit in LIMITS:
        for rep in range(1, reps + 1):
            test_id = {"experiment": "hello", "rig_limit": limit, **({"rep": str(rep)} if reps > 1 else {})}
            d = result / "_".join(f"{k}-{v}" for k, v in test_id.items())
            shutil.copytree(like, d)
            meta = json.loads((d / "meta.json").read_text())
            (d / "meta.json").write_text(json.dumps({**meta, "test_id": test_id, "path": d.name}))
    return result


def test_concat_gives_numbers_as_numbers(tmp_path: Path) -> None:
    flows = load(limit_sweep(tmp_path / "r")).concat("flows")
    assert flows["rig_limit"].dtype == "Int64"
    ordered = flows.sort_values("rig_limit")["rig_limit"].drop_duplicates().tolist()
    assert ordered == [20, 100, 1000]
    assert flows["experiment"].dtype == object  # text stays text


def test_quantities_sort_by_magnitude_keeping_their_text() -> None:
    col = typed_id_column(pd.Series(["1s", "500ms", "40ms", None]))
    assert col.dtype == "category" and col.cat.ordered
    assert col.sort_values().tolist()[:3] == ["40ms", "500ms", "1s"]
    assert id_order(["1Gbit", "50mbit", "200Mbit"]) == ["50mbit", "200Mbit", "1Gbit"]
    assert typed_id_column(pd.Series(["0.5", "2", None])).tolist()[:2] == [0.5, 2.0]


def test_the_page_orders_its_chart_and_table_by_magnitude(tmp_path: Path) -> None:
    results = load(limit_sweep(tmp_path / "r"))
    page, figs = comparison_page(results, IndexSpec())
    assert list(figs[0].layout.xaxis.categoryarray) == ["20", "100", "1000"]
    # The table's rig_limit cells sort by their value.
    assert '<td data-v="1000.0">1000</td>' in page and '<td data-v="20.0">20</td>' in page


def test_the_repetition_key_is_never_the_x() -> None:
    # rig_limit was the group, so `rep` became the x (issue 30).
    assert x_key(["rig_limit", "rep"], IndexSpec()) == "rig_limit"
    assert x_key(["rep", "rig_limit"], IndexSpec()) == "rig_limit"
    assert x_key(["rep"], IndexSpec()) == ""
    assert x_key(["rep", "rig_limit"], IndexSpec(x="rep")) == "rep"  # asked for, it is


def test_report_redraws_the_page_with_another_x(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = limit_sweep(tmp_path / "results" / "2026-01-01-000000Z")
    for d in src.iterdir():
        meta = json.loads((d / "meta.json").read_text())
        meta["test_id"] = {"cca": "cubic" if "1000" in d.name else "reno", **meta["test_id"]}
        (d / "meta.json").write_text(json.dumps(meta))
    root = tmp_path / "results"
    assert main(["report", str(src), "--root", str(root)]) == 0
    first = capsys.readouterr().out.split("reports in ")[1].strip()
    assert "goodput_mbps vs rig_limit" in (Path(first) / "index.html").read_text()
    assert main(["report", str(src), "index.x=cca", "--root", str(root)]) == 0
    again = Path(capsys.readouterr().out.split("reports in ")[1].strip())
    assert "goodput_mbps vs cca" in (again / "index.html").read_text()


def test_report_refuses_an_override_it_does_not_take(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = limit_sweep(tmp_path / "results" / "2026-01-01-000000Z")
    before = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert main(["report", str(src), "rig.limit=5", "--root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "'rig.limit=5'" in err and "index.KEY=VALUE" in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(src), "index.nope=1", "--root", str(tmp_path / "results")]) == 2
    assert "nope" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == before


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ("index.x=rep", "index.x: 'rep' numbers the repetitions, which the charts take the mean and interval over; "
         "choose one of: rig_limit"),
        ("index.group_by=rep", "index.group_by: 'rep' numbers the repetitions"),
        ("index.x=rig_rtt", "index.x: 'rig_rtt' is not an ID key that varies here; choose one of: rig_limit"),
    ],
)  # fmt: skip
def test_report_refuses_an_axis_that_is_the_repetition_or_does_not_vary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, says: str
) -> None:
    """Issue 30: `report DIR index.x=rep` ended in a KeyError traceback, after making a folder without a page."""
    src = limit_sweep(tmp_path / "results" / "2026-01-01-000000Z", reps=2)
    before = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert main(["report", str(src), override, "--root", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == before


def test_a_sweep_with_repetitions_refuses_the_repetition_as_its_axis(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["-m", "+experiment=hello", "+rep=range(1,3)", "+test.id.k=a,b", "index.x=rep"]
    for command in ("vet", "run"):
        assert main([command, *args]) == 2
        assert "index.x: 'rep' numbers the repetitions" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
