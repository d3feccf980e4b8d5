"""The notebooks run from top to bottom on stored results and print what flows.parquet holds.

They are stored without outputs; here each is executed (nbclient, a real
kernel) against the fixtures in tests/data, failing on any cell error.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

from tests.data.make_fixture import SWEEP_GOODPUT_MBPS, SWEEP_PACKETS

pytestmark = pytest.mark.no_netns

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
FIXTURE = ROOT / "tests" / "data" / "result"
SWEEP = ROOT / "tests" / "data" / "sweep"
COMPETE = ROOT / "tests" / "data" / "compete"


def execute(name: str) -> tuple[str, int]:
    """Run a notebook with the environment as set; it returns what it printed and how many images it drew."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [f"{o.ename}: {o.evalue}" for o in outputs if o.output_type == "error"]
    assert errors == []
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    return printed, images


@pytest.mark.parametrize("name", ["analysis.ipynb", "sweep.ipynb", "study.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    nb = json.loads((NOTEBOOKS / name).read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


def test_the_analysis_notebook_shows_one_test(monkeypatch: pytest.MonkeyPatch) -> None:
    key = "experiment-cubic_cca-reno_rig_rtt-40ms"
    monkeypatch.setenv("ANTLER_RESULTS", str(SWEEP))
    monkeypatch.setenv("ANTLER_TEST", key)
    printed, images = execute("analysis.ipynb")
    flows = pd.read_parquet(SWEEP / key / "flows.parquet").set_index("flow")
    tcp, udp = flows.loc["tcp"], flows.loc["udp"]
    assert f"4 test(s) in {SWEEP}; showing {key}: experiment=cubic cca=reno rig_rtt=40ms (ok)" in printed
    assert tcp["goodput_mbps"] == pytest.approx(SWEEP_GOODPUT_MBPS[("reno", "40ms")])
    assert (
        f"tcp (stream): goodput {tcp['goodput_mbps']:.3f} Mbit/s, RTT median {tcp['rtt_ms_median']:.3f} ms" in printed
    )
    assert (
        f"udp (packet): RTT median {udp['rtt_ms_median']:.3f} ms, RTT p99 {udp['rtt_ms_p99']:.3f} ms, "
        f"loss {udp['loss_pct']:.3f} %" in printed
    )
    info = pd.read_parquet(SWEEP / key / "tcp_info.parquet")
    assert f"tcp: cwnd max {info['snd_cwnd'].max()} segments" in printed
    assert images == 2  # goodput and RTT over time; cwnd and RTT from TCP_INFO


def test_the_analysis_notebook_reads_older_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first result format: no flows.parquet (the notebook analyses), many flows, no ANTLER_TEST."""
    monkeypatch.setenv("ANTLER_RESULTS", str(FIXTURE))
    monkeypatch.delenv("ANTLER_TEST", raising=False)
    printed, images = execute("analysis.ipynb")
    assert "showing cca-bbr: experiment=fixture cca=bbr (ok)" in printed
    assert "bulk (stream): goodput 30.000 Mbit/s" in printed and images == 2


def test_the_sweep_notebook_compares_every_test(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTLER_RESULTS", str(SWEEP))
    printed, images = execute("sweep.ipynb")
    assert f"4 tests in {SWEEP}, swept: cca, rig_rtt" in printed
    for (cca, rtt), goodput in SWEEP_GOODPUT_MBPS.items():
        key = f"experiment-cubic_cca-{cca}_rig_rtt-{rtt}"
        flows = pd.read_parquet(SWEEP / key / "flows.parquet").set_index("flow")
        tcp, udp = flows.loc["tcp"], flows.loc["udp"]
        assert tcp["goodput_mbps"] == pytest.approx(goodput)
        # Metrics against the swept keys, as flows.parquet holds them.
        assert f"{key} tcp (ok): goodput {goodput:.3f} Mbit/s, RTT p99 {tcp['rtt_ms_p99']:.3f} ms\n" in printed
        assert f"{key} udp (ok): RTT p99 {udp['rtt_ms_p99']:.3f} ms, loss {udp['loss_pct']:.3f} %\n" in printed
        # The RTT distribution of each test: its median and p99 are flows.parquet's.
        assert f"{key} udp: RTT median {udp['rtt_ms_median']:.3f} ms, p99 {udp['rtt_ms_p99']:.3f} ms" in printed
        # The dataset over every test's packet_io counts what each sent.
        assert f"{key} udp: {SWEEP_PACKETS} packets sent" in printed
    assert images == 2  # the three metrics against rig_rtt; the RTT distributions


def test_the_study_notebook_answers_from_the_stored_repetitions(monkeypatch: pytest.MonkeyPatch) -> None:
    import antler.results

    monkeypatch.setenv("ANTLER_RESULTS", str(COMPETE))
    printed, images = execute("study.ipynb")
    assert f"6 tests in {COMPETE}, repetitions per buffer: {{100: 3, 1000: 3}}" in printed
    for metric in ("share_cubic", "share_bbr", "jain", "induced_latency_ms"):
        iv = antler.results.intervals(COMPETE, metric, table="summary")
        for row in iv.itertuples():
            assert (
                f"rig_limit={row.rig_limit} {metric}: mean {row.mean:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] over 3 runs"
                in printed
            )
    assert "shares sum to 1 in every test: True" in printed
    share = antler.results.intervals(COMPETE, "share_bbr", table="summary").set_index("rig_limit")["mean"]
    assert f"BBR's share: {share[100]:.2f} with 100 packets, {share[1000]:.2f} with 1000" in printed
    assert "intervals overlap: False" in printed
    assert images == 2  # shares, Jain and latency with intervals; the goodput boxes
