"""Statistics across repetitions (antler.results.intervals) on small synthetic result folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import antler.results
from antler.cli import main
from antler.config.compose import Job, compose_jobs
from antler.node.spec import ConfigError
from antler.results.repetitions import bootstrap_ci
from tests.lab.repetitions import write_reps

pytestmark = pytest.mark.no_netns


def test_bootstrap_of_two_values_is_their_range() -> None:
    """Resampling [0, 1] gives means 0, 1/2, 1 with odds 1/4, 1/2, 1/4: the 2.5 % and 97.5 % points are 0 and 1."""
    assert bootstrap_ci([0.0, 1.0], resamples=20_000, seed=3) == (0.0, 1.0)


def test_bootstrap_is_seeded_and_follows_the_percentile_method() -> None:
    x = np.random.default_rng(11).normal(10, 2, 30)
    lo, hi = bootstrap_ci(x, seed=5)
    assert (lo, hi) == bootstrap_ci(x, seed=5)
    # The percentile method by hand (Efron & Tibshirani 1993, 13.3), with the same generator.
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 30, size=(10_000, 30))
    by_hand = np.quantile(x[idx].mean(axis=1), [0.025, 0.975])
    assert (lo, hi) == pytest.approx(tuple(by_hand), abs=1e-12)
    # Close to the normal interval of the mean: mean +- 1.96 s / sqrt(n) (population s).
    half = 1.96 * x.std() / np.sqrt(30)
    assert lo == pytest.approx(x.mean() - half, abs=0.15) and hi == pytest.approx(x.mean() + half, abs=0.15)
    assert bootstrap_ci([4.0, 4.0, 4.0]) == (4.0, 4.0)
    assert all(np.isnan(v) for v in bootstrap_ci([np.nan]))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.5)


def test_intervals_per_combination_leave_rep_out(tmp_path: Path) -> None:
    root = write_reps(tmp_path)
    iv = antler.results.intervals(root, "goodput_mbps")
    assert list(iv.columns) == ["id_cca", "flow", "n", "mean", "median", "ci_low", "ci_high"]
    tcp = iv[iv["flow"] == "tcp"].set_index("id_cca")
    assert tcp.loc["cubic", "n"] == 3 and tcp.loc["cubic", "mean"] == pytest.approx(42.0)
    assert tcp.loc["cubic", "median"] == 42.0 and tcp.loc["bbr", "mean"] == pytest.approx(72.0)
    low, high = tcp.loc["cubic", ["ci_low", "ci_high"]].to_numpy(float)
    assert low <= 42.0 <= high
    assert (float(low), float(high)) == bootstrap_ci([40.0, 44.0, 42.0])
    assert iv[iv["flow"] == "udp"]["n"].eq(0).all()
    s = antler.results.intervals(root, "jain", table="summary").set_index("cca")
    assert s.loc["bbr", "mean"] == pytest.approx(1 - 0.072) and s.loc["bbr", "n"] == 2
    with pytest.raises(KeyError, match="no column 'jian'"):
        antler.results.intervals(root, "jian", table="summary")


def _jobs(*overrides: str) -> list[Job]:
    return compose_jobs(["+experiment=fct", "flows=4", *overrides], multirun=True)


def test_repeat_adds_the_rep_key_and_draws_anew_per_repetition_repeatably() -> None:
    plain = _jobs()
    jobs = _jobs("sweep.repeat=3")
    assert [j.test.id for j in jobs] == [{"experiment": "fct", "rep": str(k)} for k in (1, 2, 3)]
    lengths = [j.config["fct"]["lengths"] for j in jobs]
    assert lengths[0] == plain[0].config["fct"]["lengths"]  # rep 1 draws what a run without repeat does
    assert len({tuple(x) for x in lengths}) == 3  # each repetition its own draw
    assert [j.config["fct"]["lengths"] for j in _jobs("sweep.repeat=3")] == lengths  # and the same again
    assert [j.config["fct"]["waits"] for j in jobs][1] != plain[0].config["fct"]["waits"]


def test_shuffle_is_a_seeded_permutation() -> None:
    ordered = [j.test.id_text() for j in _jobs("sweep.repeat=3", "rig.rtt=10ms,20ms")]
    shuffled = [j.test.id_text() for j in _jobs("sweep.repeat=3", "rig.rtt=10ms,20ms", "sweep.shuffle=true")]
    again = [j.test.id_text() for j in _jobs("sweep.repeat=3", "rig.rtt=10ms,20ms", "sweep.shuffle=true")]
    other = [
        j.test.id_text() for j in _jobs("sweep.repeat=3", "rig.rtt=10ms,20ms", "sweep.shuffle=true", "sweep.seed=7")
    ]
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered
    assert again == shuffled and other != shuffled


@pytest.mark.parametrize(
    ("override", "path"),
    [("sweep.repeat=0", "sweep.repeat"), ("sweep.shuffle=3", "sweep.shuffle"), ("sweep.seed=-1", "sweep.seed")],
)
def test_bad_repeat_settings_are_refused(override: str, path: str) -> None:
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        _jobs(override)


def test_repeat_runs_record_order_and_raising_repeat_runs_only_the_new_reps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "+experiment=hello", "sweep.repeat=3", "sweep.shuffle=true"]) == 0
    first = antler.results.load(tmp_path / "results" / "latest")
    order = {t.id["rep"]: t.meta["order"] for t in first.values()}
    assert sorted(order) == ["1", "2", "3"] and sorted(order.values()) == [1, 2, 3]
    capsys.readouterr()
    assert main(["run", "+experiment=hello", "sweep.repeat=5", "sweep.shuffle=true"]) == 0
    out = capsys.readouterr().out
    for rep in (1, 2, 3):
        assert f"link experiment=hello rep={rep}: passed" in out
    for rep in (4, 5):
        assert f"run  experiment=hello rep={rep}: new" in out
    assert len(antler.results.load(tmp_path / "results" / "latest")) == 5
