"""Small frictions of a first hour (issue 30): vet knows this host's CCAs, Ray's notices go to its log, one --root."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from antler.cli import main
from antler.node.launch.ray.cluster import DIAGNOSTICS_LOG, ray_diagnostics_to_log
from antler.node.runners.stream import sock

pytestmark = pytest.mark.no_netns


@pytest.fixture
def kernel_offers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This host's kernel offers reno and cubic (a stand-in for /proc's list)."""
    path = tmp_path / "tcp_available_congestion_control"
    path.write_text("reno cubic\n")
    monkeypatch.setattr(sock, "AVAILABLE_CCA_PATH", str(path))
    return path


def test_vet_refuses_a_cca_this_kernel_lacks(
    kernel_offers: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30: cca=bbr2 passed vet; run failed after the rig was built."""
    root = tmp_path / "results"
    assert main(["vet", "+experiment=cubic", "cca=bbr2", "--root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "upload.cca: 'bbr2' is not a congestion control" in err, err
    assert "(reno cubic)" in err and not root.exists()
    # run refuses it the same way, before anything is built or written.
    assert main(["run", "+experiment=cubic", "cca=bbr2", "--root", str(root)]) == 2
    assert "'bbr2'" in capsys.readouterr().err and not root.exists()
    assert main(["vet", "+experiment=cubic", "cca=cubic", "--root", str(root)]) == 0


def test_ray_notices_go_to_its_log_not_the_terminal(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """Issue 30: "Token authentication is enabled ..." was printed on every run."""
    ray_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    logging.getLogger("ray").addHandler(stderr := logging.StreamHandler())
    try:
        with ray_diagnostics_to_log(lambda: tmp_path) as kept:
            ray_logger.warning("Token authentication is enabled for this Ray cluster.")
    finally:
        logging.getLogger("ray").removeHandler(stderr)
    assert len(kept) == 1
    assert "Token authentication" not in capfd.readouterr().err
    assert "Token authentication is enabled" in (tmp_path / DIAGNOSTICS_LOG).read_text()
    # Outside the block the logger is as it was.
    assert ray_logger.propagate and not ray_logger.handlers


def test_run_and_the_results_commands_take_one_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 30: the result root was --root on some commands and results.root_dir on run."""
    root = tmp_path / "mine"
    assert main(["run", "+experiment=hello", "--root", str(root)]) == 0
    assert list((root / "latest").rglob("meta.json"))
    capsys.readouterr()
    assert main(["results", "--root", str(root)]) == 0
    assert "experiment=hello  ok" in capsys.readouterr().out
    assert main(["vet", "+experiment=hello", "--root", str(root)]) == 0
    assert f"compared with {root}" in capsys.readouterr().err
    assert main(["vet", "+experiment=hello", "results.root_dir=elsewhere", "--root", str(root)]) == 2
    assert "name two result roots" in capsys.readouterr().err


@pytest.mark.parametrize("args", [["+durration=5s"], ["+durration=5s,10s"]])
def test_a_key_nothing_reads_is_refused_naming_the_nearest(
    args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 30: +durration=5s was accepted, and a sweep over it planned identical tests."""
    assert main(["vet", "-m", "+experiment=cubic", *args, "--root", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("antler-ray: config error: durration: no part"), err
    assert "did you mean 'duration'?" in err and "labels" in err
    assert not (tmp_path / "r").exists()


def test_labels_are_the_place_for_free_form_notes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from antler.config.compose import compose_jobs

    (job,) = compose_jobs(["+experiment=hello", "+labels.why=first try"])
    assert job.config["labels"] == {"why": "first try"}


def test_a_socket_option_the_kernel_changes_says_what_was_granted() -> None:
    """Issue 30: what the kernel grants is recorded when it differs from what was asked."""
    import socket

    from antler.node.sockopt import Sockopt

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        asked = 1 << 30  # far beyond wmem_max: the kernel caps it
        note = Sockopt("SOL_SOCKET", "SO_SNDBUF", asked, name="SO_SNDBUF").apply(s)
        granted = s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert granted != asked and note == f"sockopt SO_SNDBUF: asked {asked}, granted {granted}"
        assert Sockopt("SOL_SOCKET", "SO_PRIORITY", 3).apply(s) == ""  # granted as asked


def test_a_flow_logs_the_socket_option_the_kernel_granted_and_its_info_row_keeps_it() -> None:
    import asyncio

    from antler.config.test import parse_run
    from antler.node import Item, LogEntry, PacketInfo, StreamInfo, do
    from antler.node.items import info_row

    run = parse_run(
        {
            "serial": [
                {"stream_server": {"listen_addr": "127.0.0.1:0", "listen_addr_key": "a"}},
                {"packet_server": {"listen_addr": "127.0.0.1:0", "listen_addr_key": "p"}},
                {
                    "packet_client": {
                        "addr_key": "p",
                        "flow": "pk",
                        "sender": [{"unresponsive": {"wait": ["10ms"], "length": [100], "duration": "50ms"}}],
                        "sockopt": [{"level": "SOL_SOCKET", "opt": "SO_SNDBUF", "value": 1, "name": "SO_SNDBUF"}],
                    }
                },
                {
                    "stream_client": {
                        "addr_key": "a",
                        "upload": {
                            "flow": "lo",
                            "length": "100KB",
                            "sockopt": [
                                {"level": "SOL_SOCKET", "opt": "SO_SNDBUF", "value": 1 << 30, "name": "SO_SNDBUF"}
                            ],
                        },
                    }
                },
            ]
        }
    )
    items: list[Item] = []
    assert asyncio.run(do(run, items.append))
    said = {i.text.split(":")[0]: i.text for i in items if isinstance(i, LogEntry) and "SO_SNDBUF" in i.text}
    assert said.keys() == {"flow lo", "flow pk"}, said
    assert said["flow lo"].startswith(f"flow lo: sockopt SO_SNDBUF: asked {1 << 30}, granted "), said
    assert said["flow pk"].startswith("flow pk: sockopt SO_SNDBUF: asked 1, granted "), said  # the kernel's minimum
    # The flow's row says it too (stream_info, packet_info): the client's, as asked and granted; the server's "".
    rows = [info_row(i)[1] for i in items if isinstance(i, (StreamInfo, PacketInfo))]
    by_end = {(r["flow"], r["server"]): r["sockopts"] for r in rows}
    assert by_end[("lo", False)] == said["flow lo"].removeprefix("flow lo: ")
    assert by_end[("pk", False)] == said["flow pk"].removeprefix("flow pk: ")
    assert by_end[("lo", True)] == ""


def test_a_table_that_cannot_be_written_is_a_write_error_and_no_file(tmp_path: Path) -> None:
    """Issue 30: a full disk must fail the test, and leave no half-written table looking like a result."""
    from antler.node import LogEntry
    from antler.node.items import now
    from antler.results.store import TestWriter

    (tmp_path / "log.arrows").symlink_to("/dev/full")  # every write to it: ENOSPC, as on a full disk
    writer = TestWriter(tmp_path)
    for i in range(3):
        writer.write(LogEntry(now(), "root", "system", f"line {i}"))
    writer.close()
    (error,) = writer.write_errors
    assert error.startswith("writing log: ") and "No space left on device" in error, error
    assert not (tmp_path / "log.parquet").exists() and not list(tmp_path.glob(".*.tmp"))
    assert not (tmp_path / "log.arrows").exists()


def refused_by_vet_and_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], test_yaml: str) -> str:
    """Vet, then run, the experiment ``test:`` + test_yaml; assert both exit 2 and nothing is written; return vet's error."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "bound.yaml").write_text("# @package _global_\ntest:\n" + test_yaml)
    root = tmp_path / "r"
    args = ["--config-dir", str(conf), "+experiment=bound", "--root", str(root)]
    assert main(["vet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert main(["run", *args]) == 2 and not root.exists()
    return err


def test_vet_refuses_a_client_key_no_server_publishes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every bound a runner checks, vet checks first: the client's addr_key failed only once the test ran."""
    err = refused_by_vet_and_run(
        tmp_path,
        capsys,
        "  id: {experiment: keys}\n"
        "  run:\n"
        "    serial:\n"
        "      - stream_server: {listen_addr: '127.0.0.1:0', listen_addr_key: srv}\n"
        "      - stream_client: {addr_key: svr, upload: {flow: tcp, duration: 1s}}\n",
    )
    assert err.endswith(
        "test.run.serial[1].stream_client.addr_key: no server of the test publishes 'svr' (servers' listen_addr_key: srv)"
    ), err


@pytest.mark.parametrize(("hmac", "need"), [(False, 16), (True, 32)])
def test_vet_refuses_a_packet_shorter_than_its_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hmac: bool, need: int
) -> None:
    """Every bound a runner checks, vet checks first: a packet too short for its header failed only once the test ran."""
    from antler.node.runners.packet.wire import header_len

    assert header_len("udp", hmac) == need  # 13 fixed bytes, the 3-byte flow ID, the 16-byte tag
    err = refused_by_vet_and_run(
        tmp_path,
        capsys,
        "  id: {experiment: short}\n"
        f"  hmac: {str(hmac).lower()}\n"
        "  run:\n"
        "    serial:\n"
        "      - packet_server: {listen_addr: '127.0.0.1:0', listen_addr_key: p}\n"
        "      - packet_client:\n"
        "          addr_key: p\n"
        "          flow: udp\n"
        f"          sender: [{{unresponsive: {{wait: [10ms], length: [{need}], duration: 1s}}}},\n"
        f"                   {{unresponsive: {{wait: [10ms], length: [{need - 1}], duration: 1s}}}}]\n",
    )
    tag = " and HMAC tag (test.hmac)" if hmac else ""
    assert err.endswith(
        f"test.run.serial[1].packet_client.sender[1]: packet length {need - 1} is shorter than flow 'udp'"
        f"'s header{tag}: {need} bytes"
    ), err
