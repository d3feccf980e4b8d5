"""The node that ships to a host needs Python 3.9 and its standard library, nothing else (issue 27).

What is checked is the node zipapp itself (antler.node.launch.zipapp), the
code an SSH host runs: vermin finds no construct newer than 3.9 in it, its
imports name only the standard library and its own modules, and every module
of it imports on a package-free Python 3.9 started isolated (``-I``), as on a
fresh host.
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from antler.node.launch.zipapp import LEAVE_OUT, NODE_PYTHON, build
from tests.lab.pythons import bare_python, python_version

pytestmark = pytest.mark.no_netns

ALLOWED = {
    # The SSH launcher of a node's own SSH nodes: imported only when a node has some, on a host with paramiko.
    ("antler/node/launch/ssh/__init__.py", "paramiko"),
    ("antler/node/launch/ssh/connect.py", "paramiko"),
    ("antler/node/launch/ssh/upload.py", "paramiko"),
    # Batch.batch and Batch.rows: the driver's side asks for Arrow; a node never does.
    ("antler/node/items.py", "antler.node.arrow"),
}
"""ALLOWED are the (file, module) imports of the zipapp that are not the standard library's or its own."""
NOT_ON_A_HOST = ("antler.node.launch.ssh", "antler.node.__main__")
"""NOT_ON_A_HOST are the modules the import check leaves out: the SSH launcher (paramiko) and the entry point."""

VERMIN = "import sys, vermin; sys.exit(vermin.main())"
"""VERMIN runs vermin's command line (the package has no ``__main__``)."""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return the node zipapp of this checkout, written to a file and unpacked beside it."""
    folder = tmp_path_factory.mktemp("nodeapp")
    data = build()
    (folder / "node.pyz").write_bytes(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        z.extractall(folder / "files")
    return folder


def sources(app: Path) -> list[Path]:
    """Return the Python files of the unpacked zipapp."""
    return sorted((app / "files").rglob("*.py"))


def test_the_zipapp_holds_the_node_and_leaves_out_the_drivers_side(app: Path) -> None:
    names = {p.relative_to(app / "files").as_posix() for p in sources(app)}
    assert {"__main__.py", "antler/node/process.py", "antler/node/recorder.py", "antler/node/wire.py"} <= names
    assert not {n for n in names if n.removeprefix("antler/").startswith(LEAVE_OUT)}
    assert "antler/node/arrow.py" not in names and "antler/node/schemas.py" not in names


def test_vermin_finds_nothing_newer_than_python_3_9_in_the_node(app: Path) -> None:
    target = "{}.{}".format(*NODE_PYTHON)
    done = subprocess.run(
        [sys.executable, "-c", VERMIN, f"-t={target}-", "--violations", "--no-tips", "-q", str(app / "files")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _top_level_imports(path: Path, root: Path) -> list[str]:
    """Return the modules a file imports outside ``if TYPE_CHECKING:`` blocks (function-local ones too)."""
    tree = ast.parse(path.read_text(), str(path))
    checking = {
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for stmt in block.body
        for n in ast.walk(stmt)
    }
    package = ".".join(path.relative_to(root).parent.parts)
    found = []
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.append(base)
    return found


def test_the_node_imports_only_the_standard_library_and_its_own_modules(app: Path) -> None:
    root = app / "files"
    own = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__") for p in sources(app)}
    bad = []
    for path in sources(app):
        rel = path.relative_to(root).as_posix()
        for module in _top_level_imports(path, root):
            top = module.split(".")[0]
            if top == "__future__" or (top != "antler" and top in sys.stdlib_module_names):
                continue
            if module in own or any(module.startswith(o + ".") for o in own if o != "antler"):
                continue
            if (rel, module) not in ALLOWED:
                bad.append(f"{rel}: {module}")
    assert not bad, "the node would need these on a host"


def test_every_node_module_imports_on_a_package_free_python_3_9(app: Path) -> None:
    python = bare_python()
    probe = f"""
import importlib, pkgutil, sys
sys.path.insert(0, {str(app / "node.pyz")!r})
import antler.node
skip = {NOT_ON_A_HOST!r}
names = [m.name for m in pkgutil.walk_packages(antler.node.__path__, "antler.node.") if not m.name.startswith(skip)]
for name in names:
    importlib.import_module(name)
third = sorted({{m.split(".")[0] for m in sys.modules}} & {{"numpy", "pyarrow", "paramiko", "ray", "pandas"}})
print(len(names), sys.modules["antler"].__file__, *third)
"""
    done = subprocess.run([*python.split(), "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, where, *third = done.stdout.split()
    assert int(count) >= 50 and where.startswith(str(app / "node.pyz")) and not third
    assert python_version(python) == "{}.{}".format(*NODE_PYTHON), "the oldest Python the node supports"


BACKPORTS = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from antler.node import compat

async def main():
    out, cancelled = [], []

    async def fail():
        await asyncio.sleep(0.01)
        raise ValueError("boom")

    async def sleeper():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    try:
        async with compat.TaskGroup() as tg:
            tg.create_task(fail())
            tg.create_task(sleeper())
    except compat.BaseExceptionGroup as eg:
        out.append(["group", type(eg).__name__, [repr(e) for e in eg.exceptions], isinstance(eg, Exception)])
    out.append(["sibling cancelled", len(cancelled)])
    async with compat.TaskGroup() as tg:
        a = tg.create_task(asyncio.sleep(0.01, "a"))
    out.append(["result", a.result()])

    async def parent():
        async with compat.TaskGroup() as tg:
            tg.create_task(sleeper())

    t = asyncio.ensure_future(parent())
    await asyncio.sleep(0.01)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        out.append(["parent cancelled", t.cancelled(), len(cancelled)])
    try:
        async with compat.timeout(0.01):
            await asyncio.sleep(10)
    except compat.AsyncTimeout as e:
        out.append(["timed out", isinstance(e, asyncio.TimeoutError)])
    async with compat.timeout(5):
        await asyncio.sleep(0)
    out.append(["in time"])
    print(out)

asyncio.run(main())
"""
"""BACKPORTS exercises what the node uses of TaskGroup and timeout; it prints what happened."""


def test_the_backports_behave_as_python_3_11s_own_on_python_3_9() -> None:
    checkout = str(Path(__file__).resolve().parents[1])
    got = {}
    for python in (bare_python(), sys.executable):
        done = subprocess.run([*python.split(), "-c", BACKPORTS, checkout], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        got[python] = done.stdout
    backport, native = got.values()
    assert backport == native
    assert native.strip() == (
        "[['group', 'ExceptionGroup', [\"ValueError('boom')\"], True], ['sibling cancelled', 1], ['result', 'a'], "
        "['parent cancelled', True, 2], ['timed out', True], ['in time']]"
    )
