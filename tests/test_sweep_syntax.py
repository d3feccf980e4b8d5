"""Sweeps as Hydra writes them (issue 30): every sweep of Hydra's grammar runs or is refused in one line.

``range`` and ``glob`` ended in an AssertionError traceback; a key missing
from the config got Hydra's "Could not override" without the ``+`` hint;
the ``each`` resolver refused a list interpolated from the config.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from antler.cli import main
from antler.config import resolvers
from antler.config.compose import compose_jobs, expand, packaged_conf_dir
from antler.node.spec import ConfigError

pytestmark = pytest.mark.no_netns


def swept(overrides: list[str]) -> list[dict[str, str]]:
    return [s for _, s in expand(overrides, multirun=True)]


def test_range_and_choice_sweeps_expand_like_a_list() -> None:
    assert swept(["+rep=range(1,4)"]) == [{"+rep": "1"}, {"+rep": "2"}, {"+rep": "3"}]
    assert swept(["a=range(0,10,5)"]) == [{"a": "0"}, {"a": "5"}]
    assert swept(["a=choice(x,y)"]) == swept(["a=x,y"]) == [{"a": "x"}, {"a": "y"}]
    assert swept(["a=sort(3,1,2)"]) == [{"a": "1"}, {"a": "2"}, {"a": "3"}]
    # A shuffled sweep keeps each spelling with its value.
    for overrides, values in expand(["a=shuffle(1,2,3)"], multirun=True):
        assert overrides == [f"a={values['a']}"]


def test_a_range_sweep_makes_one_test_per_value(tmp_path: Path) -> None:
    jobs = compose_jobs(["+experiment=cubic", "+rep=range(1,4)", "rig.limit=100,1000"], multirun=True)
    ids = [(j.test.id["rep"], j.test.id["rig_limit"]) for j in jobs]
    assert ids == [("1", "100"), ("1", "1000"), ("2", "100"), ("2", "1000"), ("3", "100"), ("3", "1000")]


def test_a_glob_sweeps_the_configs_of_a_group() -> None:
    jobs = compose_jobs(["+experiment=glob(tcp*)"], multirun=True)
    shipped = sorted(p.stem for p in (packaged_conf_dir() / "experiment").glob("tcp*.yaml"))
    assert len(shipped) >= 2 and "tcpstream" in shipped
    assert [j.test.id["experiment"] for j in jobs] == shipped
    with pytest.raises(ConfigError, match="matches no config of the group 'experiment'"):
        compose_jobs(["+experiment=glob(nothing*)"], multirun=True)


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("+rep=interval(0,1)", "interval(...) is a continuous range, not a list of tests"),
        ("rep=1,2", "'rep' is not in the config: add it with a +, as +rep=1"),
        ("rep=3", "'rep' is not in the config: add it with a +, as +rep=3"),
    ],
)
def test_a_sweep_or_key_it_cannot_take_is_one_line_exit_2(
    override: str, said: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["vet", "-m", "+experiment=hello", override, f"results.root_dir={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert said in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []


def test_each_takes_a_list_interpolated_from_the_config() -> None:
    resolvers.register()
    cfg = OmegaConf.create(
        {
            "trace": {"rates": ["10mbit", "20mbit"]},
            "inline": "${each:{r: '{rate}'},{rate: [10mbit, 20mbit]}}",
            "from_config": "${each:{r: '{rate}'},{rate: ${trace.rates}}}",
        }
    )
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict) and plain["from_config"] == [{"r": "10mbit"}, {"r": "20mbit"}]
    assert cfg.from_config == cfg.inline
