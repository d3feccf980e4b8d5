"""The recorder's result stream: what reaches the sink at once and what waits for close.

A ``result_stream`` runner sets the filters (antler's ResultStream with
MessageFilter include/exclude): items it holds back stay on the node until
the run tree completes, errors always stream. These tests look at the sink
itself, before and after ``close``, since the stored log is sorted by time and
cannot tell a held entry from a streamed one.
"""

from __future__ import annotations

from typing import Any

import pytest

from antler.node.filter import ResultStream
from antler.node.items import Batch, Error, FileData, Item, LogEntry, PacketInfo, StreamInfo, now
from antler.node.recorder import Recorder
from antler.node.runners.result_stream import ResultStreamRunner
from antler.node.spec import parse

pytestmark = pytest.mark.no_netns


def recorder(config: dict[str, Any]) -> tuple[Recorder, list[Item]]:
    """Return a recorder whose result stream is set from a result_stream runner's config, and its sink."""
    sink: list[Item] = []
    rec = Recorder("n1", sink.append)
    spec = parse(ResultStreamRunner, config, "result_stream")
    # The runner sets it through its own tagged view: every view shares it.
    rec.tagged("result_stream").result_stream = ResultStream(spec.include, spec.exclude)
    return rec, sink


def record_one_of_each(rec: Recorder) -> None:
    """Record a log, an error, two files, and flows tcp-1 and udp (info and a batch each)."""
    rec.log("hello")
    rec.error("broken")
    rec.file("iperf3.json", b"{}")
    rec.file("capture.pcap", b"\xd4\xc3\xb2\xa1")
    rec.send(StreamInfo(now(), "tcp-1", "up", "cubic", False, "n1"))
    rec.send(PacketInfo(now(), "udp", False, "n1"))
    for flow, kind in (("tcp-1", "stream_io"), ("udp", "packet_io")):
        cols = rec.columns(kind, flow, server=False)
        cols.append(*(1 for _ in cols.names))
    rec.flush()


def names(items: list[Item]) -> list[str]:
    """Describe each item by type and its flow, file name or text."""
    out = []
    for i in items:
        if isinstance(i, LogEntry):
            out.append(f"log {i.text}")
        elif isinstance(i, Error):
            out.append(f"error {i.message}")
        elif isinstance(i, FileData):
            out.append(f"file {i.name}")
        elif isinstance(i, Batch):
            out.append(f"{i.kind} {i.flow}")
        elif isinstance(i, (StreamInfo, PacketInfo)):
            out.append(f"{type(i).__name__} {i.flow}")
    return out


ALL = [
    "log hello",
    "error broken",
    "file iperf3.json",
    "file capture.pcap",
    "StreamInfo tcp-1",
    "PacketInfo udp",
    "stream_io tcp-1",
    "packet_io udp",
]


def test_by_default_everything_streams() -> None:
    rec, sink = recorder({})
    record_one_of_each(rec)
    assert names(sink) == ALL
    rec.close()
    assert names(sink) == ALL


def test_excluded_logs_reach_the_sink_only_at_close() -> None:
    rec, sink = recorder({"exclude": {"log": True}})
    record_one_of_each(rec)
    rec.log("later", tag="system")
    assert names(sink) == [n for n in ALL if not n.startswith("log")]
    rec.close()
    assert names(sink)[-2:] == ["log hello", "log later"]
    assert sorted(names(sink)) == sorted([*ALL, "log later"])


def test_include_streams_only_what_it_names_and_errors_always() -> None:
    rec, sink = recorder({"include": {"flow": ["tcp-*"], "file": ["*.json"]}})
    record_one_of_each(rec)
    assert names(sink) == ["error broken", "file iperf3.json", "StreamInfo tcp-1", "stream_io tcp-1"]
    rec.close()
    assert names(sink)[4:] == ["log hello", "file capture.pcap", "PacketInfo udp", "packet_io udp"]


def test_exclude_flow_and_file_globs_hold_back_only_what_matches() -> None:
    rec, sink = recorder({"exclude": {"flow": ["u?p"], "file": ["*.pcap"]}})
    record_one_of_each(rec)
    held = ["file capture.pcap", "PacketInfo udp", "packet_io udp"]
    assert names(sink) == [n for n in ALL if n not in held]
    rec.close()
    assert names(sink)[-3:] == held


def test_globs_match_whole_names_and_case() -> None:
    rec, sink = recorder({"exclude": {"flow": ["tcp"], "file": ["*.JSON"]}})
    record_one_of_each(rec)
    # "tcp" is not "tcp-1", and "*.JSON" is not "iperf3.json": nothing is held.
    assert names(sink) == ALL
