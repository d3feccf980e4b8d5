"""The commands around stored results: report, results, log, remove, server; format versions; index."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from threading import Thread

import pandas as pd
import pytest

from antler.cli import main
from antler.node.spec import ConfigError, parse
from antler.report.index import index_html
from antler.report.spec import IndexSpec
from antler.results import load
from antler.results.server import make_server
from antler.results.store import LATEST, write_meta
from antler.results.tables import FormatError

pytestmark = pytest.mark.no_netns

FIXTURE = Path(__file__).parent / "data" / "result"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Return a results root holding two copies of the fixture, the newer one latest."""
    r = tmp_path / "results"
    r.mkdir()
    for name in ("2026-01-01-000000Z", "2026-01-02-000000Z"):
        shutil.copytree(FIXTURE, r / name)
    (r / LATEST).symlink_to("2026-01-02-000000Z")
    return r


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_report_writes_a_new_folder_and_never_touches_the_source(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = root / "2026-01-01-000000Z"
    before = snapshot(src)
    assert main(["report", str(src), "--root", str(root)]) == 0
    assert snapshot(src) == before
    new = root / os.readlink(root / LATEST)
    assert new.name not in ("2026-01-01-000000Z", "2026-01-02-000000Z")
    for name in ("flows.parquet", "timeseries.html", "timeseries.png", "fct.html", "log.txt", "sysinfo_-.html"):
        assert (new / "cca-cubic" / name).exists(), name
    assert (new / "index.html").exists()
    assert (new / "cca-cubic" / "capture.pcap.zst").exists() and not (new / "cca-cubic" / "capture.pcap").exists()
    assert (src / "cca-cubic" / "capture.pcap").exists()
    meta = json.loads((new / "cca-cubic" / "meta.json").read_text())
    assert meta["reported_from"].endswith("cca-cubic")
    flows = pd.read_parquet(new / "cca-bbr" / "flows.parquet").set_index("flow")
    assert flows.loc["bulk", "goodput_mbps"] == pytest.approx(30.0, rel=0.01)
    # Reporting the reported folder again works too (its outputs are regenerated, not copied).
    assert main(["report", "--root", str(root)]) == 0


def test_report_honours_the_tests_after_config(root: Path) -> None:
    src = root / "2026-01-01-000000Z"
    meta_path = src / "cca-cubic" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["test"]["after"] = {
        "default": [{"analyze": {}}],
        "report": [{"charts_time_series": {"to": ["bulk.html"], "flow_label": {"bulk": "the bulk flow"}}}],
    }
    meta_path.write_text(json.dumps(meta))
    assert main(["report", str(src), "--root", str(root)]) == 0
    new = root / os.readlink(root / LATEST) / "cca-cubic"
    assert (new / "bulk.html").exists() and not (new / "timeseries.html").exists()
    assert "the bulk flow" in (new / "bulk.html").read_text()


def test_results_lists_folders_and_tests(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "2026-01-01-000000Z\n" in out and "2026-01-02-000000Z  (latest)" in out
    assert out.count("cca-cubic  experiment=fixture cca=cubic  ok") == 2


def test_log_prints_entries_sorted_by_time(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["log", str(root / "2026-01-01-000000Z" / "cca-bbr")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "- system: setting up bbr at 30 Mbit/s",
        "- packet: udp: halfway",
        "- stream: bulk: done",
    ]
    assert main(["log", "--root", str(root)]) == 0  # latest, both tests
    out = capsys.readouterr().out
    assert "# cca-cubic" in out and "# cca-bbr" in out


def test_remove_dry_run_then_remove_repoints_latest(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["remove", "-n", "2026-01-02-000000Z", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "would remove" in out and "would point" in out
    assert (root / "2026-01-02-000000Z").exists() and os.readlink(root / LATEST) == "2026-01-02-000000Z"
    assert main(["remove", "2026-01-02-000000Z", "--root", str(root)]) == 0
    assert not (root / "2026-01-02-000000Z").exists()
    assert os.readlink(root / LATEST) == "2026-01-01-000000Z"
    assert main(["remove", "2026-01-01-000000Z", "--root", str(root)]) == 0
    assert not (root / LATEST).is_symlink()
    assert main(["remove", "../etc", "--root", str(root)]) == 2
    assert main(["remove", "nonesuch", "--root", str(root)]) == 2


def test_server_serves_results_on_loopback(root: Path) -> None:
    server = make_server(root, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    assert host == "127.0.0.1"
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{port}/latest/cca-cubic/log.txt"
        with urllib.request.urlopen(url, timeout=10) as r:
            assert b"setting up cubic" in r.read()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_newer_format_is_refused_and_older_upgraded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = tmp_path / "new"
    shutil.copytree(FIXTURE / "cca-cubic", new)
    meta = json.loads((new / "meta.json").read_text())
    (new / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(FormatError, match="format 99 is newer than this antler-ray understands"):
        load(new)
    assert main(["report", str(new), "--root", str(tmp_path / "r")]) == 2
    assert "newer than this antler-ray understands" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # refused before creating anything

    old = tmp_path / "old"
    shutil.copytree(FIXTURE / "cca-cubic", old)
    meta.pop("test_id")
    (old / "meta.json").write_text(json.dumps({**meta, "format_version": 0, "id": {"cca": "cubic"}}))
    test = load(old)["."]
    assert test.id == {"cca": "cubic"} and test.meta["format_version"] == 2


def test_encoded_tables_load_like_plain_ones(tmp_path: Path) -> None:
    from antler.report.encode import encode

    d = tmp_path / "t"
    shutil.copytree(FIXTURE / "cca-cubic", d)
    plain = load(d)["."]["packet_io"]
    for ext, pattern in ((".zst", "packet_io.parquet"), (".gz", "stream_io.parquet"), (".xz", "tcp_info.parquet")):
        assert encode(d, (pattern,), ext, None, destructive=True) == [d / (pattern + ext)]
    assert not (d / "packet_io.parquet").exists()
    test = load(d)["."]
    pd.testing.assert_frame_equal(test["packet_io"], plain)
    assert len(test["stream_io"]) > 0 and len(test["tcp_info"]) > 0
    assert {"packet_io", "stream_io", "tcp_info"} <= set(test.kinds())


def test_index_groups_tests_and_compares_the_swept_parameter() -> None:
    page, figs = index_html(FIXTURE, IndexSpec(flow="^bulk$"))
    assert page.index("cca = bbr") < page.index("cca = cubic")
    assert 'href="cca-bbr/stream_io.parquet"' in page
    # goodput and RTT p99 of bulk against cca; bulk has no loss_pct, so no empty loss chart but a note.
    assert [f.layout.title.text for f in figs] == ["goodput_mbps vs cca", "rtt_ms_p99 vs cca"]
    assert "No chart of loss_pct: no flow matching &#x27;^bulk$&#x27; has it." in page
    (trace,) = figs[0].data
    assert trace.name == "bulk"
    values = dict(zip(trace.x, trace.y, strict=True))
    assert values["cubic"] == pytest.approx(20.0, rel=0.01) and values["bbr"] == pytest.approx(30.0, rel=0.01)
    _, (rtt,) = index_html(FIXTURE, IndexSpec(compare=("rtt_ms_median",), flow="udp"))
    assert list(rtt.data[0].y) == pytest.approx([10.0, 10.0])


def write_two_key_sweep(result_dir: Path) -> None:
    """Store the per-flow tables of ``-m +experiment=cubic cca=cubic,bbr rig.rtt=10ms,40ms``.

    Each test has the IDs that sweep composes and the experiment's flows,
    ``tcp`` (goodput) and ``udp`` (RTT), with metrics that depend on both keys:
    goodput = base(cca) + rtt_ms / 10, RTT = rtt_ms + queue(cca).
    """
    base = {"cubic": 40.0, "bbr": 45.0}
    queue = {"cubic": 50.0, "bbr": 5.0}
    for cca in ("cubic", "bbr"):
        for rtt_ms in (10, 40):
            d = result_dir / f"experiment-cubic/cca-{cca}/rig_rtt-{rtt_ms}ms"
            d.mkdir(parents=True)
            write_meta(d, {"test_id": {"experiment": "cubic", "cca": cca, "rig_rtt": f"{rtt_ms}ms"}, "status": "ok"})
            flows = pd.DataFrame(
                {
                    "flow": ["tcp", "udp"],
                    "kind": ["stream", "packet"],
                    "cca": [cca, ""],
                    "goodput_mbps": [base[cca] + rtt_ms / 10, float("nan")],
                    "rtt_ms_median": [float("nan"), rtt_ms + queue[cca]],
                }
            )
            flows.to_parquet(d / "flows.parquet")


def test_a_two_key_sweep_draws_a_line_per_flow_and_group(tmp_path: Path) -> None:
    write_two_key_sweep(tmp_path)
    page, figs = index_html(tmp_path, IndexSpec(compare=("goodput_mbps", "rtt_ms_median")))
    # Grouped by the first swept key, charted against the other.
    assert page.index("cca = bbr") < page.index("cca = cubic")
    goodput, rtt = figs
    assert goodput.layout.title.text == "goodput_mbps vs rig_rtt"
    lines = {t.name: dict(zip(t.x, t.y, strict=True)) for t in goodput.data}
    assert lines == {
        "tcp cca=bbr": {"10ms": pytest.approx(46.0), "40ms": pytest.approx(49.0)},
        "tcp cca=cubic": {"10ms": pytest.approx(41.0), "40ms": pytest.approx(44.0)},
    }
    lines = {t.name: dict(zip(t.x, t.y, strict=True)) for t in rtt.data}
    assert lines == {"udp cca=bbr": {"10ms": 15.0, "40ms": 45.0}, "udp cca=cubic": {"10ms": 60.0, "40ms": 90.0}}
    # An x the user names wins; the rest still makes one line per flow and value.
    _, (by_cca,) = index_html(tmp_path, IndexSpec(x="cca", compare=("goodput_mbps",)))
    assert sorted(t.name for t in by_cca.data) == ["tcp rig_rtt=10ms", "tcp rig_rtt=40ms"]
    assert all(len(t.x) == 2 for t in by_cca.data)


def test_index_compare_takes_one_name_or_a_list() -> None:
    assert parse(IndexSpec, {"compare": "goodput_mbps"}, "index").compare == ("goodput_mbps",)
    assert parse(IndexSpec, {"compare": ["fct_s", "retrans"]}, "index").compare == ("fct_s", "retrans")
    assert parse(IndexSpec, None, "index").compare == ("goodput_mbps", "rtt_ms_p99", "loss_pct")
    with pytest.raises(ConfigError, match=r"^index: compare names flows.parquet columns"):
        parse(IndexSpec, {"compare": ["goodput_mbps", ""]}, "index")


def test_a_run_writes_reports_and_an_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real (tiny) run: after reports run from the stored data, and index.html links the test."""
    monkeypatch.chdir(tmp_path)
    exp = tmp_path / "conf" / "experiment"
    exp.mkdir(parents=True)
    (exp / "info.yaml").write_text(
        "# @package _global_\n"
        "test:\n"
        "  id: {experiment: info}\n"
        "  during: {emit_log: ['-', during.log]}\n"
        "  run:\n"
        "    serial:\n"
        "      - sysinfo: {command: ['echo sysinfo-ran'], env: ['ANTLER_T.*'], sysctl: ['net\\.ipv4\\.ip_forward']}\n"
        "      - system: {command: 'echo hello-during'}\n"
    )
    monkeypatch.setenv("ANTLER_TEST_VAR", "visible")
    assert main(["run", "--config-dir", str(tmp_path / "conf"), "+experiment=info"]) == 0
    latest = tmp_path / "results" / LATEST
    test_dir = latest / "experiment-info"
    page = (test_dir / "sysinfo_-.html").read_text()
    assert "sysinfo-ran" in page and "ANTLER_TEST_VAR" in page and "net.ipv4.ip_forward" in page
    assert "hello-during" in (test_dir / "during.log").read_text()
    assert "hello-during" in (test_dir / "log.txt").read_text()
    index = (latest / "index.html").read_text()
    assert 'href="experiment-info/sysinfo_-.html"' in index
    meta = json.loads((test_dir / "meta.json").read_text())
    assert "report_errors" not in meta
