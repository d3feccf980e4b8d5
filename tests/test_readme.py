"""The README is a guide that works: every command, config and Python snippet in it is exercised here.

The README is parsed, so a command added to it without coverage fails this
file. Each line of a ``sh``, ``bash`` or ``console`` block (``$`` lines in a
console block) and each inline ``antler-ray ...`` span is one command:

- ``antler-ray`` commands that are cheap (``--help``, ``list``, ``init``,
  ``vet``, the commands on stored results, ``run`` of the experiments in
  CHEAP_EXPERIMENTS) run for real, in-process, in a scratch folder holding
  ``antler-ray init mine`` and one run of ``hello``;
- other ``antler-ray run`` commands (tests of 30 s, rigs, clusters) are
  checked with ``antler-ray vet`` on the same arguments, so a renamed key,
  experiment or value fails;
- everything else is on ALLOWED, with a one-line reason each, and a cheap
  check where there is one (a ``make`` target exists in the Makefile, a
  ``ray`` subcommand and its flags exist in this Ray's ``--help``).

``yaml`` blocks are vetted as experiments (a list of runs is wrapped in a
test), ``python`` blocks are executed against the stored sweep in
tests/data/sweep as ``results/latest``, and docs/tables.md is checked
against the stored tables' schemas.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import typing
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from antler.cli import main
from antler.node.run import Run
from antler.node.schemas import SCHEMAS
from antler.report.analyze.flows import FLOW_COLUMNS
from tests.data.make_fixture import SWEEP_GOODPUT_MBPS

pytestmark = pytest.mark.no_netns

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TABLES = ROOT / "docs" / "tables.md"
SWEEP = ROOT / "tests" / "data" / "sweep"
BIN = Path(sys.executable).parent

CHEAP_EXPERIMENTS = {"hello", "first"}
"""CHEAP_EXPERIMENTS run for real: commands on the root node only, under a second, no Ray, no namespaces."""

ALLOWED = {
    "make test": "the set-up itself: runs this whole suite but its science tests",
    "make science": "runs this suite's science tests (pytest -m science), which make test leaves out",
    "make demo": "runs antler-ray run +experiment=cubic (a 35 s test through the rig), vetted from the README's prose",
    "source .venv/bin/activate": "a shell built-in that puts the venv made by make on PATH",
    "pip install jupyterlab": "installs from PyPI; tests/test_notebook.py executes the notebook without it",
    "ANTLER_RESULTS=$PWD/results/latest jupyter lab notebooks/sweep.ipynb": (
        "opens an interactive Jupyter server; tests/test_notebook.py executes sweep.ipynb with ANTLER_RESULTS set"
    ),
    "head -c 32 /dev/urandom | base64 > /etc/antler-hmac.key && chmod 600 /etc/antler-hmac.key": (
        "writes a secret into /etc; the run after it is vetted here with a key file made the same way in a scratch folder"
    ),
    "ray get-auth-token --generate": (
        "writes ~/.ray/auth_token, which every Ray on this host then reads; tests/test_sweep.py's cluster uses the token"
    ),
    "ray up cluster.yaml": "needs cluster hosts over SSH; tests/test_testbed.py runs it on namespace hosts",
    "ray exec cluster.yaml 'ray status'": "needs the cluster ray up starts; tests/test_testbed.py runs it",
    "ray attach cluster.yaml": "an interactive shell on the cluster's head host",
    "ray down cluster.yaml": "needs the cluster ray up starts; tests/test_testbed.py runs it",
    "ray start --head --port=6379 --resources='{\"host:h1\": 1}'": (
        "a head on a fixed port; tests/test_sweep.py starts one with the same flags on a free port (host:a)"
    ),
    "RAY_AUTH_MODE=token ray start --address=HEAD:6379 --resources='{\"host:h2\": 1}'": (
        "joins a placeholder address; tests/test_sweep.py joins a raylet so, with RAY_AUTH_MODE=token (host:b)"
    ),
}
"""ALLOWED are the README's commands that are not run here, each with the reason."""


