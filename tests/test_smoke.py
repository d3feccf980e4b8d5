"""The hello experiment end to end through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from antler.cli import main

pytestmark = pytest.mark.no_netns


def test_hello_writes_its_line_to_log_txt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", "+experiment=hello"]) == 0
    log = (tmp_path / "results" / "latest" / "experiment-hello" / "log.txt").read_text()
    assert "Hello World!" in log
