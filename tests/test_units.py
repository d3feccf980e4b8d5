"""Every quantity the config takes follows one rule: a value that reads two ways is refused, naming its key.

Lowercase ``b`` is a bit and capital ``B`` a byte, in amounts and rates; a
probability is below 1 or a percentage. Values an experiment hands to another
tool (tc, iperf3) reach it in that tool's own unambiguous spelling.
"""

from __future__ import annotations

import json

import pytest

from antler.config.compose import compose_jobs
from antler.node.spec import ConfigError, to_plain
from antler.rig import dumbbell


def _commands(test: object) -> list[str]:
    out: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "command" in node and isinstance(node["command"], str):
                out.append(node["command"])
            if "args" in node and isinstance(node["args"], list):
                out.append(" ".join(str(a) for a in node["args"]))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(to_plain(test))
    return out


@pytest.mark.parametrize(("rate", "shaped"), [("50MB/s", "400000000bit"), ("50MBps", "400000000bit"),
                                              ("50Mbps", "50000000bit"), ("50mbit", "50000000bit")])  # fmt: skip
def test_rig_rate_in_bytes_per_second_shapes_at_eight_times_the_bits(rate: str, shaped: str) -> None:
    (job,) = compose_jobs(["+experiment=rigcheck", f"rig.rate={rate}"])
    assert any(f"htb rate {shaped} ceil {shaped}" in c for c in _commands(job.test))


@pytest.mark.parametrize(("override", "key", "says"), [
    ("rig.rate=50MB", "rig.rate", "amount of data, not a rate"),
    ("rig.rate=50MBPS", "rig.rate", "reads two ways"),
    ("rig.loss=1", "rig.loss", "100% for certain, or 1% for one in a hundred"),
    ("rig.loss=5", "rig.loss", "5%"),
])  # fmt: skip
def test_a_rig_value_that_reads_two_ways_is_refused_naming_its_key(override: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        compose_jobs(["+experiment=rigcheck", override])
    assert e.value.path == key
    assert says in str(e.value)
    assert "50MB/s" in str(e.value) or "%" in str(e.value), "the message shows the spellings that work"


def test_rig_loss_as_a_percentage_reaches_the_emulators_as_one() -> None:
    rig = dumbbell.params({"loss": "100%", "emulator": "tun"})
    assert rig.loss_probability == 1.0
    assert rig.loss.p == 1.0
    assert dumbbell.params({"loss": 0.5}).loss_probability == 0.5


@pytest.mark.parametrize(("low_rate", "tc"), [("10mbit", "10000000bit"), ("10Mbps", "10000000bit"),
                                              ("1.25MB/s", "10000000bit"), ("10MBps", "80000000bit")])  # fmt: skip
def test_ratedrop_hands_tc_bits_per_second_whatever_the_spelling(low_rate: str, tc: str) -> None:
    (job,) = compose_jobs(["+experiment=ratedrop", f"low_rate={low_rate}"])
    (run,) = [c for c in _commands(job.test) if "antler.rig.schedule_run run" in c]
    plan = json.loads(run.split(" --plan ", 1)[1])
    drop, back = (a["changes"] for a in plan)
    # Both directions' bottlenecks change, each on its own egress.
    assert [c["tc"][0].split()[3] for c in drop] == ["m-right", "m-left"]
    assert all(f"htb rate {tc} ceil {tc} " in c["tc"][0] for c in drop)
    assert all("htb rate 50000000bit ceil 50000000bit " in c["tc"][0] for c in back)


def test_ratedrop_refuses_an_amount_as_its_rate_naming_the_schedule_step() -> None:
    # low_rate lands in the rig's schedule: the step that takes it is named.
    with pytest.raises(ConfigError) as e:
        compose_jobs(["+experiment=ratedrop", "low_rate=10MB"])
    assert e.value.path == "rig.schedule[0].rate"
    assert "amount of data, not a rate" in str(e.value)


def test_iperf3_gets_whole_seconds_from_a_duration() -> None:
    (job,) = compose_jobs(["+experiment=iperf3", "duration=2m"])
    assert any(" -t 120 " in c for c in _commands(job.test))
    for bad, says in (("duration=10", "no unit"), ("duration=1.5s", "not a whole number of seconds")):
        with pytest.raises(ConfigError, match=says) as e:
            compose_jobs(["+experiment=iperf3", bad])
        assert e.value.path == "duration"


def test_a_flow_length_refuses_a_rate() -> None:
    with pytest.raises(ConfigError, match="is a rate, not an amount") as e:
        compose_jobs(["+experiment=fct", "fct.lengths=${lognormal:1,3,64K,2MB/s}"])
    assert e.value.path == "fct.lengths"
