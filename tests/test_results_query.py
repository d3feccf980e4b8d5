"""antler.results.dataset and concat across a sweep: every test's table, the ID keys as columns, read in place."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

import antler.results
from antler.report.encode import encode
from antler.results import load
from tests.data.make_fixture import SWEEP_GOODPUT_MBPS, SWEEP_LOST, SWEEP_PACKETS

pytestmark = pytest.mark.no_netns

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "tests" / "data" / "sweep"


def stored_flows() -> pd.DataFrame:
    """Return every test's flows.parquet, read file by file, with its folder as ``test``."""
    frames = [pd.read_parquet(f).assign(test=f.parent.name) for f in sorted(SWEEP.glob("*/flows.parquet"))]
    return pd.concat(frames, ignore_index=True)


def test_dataset_has_every_test_with_its_id_keys_as_columns() -> None:
    flows = antler.results.dataset(SWEEP, "flows")
    names = flows.schema.names
    assert names[0] == "test" and names[-3:] == ["experiment", "id_cca", "rig_rtt"]
    table = flows.to_table().to_pandas()
    assert len(table) == 8 and set(table["test"]) == {p.parent.name for p in SWEEP.glob("*/meta.json")}
    # The test's cca beside each flow's own (the udp flow has none).
    assert (table["id_cca"] == table["test"].str.extract(r"cca-([a-z]+)_")[0]).all()
    assert set(table.loc[table["flow"] == "udp", "cca"]) == {""}
    merged = table.merge(stored_flows(), on=["test", "flow"], suffixes=("", "_stored"))
    assert len(merged) == 8
    for col in ("goodput_mbps", "rtt_ms_p99", "loss_pct"):
        pd.testing.assert_series_equal(merged[col], merged[f"{col}_stored"], check_names=False)
    # A filter on an ID key reads only that test's file.
    (fragment,) = flows.get_fragments(filter=(ds.field("id_cca") == "reno") & (ds.field("rig_rtt") == "40ms"))
    assert Path(fragment.path).parent.name == "experiment-cubic_cca-reno_rig_rtt-40ms"


def test_duckdb_queries_a_raw_table_of_the_sweep() -> None:
    packets = antler.results.dataset(SWEEP, "packet_io")
    con = duckdb.connect()
    con.register("packets", packets)  # what duckdb.sql's replacement scan does with a local name
    rows = con.execute(
        "SELECT cca, rig_rtt, count(DISTINCT seq) FROM packets"
        " WHERE flow = 'udp' AND server AND NOT sent GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert rows == [(cca, rtt, SWEEP_PACKETS - len(lost)) for (cca, rtt), lost in sorted(SWEEP_LOST.items())]


def test_the_readme_duckdb_query_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "antler.results.dataset" in b]
    assert len(block.strip().splitlines()) == 3
    shutil.copytree(SWEEP, tmp_path / "results" / "2026-01-01-000000Z")
    (tmp_path / "results" / "latest").symlink_to("2026-01-01-000000Z")
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(block, {})
    for (cca, rtt), goodput in SWEEP_GOODPUT_MBPS.items():
        assert re.search(rf"│ {cca}\s+│ {rtt}\s+│ tcp\s+│\s+{goodput}\s+│", out.getvalue()), out.getvalue()


def test_tables_stored_compressed_are_in_the_dataset_too(tmp_path: Path) -> None:
    result = shutil.copytree(SWEEP, tmp_path / "result")
    test = result / "experiment-cubic_cca-cubic_rig_rtt-40ms"
    encode(test, ("packet_io.parquet",), ".zst", None, destructive=True)
    assert not (test / "packet_io.parquet").exists()
    packets = antler.results.dataset(result, "packet_io")
    counts = packets.to_table(columns=["test"]).group_by("test").aggregate([("test", "count")]).to_pydict()
    by_test = dict(zip(counts["test"], counts["test_count"], strict=True))
    assert by_test[test.name] == len(load(test)["."]["packet_io"]) and len(by_test) == 4


def test_concat_names_a_taken_id_key_id_key_and_skips_tests_without_the_table(tmp_path: Path) -> None:
    result = shutil.copytree(SWEEP, tmp_path / "result")
    (result / "experiment-cubic_cca-reno_rig_rtt-10ms" / "flows.parquet").unlink()  # e.g. interrupted
    flows = load(result).concat("flows")
    assert list(flows.columns[:2]) == ["test", "flow"]
    assert list(flows.columns[-3:]) == ["experiment", "id_cca", "rig_rtt"]
    assert len(flows) == 6 and set(flows.loc[flows["flow"] == "udp", "id_cca"]) == {"cubic", "reno"}
    with pytest.raises(KeyError, match=r"no test in .* has a nosuch table"):
        load(result).concat("nosuch")
    with pytest.raises(KeyError, match=r"no test in .* has a nosuch table"):
        antler.results.dataset(result, "nosuch")


def test_dataset_is_the_function_even_after_its_module_is_imported() -> None:
    import antler.results.query

    assert antler.results.dataset is antler.results.query.dataset and callable(antler.results.dataset)
