"""The queue in view without traffic: rig.ecn's checks and steps, qdisc samples as rows, queue rows matched to flows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from antler.cli import main
from antler.report.analyze.queue import flow_keys, matched
from antler.rig import dumbbell
from antler.rig.kernel import tcp_ecn_accepts
from antler.rig.qdisc_stats import rows, stop, table


def commands(runs: object) -> list[str]:
    """Return every system command of run-tree data, in order."""
    if isinstance(runs, dict):
        s = runs.get("system")
        if isinstance(s, dict):
            return [" ".join([s.get("command") or "", *s.get("args", [])]).strip()]
        return [c for v in runs.values() for c in commands(v)]
    if isinstance(runs, list):
        return [c for v in runs for c in commands(v)]
    return []


def test_rig_ecn_on_sets_tcp_ecn_in_both_ends_and_off_leaves_the_kernels_default() -> None:
    on = commands(dumbbell.setup_runs({"ecn": "on"}))
    assert on.count("sysctl -w net.ipv4.tcp_ecn=1") == 2  # left and right, never mid
    assert not [c for c in commands(dumbbell.setup_runs({})) if "tcp_ecn" in c]
    assert dumbbell.facts({"ecn": "on"})["ecn"] == "on"


@pytest.mark.parametrize(
    ("value", "message"),
    [("maybe", "rig.ecn: 'maybe' must be off, on or accecn"), ("accecn", "rig.ecn 'accecn': this kernel")],
)
def test_a_bad_rig_ecn_is_a_config_error(
    value: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if value == "accecn" and tcp_ecn_accepts(3):
        pytest.skip("this kernel has AccECN")
    monkeypatch.chdir(tmp_path)
    assert main(["vet", "+experiment=aqm", f"rig.ecn={value}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_the_kernel_bottleneck_is_sampled_from_set_up_to_tear_down() -> None:
    data = {"bottleneck": "kernel", "qdisc_interval": "50ms"}
    setup = commands(dumbbell.setup_runs(data))
    (record,) = [c for c in setup if "antler.rig.qdisc_stats record" in c]
    assert record.split()[-4:] == ["m-right", record.split()[-3], "--interval", "50ms"]
    # After the shaper is built; the samples go to qdisc.parquet after tc -s logs the counters.
    assert setup.index(record) > max(i for i, c in enumerate(setup) if c.startswith("tc qdisc add"))
    down = commands(dumbbell.teardown_runs(data))
    stop_at = next(i for i, c in enumerate(down) if "qdisc_stats stop" in c)
    assert down[0].startswith("tc -s qdisc show") and stop_at < next(i for i, c in enumerate(down) if "parquet" in c)
    assert not [c for c in commands(dumbbell.setup_runs({"bottleneck": "userspace"})) if "qdisc_stats" in c]


FQ_CODEL_SAMPLE = [
    {"kind": "htb", "handle": "1:", "root": True, "refcnt": 2, "options": {"r2q": 10}, "bytes": 9000,
     "packets": 6, "drops": 0, "overlimits": 4, "requeues": 0, "backlog": 0, "qlen": 0},
    {"kind": "fq_codel", "handle": "10:", "parent": "1:1", "options": {"limit": 10240}, "bytes": 9000,
     "packets": 6, "drops": 2, "overlimits": 0, "requeues": 1, "backlog": 3028, "qlen": 2, "maxpacket": 1514,
     "drop_overlimit": 0, "new_flow_count": 3, "ecn_mark": 5, "new_flows_len": 1, "old_flows_len": 0},
]  # fmt: skip
"""FQ_CODEL_SAMPLE is `tc -s -j qdisc show` of htb with fq_codel under it, as iproute2 prints it."""


def test_a_tc_sample_becomes_one_row_per_qdisc_with_its_extra_statistics(tmp_path: Path) -> None:
    htb, fq = rows(FQ_CODEL_SAMPLE, 123)
    assert (htb["parent"], htb["handle"], htb["overlimits"], htb["ecn_marks"], htb["xstats"]) == (
        "root",
        "1:",
        4,
        None,
        None,
    )
    assert (fq["kind"], fq["parent"], fq["drops"], fq["requeues"]) == ("fq_codel", "1:1", 2, 1)
    assert (fq["backlog_bytes"], fq["backlog_packets"], fq["ecn_marks"], fq["t_ns"]) == (3028, 2, 5, 123)
    assert json.loads(fq["xstats"])["new_flow_count"] == 3
    file = tmp_path / "q.jsonl"
    file.write_text("".join(json.dumps(r) + "\n" for r in (htb, fq)))
    t = table(str(file)).to_pandas()
    assert list(t["handle"]) == ["1:", "10:"] and t["ecn_marks"].isna().tolist() == [True, False]
    assert not stop(str(file), 0.1)  # no recorder: nothing to stop


def test_queue_rows_belong_to_the_flow_whose_client_has_their_five_tuple() -> None:
    stream_info = pd.DataFrame(
        {"flow": ["tcp", "tcp"], "server": [False, True], "local": ["10.77.1.1:40000", "10.77.2.2:7777"],
         "remote": ["10.77.2.2:7777", "10.77.1.1:40000"]}
    )  # fmt: skip
    packet_info = pd.DataFrame(
        {
            "flow": ["udp", "udp"],
            "server": [False, True],
            "local": ["0.0.0.0:50000", ""],
            "remote": ["10.77.2.2:7778", ""],
        }
    )
    keys = flow_keys(stream_info, packet_info)
    assert keys == {(6, 40000, "10.77.2.2", 7777): "tcp", (17, 50000, "10.77.2.2", 7778): "udp"}
    queue = pd.DataFrame(
        {"protocol": [6, 6, 17, 17, 1, 6],
         "src": ["10.77.1.1", "10.77.2.2", "10.77.1.1", "10.77.1.1", "10.77.1.1", "10.77.1.1"],
         "dst": ["10.77.2.2", "10.77.1.1", "10.77.2.2", "10.77.2.2", "10.77.2.2", "10.77.2.2"],
         "sport": [40000, 7777, 50000, 50001, None, 40001],
         "dport": [7777, 40000, 7778, 7778, None, 7777]}
    )  # fmt: skip
    assert matched(queue, keys).tolist() == ["tcp", "tcp", "udp", None, None, None]
