"""Run.flows: the one list of the flows a run tree drives, which the config, the analysis and the executor read."""

from __future__ import annotations

from antler.config.test import TestSpec as Spec, parse_run
from antler.report.analyze.outcomes import named_flows

TREE = {
    "serial": [
        {"stream_client": {"addr": "10.77.0.2:7777", "upload": {"flow": "up"}}},
        {
            "child": {
                "node": {"id": "far"},
                "parallel": [
                    {"packet_client": {"addr": "10.77.0.2:7778", "flow": "echo", "sender": [{"unresponsive": {}}]}},
                    {"stream_client": {"addr": "10.77.0.2:7777", "download": {"flow": "down"}}},
                    {"sleep": "1ms"},
                ],
            }
        },
        {"schedule": {"run": [{"stream_client": {"addr": "10.77.0.2:7777", "upload": {"flow": "up"}}}]}},
    ]
}


def test_flows_names_every_client_flow_once_with_its_kind_sorted_through_children_and_schedules() -> None:
    run = parse_run(TREE)
    assert list(run.flows().items()) == [("down", "stream"), ("echo", "packet"), ("up", "stream")]
    assert run.flows("packet") == {"echo": "packet"}
    assert parse_run({"sleep": "1ms"}).flows() == {}


def test_the_config_and_the_analysis_list_the_trees_flows() -> None:
    test = Spec(id={"t": "1"}, run=parse_run(TREE))
    assert test.flows() == ["down", "echo", "up"]
    assert test.flows("stream") == ["down", "up"]
    assert named_flows({"test": {"run": TREE}}) == {"down": "stream", "echo": "packet", "up": "stream"}
    assert named_flows({"test": {"run": {"serial": "not a list of runs"}}}) == {}
