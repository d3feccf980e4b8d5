"""The compete experiment with repetitions, run for real: six tests, their summaries, intervals and the page.

``antler-ray run -m +experiment=compete ccas=[cubic,bbr] rig.limit=100,1000
sweep.repeat=3 duration=20s``, as the README's "From runs to conclusions"
runs it; the comparison page is read back in headless Chromium.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import antler.results
from antler.cli import main
from antler.results.repetitions import bootstrap_ci
from tests.lab.browser import CHROMIUM, Browser

CHARTS = """[...document.querySelectorAll('.js-plotly-plot')].map(gd => ({
  title: gd._fullLayout.title.text,
  traces: gd._fullData.map(t => ({name: t.name, type: t.type, x: Array.from(t.x || []), y: Array.from(t.y || []),
    symbols: t.marker && t.marker.symbol ? [].concat(t.marker.symbol) : [],
    plus: t.error_y && t.error_y.visible ? Array.from(t.error_y.array) : [],
    minus: t.error_y && t.error_y.visible ? Array.from(t.error_y.arrayminus) : []})),
  errorbars: gd.querySelectorAll('g.errorbar').length,
  boxes: gd.querySelectorAll('g.trace.boxes path.box').length,
}))"""
"""CHARTS reads back every chart of a page: its traces as plotly drew them, and the error bars and boxes in its SVG."""
DRAWN = "document.querySelectorAll('.js-plotly-plot').length > 0 && [...document.querySelectorAll('.js-plotly-plot')].every(gd => gd._fullLayout && gd.querySelector('.main-svg'))"
pytestmark = [pytest.mark.slow, pytest.mark.science]
ARGS = ["-m", "+experiment=compete", "ccas=[cubic,bbr]", "rig.limit=100,1000", "sweep.repeat=3", "duration=20s"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the sweep once, in a scratch folder; return its result folder."""
    where = tmp_path_factory.mktemp("compete")
    with pytest.MonkeyPatch.context() as m:
        m.chdir(where)
        assert main(["run", *ARGS, "rig.netns_prefix=tcmp-"]) == 0
    return (where / "results" / "latest").resolve()


def test_six_tests_each_with_a_summary_whose_jain_is_its_shares(sweep: Path) -> None:
    results = antler.results.load(sweep)
    assert sorted(t.id_text for t in results.values()) == sorted(
        f"experiment=compete rig_limit={limit} rep={rep}" for limit in (100, 1000) for rep in (1, 2, 3)
    )
    for test in results.values():
        summary = pd.read_parquet(test.path / "summary.parquet").iloc[0]
        flows = pd.read_parquet(test.path / "flows.parquet").set_index("flow")
        shares = flows.loc[["f0-cubic", "f1-bbr"], "share"].to_numpy(float)
        # Jain et al. (DEC-TR-301): (sum x)^2 / (n sum x^2), here from the shares.
        assert summary["jain"] == pytest.approx(shares.sum() ** 2 / (2 * (shares**2).sum()), abs=1e-9)
        assert summary["share_cubic"] == pytest.approx(shares[0], abs=1e-9)
        assert summary["streams"] == 2 and summary["goodput_mbps"] <= 50


def test_intervals_per_buffer_contain_their_means(sweep: Path) -> None:
    for metric in ("jain", "share_bbr", "goodput_mbps"):
        iv = antler.results.intervals(sweep, metric, table="summary").set_index("rig_limit")
        assert sorted(iv.index) == [100, 1000] and (iv["n"] == 3).all()  # ID values keep their type
        assert ((iv["ci_low"] <= iv["mean"]) & (iv["mean"] <= iv["ci_high"])).all()
        values = antler.results.load(sweep).concat("summary")
        for limit, g in values.groupby("rig_limit"):
            low, high = iv.loc[limit, ["ci_low", "ci_high"]].to_numpy(float)
            assert (float(low), float(high)) == bootstrap_ci(g[metric].to_numpy(float))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps installs it)")
def test_the_page_draws_interval_bars_a_cdf_and_box_plots(sweep: Path, tmp_path: Path) -> None:
    summary = antler.results.intervals(sweep, "share_bbr", table="summary").set_index("rig_limit")
    with Browser(tmp_path / "profile") as browser:
        page = browser.open((sweep / "index.html").as_uri())
        page.wait_for(DRAWN)
        charts = {c["title"]: c for c in page.eval(CHARTS)}
        table = page.eval(
            "[...document.querySelectorAll('table.repetitions tr')].map(r => [...r.cells].map(c => c.textContent))"
        )
        errors = [line for line in page.console if not line.startswith(("verbose:", "info:", "debug:"))]
        assert errors == []
    titles = list(charts)
    shares = charts["CCA shares vs rig_limit: mean of the repetitions, 95 % interval"]
    bbr = next(t for t in shares["traces"] if t["name"] == "share_bbr")
    assert bbr["x"] == ["100", "1000"] and bbr["y"] == pytest.approx(list(summary["mean"]))
    assert bbr["plus"] == pytest.approx(list(summary["ci_high"] - summary["mean"]))
    assert shares["errorbars"] >= 2
    jain = charts["jain vs rig_limit: mean of the repetitions, 95 % interval"]
    assert jain["errorbars"] >= 1 and len(jain["traces"]) == 1
    cdf = next(c for t, c in charts.items() if t.startswith("RTT of the echo flows: CDF"))
    assert sorted(t["name"].split(" (")[0] for t in cdf["traces"]) == ["rig_limit=100", "rig_limit=1000"]
    for t in cdf["traces"]:
        assert t["y"][-1] == 1.0 and np.all(np.diff(t["y"]) > 0) and np.all(np.diff(t["x"]) >= 0)
    box = charts["goodput_mbps per flow: box of the repetitions"]
    assert {t["type"] for t in box["traces"]} == {"box"} and box["boxes"] == 4  # 2 flows x 2 buffers
    assert not any("fct_s" in t for t in titles)  # uploads of a duration have no FCT: no empty chart
    # The table across repetitions: a row per buffer, each figure as mean [low, high].
    heads, rows = table[0], {r[0]: dict(zip(table[0], r, strict=True)) for r in table[1:]}
    assert heads[:2] == ["rig_limit", "runs"] and {"jain", "share_bbr", "share_cubic"} <= set(heads)
    for limit, row in rows.items():
        s = summary.loc[int(limit)]  # the page shows the number; the table keeps its type (an int)
        assert row["runs"] == "3"
        assert row["share_bbr"] == f"{s['mean']:.4g} [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
    # The deep buffer starves one CCA, the shallow the other: the intervals of each share are far apart.
    assert "star" in bbr["symbols"]