@dataclass(frozen=True)
class Command:
    """One command of the README: its text, and the output shown under it in a console block."""

    text: str
    output: tuple[str, ...] = ()
    inline: bool = False


FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```\s*$", re.M | re.S)
"""FENCE is a fenced block, indented or not (in a list item)."""


def fenced(text: str) -> list[tuple[str, str]]:
    """List the README's fenced blocks as (language, body)."""
    return [(m[2], textwrap.dedent(m[3])) for m in FENCE.finditer(text)]


def readme_commands() -> list[Command]:
    """List every command the README shows, in order: block lines, then inline spans."""
    text = README.read_text()
    found: list[Command] = []
    for lang, body in fenced(text):
        lines = body.splitlines()
        if lang in ("sh", "bash"):
            found += [Command(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]
        elif lang == "console":
            for i, line in enumerate(lines):
                if line.startswith("$ "):
                    out = []
                    for after in lines[i + 1 :]:
                        if after.startswith("$ "):
                            break
                        out.append(after)
                    found.append(Command(line[2:].strip(), tuple(out)))
    prose = FENCE.sub("", text)
    for span in re.findall(r"`(antler-ray(?: [^`]*)?)`", prose):
        found.append(Command(span, inline=True))
    return found


COMMANDS = readme_commands()


def argv_of(c: Command) -> list[str]:
    """Return a command's words, its trailing comment dropped."""
    return shlex.split(c.text, comments=True)


def experiment_of(args: list[str]) -> str:
    return next((a.split("=", 1)[1] for a in args if a.startswith("+experiment=")), "")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return a working folder as a new user's would be after a few commands: mine/ from init, one run of hello."""
    d = tmp_path_factory.mktemp("readme")
    here = os.getcwd()
    os.chdir(d)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["init", "mine"]) == 0
            assert main(["run", "+experiment=hello"]) == 0
    finally:
        os.chdir(here)
    return d


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run antler-ray in-process and return its status and its output (stdout and stderr)."""
    capsys.readouterr()
    try:
        status = main(args)
    except SystemExit as e:  # --help
        status = int(e.code or 0)
    out = capsys.readouterr()
    return status, out.out + out.err


def serve_once(args: list[str]) -> str:
    """Run antler-ray server (on a free port, beside other tests), fetch index.html and stop it."""
    args = [a for a in args if a != "8080"]
    if "--port" in args:
        args.insert(args.index("--port") + 1, "0")
    proc = subprocess.Popen([str(BIN / "antler-ray"), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the readiness signal: it prints once bound
        url = re.search(r"http://\S+/", line)
        assert url, f"server said {line!r}"
        with urllib.request.urlopen(url[0] + "latest/index.html", timeout=10) as r:
            assert r.status == 200
            return r.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def check_output(c: Command, out: str, vetted: bool) -> None:
    """Compare the output a console block shows with what the command printed.

    A command run as shown must print each shown line; a run checked with
    vet must name each test that the shown run/link lines name.
    """
    for shown in c.output:
        if vetted:
            m = re.match(r"^(?:run |link) (.*?):", shown)
            if m:
                assert m[1] in out, f"{c.text}: vet names no test {m[1]!r}"
        else:
            assert shown.strip() in out, f"{c.text}: printed no {shown!r}"


@pytest.mark.parametrize(
    "c", [c for c in COMMANDS if argv_of(c)[0] == "antler-ray"], ids=lambda c: " ".join(argv_of(c))
)
def test_antler_ray_command(
    c: Command, scratch: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(scratch)
    args = argv_of(c)[1:]
    if not args or (c.inline and len(args) == 1):
        # A mention of the command or a subcommand: its help must exist.
        status, out = cli([*args, "--help"], capsys)
        assert status == 0 and "usage: antler-ray" in out
        return
    if args[0] == "server":
        assert "hello" in serve_once(args)
        return
    if args[0] == "remove":
        assert "--dry-run" in args, "the README shows remove with --dry-run only"
        latest = (scratch / "results" / "latest").resolve().name
        args = [latest if re.fullmatch(r"\d{4}-\d\d-\d\d-\d{6}Z", a) else a for a in args]
    if args[0] == "report" and any(a.startswith("index.") for a in args[1:]):
        # The README redraws a sweep's page against one of its keys: a stored
        # sweep stands in for it (latest in the scratch folder is whatever ran last).
        swept = scratch / "report-sweep"
        if not swept.exists():
            shutil.copytree(ROOT / "tests" / "data" / "compete", swept / "results" / "2026-01-01-000000Z")
            (swept / "results" / "latest").symlink_to("2026-01-01-000000Z")
        monkeypatch.chdir(swept)
    for i, a in enumerate(args):
        key, _, path = a.partition("=")
        if key.endswith("test.hmac_key_file") and not Path(path).exists():
            # Vet reads the key file: one made as the README makes it, in the scratch folder.
            made = scratch / Path(path).name
            made.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
            args[i] = f"{key}={made}"
    vetted = args[0] == "run" and experiment_of(args) not in CHEAP_EXPERIMENTS
    if vetted:
        args = ["vet", *args[1:]]
    status, out = cli(args, capsys)
    wanted = 2 if any("config error" in line for line in c.output) else 0
    assert status == wanted, f"{' '.join(args)} exited {status}:\n{out}"
    check_output(c, out, vetted)
    if args[0] == "run":
        assert "all passed" in out or "nothing to run" in out


def test_the_demo_is_a_valid_experiment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make demo runs the cubic experiment; its recipe and the README name the same one."""
    recipe = re.search(r"^demo:.*\n\t(.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and "run +experiment=cubic" in recipe[1]
    assert "`antler-ray run +experiment=cubic`" in README.read_text()
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["vet", "+experiment=cubic"]) == 0


OTHER = [c for c in COMMANDS if argv_of(c)[0] != "antler-ray"]


def test_every_other_command_is_allowed_with_a_reason() -> None:
    unexplained = [c.text for c in OTHER if c.text.split("  #")[0].strip() not in ALLOWED]
    assert unexplained == [], "a README command needs a test or an entry in ALLOWED"
    stale = set(ALLOWED) - {c.text.split("  #")[0].strip() for c in OTHER}
    assert stale == set(), "ALLOWED names commands the README no longer shows"


def test_make_targets_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for c in OTHER:
        words = argv_of(c)
        if words[0] == "make":
            assert re.search(rf"^{re.escape(words[1])}:", makefile, re.M), f"no make target {words[1]}"


def test_ray_subcommands_and_flags_exist() -> None:
    """Each ray command the README shows names a subcommand and flags this Ray has, and a file that exists."""
    by_sub: dict[str, set[str]] = {}
    for c in OTHER:
        words = [w for w in argv_of(c) if "=" not in w or w.startswith("-")]
        if words and words[0] == "ray":
            flags = {w.split("=", 1)[0] for w in words[2:] if w.startswith("--")}
            by_sub.setdefault(words[1], set()).update(flags)
            assert all((ROOT / w).exists() for w in words[2:] if w.endswith(".yaml"))
    assert by_sub, "the README shows ray commands"
    for sub, flags in by_sub.items():
        out = subprocess.run([str(BIN / "ray"), sub, "--help"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"ray {sub}: {out.stderr[-300:]}"
        missing = {f for f in flags if not re.search(rf"{re.escape(f)}(?![\w-])", out.stdout)}
        assert missing == set(), f"ray {sub} lacks a flag the README uses"


# --- yaml ---------------------------------------------------------------------------------------------------------


def yaml_blocks() -> list[str]:
    return [body for lang, body in fenced(README.read_text()) if lang == "yaml"]


@pytest.mark.parametrize("i", range(len(yaml_blocks())))
def test_yaml_examples_vet(i: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each YAML example is an experiment, a list of runs (wrapped in a test), or a rig; each passes vet.

    An experiment whose ``test:`` line says ``# in NAME`` adds to the packaged
    experiment NAME.
    """
    body = yaml_blocks()[i]
    data = yaml.safe_load(body)
    conf = tmp_path / "conf"
    (conf / "experiment").mkdir(parents=True)
    overrides = [f"+experiment=ex{i}"]
    if isinstance(data, list):
        test = {"test": {"id": {"experiment": f"ex{i}"}, "run": {"serial": data}}}
        body = yaml.safe_dump(test)
    elif isinstance(data, dict) and "test" in data:
        base = re.match(r"test: +# in (\w+)", body)
        if base:  # settings added to a packaged experiment
            body = f"defaults:\n  - /experiment/{base[1]}\n  - _self_\n" + body
    elif isinstance(data, dict) and data.get("defaults") == ["testbed"]:
        (conf / "rig").mkdir()
        (conf / "rig" / "mylab.yaml").write_text(body)
        (conf / "experiment" / f"ex{i}.yaml").write_text(
            (ROOT / "conf" / "experiment" / "cubic.yaml").read_text().replace("experiment: cubic", f"experiment: ex{i}")
        )
        overrides += ["rig=mylab", "ray.address=auto"]
        body = ""
    else:
        pytest.fail(f"README yaml block {i} is of no kind this test knows:\n{body}")
    if body:
        (conf / "experiment" / f"ex{i}.yaml").write_text("# @package _global_\n" + body)
    monkeypatch.chdir(tmp_path)
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
        status = main(["vet", "--config-dir", str(conf), *overrides])
    assert status == 0, out.getvalue() + err.getvalue()


# --- python -------------------------------------------------------------------------------------------------------


def python_blocks() -> list[str]:
    """Return the Python examples on results (the queue discipline example is tested on its own)."""
    return [body for lang, body in fenced(README.read_text()) if lang == "python" and not is_aqm(body)]


def is_aqm(body: str) -> bool:
    """Report whether a Python block is a queue discipline (the README's own-AQM example)."""
    return "def dequeue(self, now_ns" in body


def test_the_own_aqm_example_is_complete_short_and_the_packaged_one(tmp_path: Path) -> None:
    from antler.rig.aqm import ECT0, NOT_ECT, Packet, make_queue

    (body,) = [b for lang, b in fenced(README.read_text()) if lang == "python" and is_aqm(b)]
    assert len(body.strip().splitlines()) < 40
    packaged = (ROOT / "antler" / "rig" / "aqm" / "step_marker.py").read_text()
    assert body.strip() in packaged
    (tmp_path / "mine.py").write_text(body)
    dropped: list[Packet] = []
    q = make_queue("py:mine:StepMarker threshold=1ms", drop=lambda p, t: dropped.append(p), config_dir=tmp_path)
    for ecn in (ECT0, NOT_ECT, ECT0):
        assert q.enqueue(Packet(b"", 100, ecn, None, 0), 0)
    first = q.dequeue(2_000_000)  # 2 ms late: marked CE, the not-ECT one after it dropped
    assert first is not None and first.marked and first.ecn == 3
    second = q.dequeue(2_000_000)
    assert second is not None and second.marked and len(dropped) == 1


@pytest.mark.parametrize("i", range(len(python_blocks())))
def test_python_examples_run_on_a_stored_sweep(
    i: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each Python example runs as written, with results/latest the stored sweep, and prints its tests' figures."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "latest").symlink_to(SWEEP)
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[i], f"README.md python block {i}", "exec"), {})
    out = capsys.readouterr().out
    for (cca, rtt), goodput in SWEEP_GOODPUT_MBPS.items():
        assert re.search(rf"{cca}\W+{rtt}\W+tcp\W+{goodput:.3g}", out), f"no tcp row for {cca} {rtt}:\n{out}"


# --- links and tables ---------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """Return GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_and_paths_resolve() -> None:
    text = README.read_text()
    prose = FENCE.sub("", text)
    anchors = {slug(h) for h in re.findall(r"^#+ (.*)$", prose, re.M)}
    for target in re.findall(r"\]\(([^)]+)\)", prose):
        if target.startswith("#"):
            assert target[1:] in anchors, f"no heading for {target}"
        elif not target.startswith("http"):
            assert (ROOT / target).exists(), f"no file {target}"
    for path in re.findall(r"`((?:antler|conf|tests|bench|notebooks|docs)/[\w./-]+|cluster\.yaml|Makefile)`", text):
        assert (ROOT / path).exists(), f"the README names {path}, which does not exist"


def test_commands_are_only_in_blocks_this_file_reads() -> None:
    """A command in a block of another language (or none) would escape the tests above."""
    for lang, body in fenced(README.read_text()):
        assert lang in ("sh", "bash", "console", "yaml", "python", ""), f"a ```{lang} block"
        if lang in ("", "yaml", "python"):
            commands = [line for line in body.splitlines() if re.match(r"\s*(antler-ray|ray|make|pip) ", line)]
            assert commands == [], f"commands outside a sh/console block: {commands}"


def config_fields(t: object, seen: set[object], out: dict[str, list[str]]) -> dict[str, list[str]]:
    """Map each config dataclass reachable from t to its field names."""
    for arg in typing.get_args(t):
        config_fields(arg, seen, out)
    if isinstance(t, type) and dataclasses.is_dataclass(t) and t not in seen:
        seen.add(t)
        hints = typing.get_type_hints(t)
        for f in dataclasses.fields(t):
            out.setdefault(t.__name__, []).append(f.name)
            config_fields(hints[f.name], seen, out)
    return out


def test_every_key_of_the_run_tree_is_in_the_guide() -> None:
    """Every field of a run, runner, sender, node and launcher is named in the README: a new key needs a line there."""
    text = README.read_text()
    unnamed = {
        kind: missing
        for kind, names in config_fields(Run, set(), {}).items()
        if (missing := [n for n in names if not re.search(rf"`[^`\n]*\b{n}\b[^`\n]*`|\b{n}:", text)])
    }
    assert unnamed == {}


def test_every_top_level_and_rig_key_is_in_the_guide() -> None:
    """Every key of conf/config.yaml and of the rigs is named in the README as it is written on the command line."""
    text = README.read_text()
    config = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    keys = [f"{group}.{key}" for group, values in config.items() if isinstance(values, dict) for key in values]
    keys += [group for group, value in config.items() if not isinstance(value, dict)]  # calibrate
    for rig in ("dumbbell", "testbed"):
        keys += [f"rig.{key}" for key in yaml.safe_load((ROOT / "conf" / "rig" / f"{rig}.yaml").read_text())]
    assert [k for k in keys if k != "rig.kind" and not re.search(rf"{re.escape(k)}\b", text)] == []


def test_the_experiment_table_lists_what_list_prints(capsys: pytest.CaptureFixture[str]) -> None:
    status, out = cli(["list"], capsys)
    assert status == 0
    section = README.read_text().split("### The experiments that ship")[1].split("\n## ")[0]
    shown = {name for row in re.findall(r"^\| (`.*?) \|", section, re.M) for name in re.findall(r"`(\w+)`", row)}
    assert shown == set(out.split())


def test_the_rig_table_gives_the_dumbbells_defaults() -> None:
    defaults = yaml.safe_load((ROOT / "conf" / "rig" / "dumbbell.yaml").read_text())
    rows = re.findall(r"^\| `rig\.(\w+)` \| `([^`]*)` \|", README.read_text(), re.M)
    assert len(rows) >= 8
    for key, value in rows:
        assert yaml.safe_load(value) == defaults[key], f"rig.{key}"


def table_section(title: str) -> list[str]:
    """List the columns a section of docs/tables.md gives, in order."""
    section = TABLES.read_text().split(f"\n## {title}\n")[1].split("\n## ")[0]
    return re.findall(r"^\| `(\w+)` \|", section, re.M)


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_docs_give_every_column_of_every_stored_table(kind: str) -> None:
    assert table_section(kind) == SCHEMAS[kind].names


def test_docs_give_every_column_of_the_flows_table() -> None:
    assert table_section("flows: one row per flow") == FLOW_COLUMNS


def test_docs_give_every_column_of_the_summary_table() -> None:
    from antler.report.analyze import SUMMARY_COLUMNS

    assert table_section("summary: one row per test") == SUMMARY_COLUMNS


def test_the_readme_points_to_the_column_docs() -> None:
    assert "(docs/tables.md)" in README.read_text()
    assert shutil.which("antler-ray", path=str(BIN)), "the README's commands are the venv's"
