"""Seeded workload resolvers: the same seed gives the same test, the numbers have the asked shape."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from antler.config.compose import compose_jobs
from antler.config.resolvers import each, exponential, lognormal
from antler.node.metric import Duration


def test_lognormal_has_the_asked_percentiles() -> None:
    xs = np.array(lognormal(7, 20000, "64K", "2M"))
    assert np.percentile(xs, 5) == pytest.approx(64_000, rel=0.08)
    assert np.percentile(xs, 95) == pytest.approx(2_000_000, rel=0.08)


def test_exponential_has_the_asked_mean_and_shape() -> None:
    waits = [Duration.parse(w).seconds for w in exponential(3, 20000, "250ms")]
    assert statistics.fmean(waits) == pytest.approx(0.25, rel=0.05)
    # memoryless: the standard deviation of an exponential equals its mean
    assert statistics.pstdev(waits) == pytest.approx(0.25, rel=0.08)


def test_same_seed_same_draws_other_seed_other_draws() -> None:
    assert lognormal(1, 5, "64K", "2M") == lognormal(1, 5, "64K", "2M")
    assert lognormal(1, 5, "64K", "2M") != lognormal(2, 5, "64K", "2M")


def test_each_fills_a_template_per_position() -> None:
    runs = each({"sleep": "{w}", "id": "f{i}-{cca}"}, {"w": ["1ms", "2ms"], "cca": ["cubic", "bbr"]})
    assert runs == [{"sleep": "1ms", "id": "f0-cubic"}, {"sleep": "2ms", "id": "f1-bbr"}]


def test_an_experiment_with_a_seed_is_repeatable_and_the_seed_changes_it(tmp_path: Path) -> None:
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "rnd.yaml").write_text(
        "# @package _global_\nseed: 1\nn: 5\n"
        "test:\n  id: {experiment: rnd}\n  run:\n    schedule:\n      wait: ${exponential:${seed},${n},10ms}\n"
        "      run: \"${each:{sleep: '{w}'},{w: ${uniform:${seed},${n},1ms,5ms}}}\"\n"
    )
    a = compose_jobs(["+experiment=rnd"], config_dir=str(tmp_path))[0].test.run
    b = compose_jobs(["+experiment=rnd"], config_dir=str(tmp_path))[0].test.run
    c = compose_jobs(["+experiment=rnd", "seed=2"], config_dir=str(tmp_path))[0].test.run
    assert a == b and a != c
    assert a.schedule is not None and len(a.schedule.run) == 5
