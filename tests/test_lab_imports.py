"""The lab rule: test modules and bench/ share helpers through tests/lab only, never through one another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.no_netns

ROOT = Path(__file__).resolve().parents[1]


def imported(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """Return (line, module) for every import in a file, function-local ones included, relative ones resolved."""
    package = ".".join(path.relative_to(root).parent.parts)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            # `from tests import figures` imports the module tests.figures.
            names = [f"{base}.{a.name}" for a in node.names] if base in ("tests", "bench") else [base]
            found += [(node.lineno, name) for name in names]
    return found


def path_inserts(path: Path) -> list[int]:
    """Return the lines of every sys.path.insert / sys.path.append call in a file."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("insert", "append")
        and ast.unparse(node.func.value) == "sys.path"
    ]


def allowed(importer: Path, module: str, root: Path = ROOT) -> bool:
    """Report whether a file of tests/ or bench/ may import a module of the project's tests/ or bench/."""
    top = module.split(".")[0]
    if top not in ("tests", "bench"):
        return True
    if module == "tests.lab" or module.startswith("tests.lab."):
        return True
    in_bench = importer.relative_to(root).parts[0] == "bench"
    if in_bench:
        return module == "bench.common"
    # The stored fixtures' maker holds the figures the fixtures were made with.
    return module == "tests.data.make_fixture"


def offences(root: Path = ROOT) -> list[str]:
    """List each import that breaks the lab rule, and each sys.path edit in bench/, as 'path:line: module'."""
    files = sorted(
        [*(root / "tests").glob("*.py"), *(root / "tests" / "lab").glob("*.py"), *(root / "bench").glob("*.py")]
    )
    bad = [
        f"{p.relative_to(root)}:{line}: imports {module}"
        for p in files
        for line, module in imported(p, root)
        if not allowed(p, module, root)
    ]
    bad += [
        f"{p.relative_to(root)}:{line}: edits sys.path"
        for p in files
        if p.relative_to(root).parts[0] == "bench"
        for line in path_inserts(p)
    ]
    return bad


def test_test_modules_and_bench_import_only_the_lab() -> None:
    assert offences() == []


def test_the_rule_catches_a_test_module_importing_another(tmp_path: Path) -> None:
    (tmp_path / "tests" / "lab").mkdir(parents=True)
    (tmp_path / "bench").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text(
        "from tests.lab.trees import run_tree\nfrom tests.test_b import helper\n"
    )
    (tmp_path / "tests" / "test_b.py").write_text("def f():\n    from tests import nettools\n")
    (tmp_path / "bench" / "x.py").write_text(
        "import sys\nsys.path.insert(0, '.')\nfrom bench.y import z\nfrom .common import sh\n"
    )
    assert offences(tmp_path) == [
        "bench/x.py:3: imports bench.y",
        "tests/test_a.py:2: imports tests.test_b",
        "tests/test_b.py:2: imports tests.nettools",
        "bench/x.py:2: edits sys.path",
    ]


def test_the_labs_paths_name_the_checkout_and_the_test_data() -> None:
    # The lab sits a folder below the tests: a path made from its own __file__
    # must climb one more level (the hosts once shared tests/, not the checkout).
    from tests.lab import hosts, results
    from tests.lab.hosts import private_tmp

    assert (hosts.CHECKOUT / "pyproject.toml").is_file()
    assert (results.DATA / "make_fixture.py").is_file()
    under_tmp = Path("/tmp/antler-ci-clone")
    original = hosts.SHARED_UNDER_TMP
    try:
        hosts.SHARED_UNDER_TMP = [under_tmp]
        assert f"mount --bind {under_tmp} /x/antler-ci-clone" in private_tmp(Path("/x"))
    finally:
        hosts.SHARED_UNDER_TMP = original
