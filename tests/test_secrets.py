"""The HMAC key never reaches a command, a log line, a result file or a page (issue 16, part 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from antler.cli import main
from antler.config.test import parse_run
from antler.node import hmac
from antler.node.items import FileData, LogEntry, SysInfo, now
from antler.node.nodespec import Env
from antler.node.secrets import MASK, REDACTED, Redactor, command_env, looks_secret, mask_env
from antler.node.spec import ConfigError
from antler.report.sysinfo import sysinfo_html
from tests.lab import figures
from tests.lab.netns import unique_name

KEY = "s3cret-key-" + "7" * 20

EXP = """# @package _global_
test:
  id: {{experiment: secret}}
  hmac: true
  run:
    serial:
      - system: {{command: env}}
      - system: {{command: env, stdout: env.txt}}
      - sysinfo: {{env: ["ANTLER_.*", ".*TOKEN.*"], command: [env]}}
      - child:
          node: {{id: inner, netns: {{name: {ns}, create: true}}}}
          serial:
            - system: {{command: env}}
            - system: {{command: "cat /proc/self/environ"}}
            - sysinfo: {{env: ["ANTLER_.*"], file: [/proc/self/environ]}}
"""


def test_a_run_with_the_key_in_its_environment_writes_it_nowhere(tmp_path: Path) -> None:
    """As a new user: hmac on, the key in ANTLER_HMAC_KEY, commands that print their environment."""
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    (conf / "experiment" / "secret.yaml").write_text(EXP.format(ns=unique_name("sk")))
    env = {**os.environ, hmac.KEY_ENV: KEY, "MY_API_TOKEN": "tok-" + "9" * 16, "ANTLER_VISIBLE": "shown"}
    done = subprocess.run(
        [sys.executable, "-m", "antler", "run", "--config-dir", str(conf), "+experiment=secret"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    test_dir = tmp_path / "results" / "latest" / "experiment-secret"
    files = sorted({p.resolve() for p in (tmp_path / "results").rglob("*") if p.is_file()})
    leaks = [p.name for p in files if KEY.encode() in p.read_bytes()]
    shown = (done.stdout + done.stderr).count("\n")
    figures.record("secrets", "result files scanned for the key (every file of the folder)", len(files), "files")
    figures.record(
        "secrets",
        "bytes scanned (files and terminal output)",
        sum(p.stat().st_size for p in files) + len(done.stdout + done.stderr),
        "bytes",
    )
    figures.record("secrets", "terminal lines scanned", shown, "lines")
    figures.record(
        "secrets",
        "files or terminal output holding the key",
        len(leaks) + (KEY in done.stdout + done.stderr),
        "files",
        lost=True,
    )
    assert KEY not in done.stdout + done.stderr, "the terminal shows the key"
    assert not leaks, f"the key is in {leaks}"
    # The commands ran without the key (and with the rest of the environment).
    assert "ANTLER_VISIBLE=shown" in (test_dir / "env.txt").read_text()
    assert hmac.KEY_ENV not in (test_dir / "env.txt").read_text()
    # A recorded variable whose name looks secret shows as set, its value masked.
    page = (test_dir / "sysinfo_-.html").read_text()
    assert f"<td>MY_API_TOKEN</td><td>{MASK}</td>" in page
    assert "<td>ANTLER_VISIBLE</td><td>shown</td>" in page


def test_node_environments_never_carry_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hmac.KEY_ENV, KEY)
    assert hmac.KEY_ENV not in Env().build()
    assert hmac.KEY_ENV not in Env(vars=("A=1",)).build({hmac.KEY_ENV: KEY})
    assert command_env({hmac.KEY_ENV: KEY, "PATH": "/bin"}) == {"PATH": "/bin"}
    with pytest.raises(ConfigError, match=f"{hmac.KEY_ENV} would put the HMAC key into the config"):
        parse_run({"child": {"node": {"id": "n", "env": {"vars": [f"{hmac.KEY_ENV}=abc"]}}, "sleep": "1ms"}})


def test_the_command_line_takes_the_key_out_of_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hmac.KEY_ENV, KEY)
    monkeypatch.setattr(hmac, "_taken", "")
    hmac.take_env_key()
    assert hmac.KEY_ENV not in os.environ
    assert hmac.resolve_key(True) == KEY.encode(), "the test still signs with it"


def test_names_that_look_secret_are_masked_when_recorded() -> None:
    for name in ("ANTLER_HMAC_KEY", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "DB_PASSWORD", "API_KEY"):
        assert looks_secret(name), name
    for name in ("PATH", "HOME", "KEYBOARD", "ANTLER_SI", "MONKEY"):
        assert not looks_secret(name), name
    assert mask_env({"API_KEY": "x", "PATH": "/bin"}) == {"API_KEY": MASK, "PATH": "/bin"}
    # A page of results recorded before masking never shows the value either.
    page = sysinfo_html("n", {"env": {"ANTLER_HMAC_KEY": KEY, "PATH": "/bin"}})
    assert KEY not in page and "/bin" in page


def test_the_driver_redacts_the_key_from_every_text_item() -> None:
    r = Redactor([KEY.encode(), None, "abc"])  # too short to redact: "abc"
    entry = r.item(LogEntry(now(), "n", "system", f"{hmac.KEY_ENV}={KEY}"))
    assert isinstance(entry, LogEntry) and entry.text == f"{hmac.KEY_ENV}={REDACTED}"
    chunk = r.item(FileData("f", f"x{KEY}y".encode()))
    assert isinstance(chunk, FileData) and chunk.data == f"x{REDACTED}y".encode()
    info = r.item(SysInfo("n", {"file": {"/proc/self/environ": f"K={KEY}"}}))
    assert isinstance(info, SysInfo) and KEY not in str(info.data)
    assert r.text("abc") == "abc"


@pytest.mark.no_netns
@pytest.mark.parametrize(("content", "says"), [(None, "No such file or directory"), (b"\n", "the file is empty")])
def test_a_key_file_that_cannot_give_a_key_stops_the_run_before_anything_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    content: bytes | None,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(hmac.KEY_ENV, raising=False)
    key_file = tmp_path / "hmac.key"
    if content is not None:
        key_file.write_bytes(content)
    status = main(["run", "+experiment=hello", "+test.hmac=true", f"+test.hmac_key_file={key_file}"])
    err = capsys.readouterr().err
    # A config error naming the key and the file, exit 2 and nothing written (was a traceback, exit 1, a folder).
    assert status == 2 and f"hmac_key_file '{key_file}': {says}" in err, err
    assert "Traceback" not in err and not (tmp_path / "results").exists()
