"""The package's layers: no import runs back up them, and no two modules import each other, however indirectly.

The layers, from the base up: node -> results -> report -> rig -> config ->
invoke -> cli. A module may import its own layer and those below it. The
top-level helper modules (``antler/*.py``: lazy attributes, exit codes, test
IDs, the terminal) are base modules: they import nothing of antler, so any
layer may use them. Every import counts: at module level, under ``if
TYPE_CHECKING:``, and inside functions.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import antler

LAYERS = ("node", "results", "report", "rig", "config", "invoke", "cli")
"""LAYERS are the subpackages of antler from the base up."""

ENTRY_POINTS = {"antler.__main__": "cli"}
"""ENTRY_POINTS are the top-level modules that belong to a layer: ``python -m antler`` is the command."""

PACKAGE = Path(antler.__file__).parent


@dataclass(frozen=True)
class Import:
    """One import of an antler module: where it is written and what it names."""

    source: str
    file: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(PACKAGE.parent)}:{self.line}: {self.source} -> {self.target}"


def module_name(path: Path) -> str:
    """Return the dotted module name of a file of the package (``antler/node/__init__.py`` -> ``antler.node``)."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Map every module of the package to its file."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(known: dict[str, Path]) -> list[Import]:
    """List every import of an antler module, anywhere in a module (functions and TYPE_CHECKING blocks too).

    ``from antler.x import y`` names the module ``antler.x.y`` when that is a
    module, else ``antler.x``; relative imports are resolved.
    """
    found = []
    for source, path in known.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for target in dict.fromkeys(targets):
                if target == "antler" or target.startswith("antler."):
                    found.append(Import(source, path, node.lineno, target))
    return found


def layer(module: str) -> int | None:
    """Return a module's layer (its index in LAYERS), or None for a base module (antler/*.py)."""
    if module in ENTRY_POINTS:
        return LAYERS.index(ENTRY_POINTS[module])
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return None


def test_every_subpackage_is_a_layer_and_every_top_level_module_is_placed() -> None:
    known = modules()
    subpackages = {m.split(".")[1] for m in known if m.count(".") >= 1 and known[m].name == "__init__.py"}
    assert subpackages == set(LAYERS), f"subpackages without a layer: {sorted(subpackages - set(LAYERS))}"


def test_no_import_runs_back_up_the_layers() -> None:
    known = modules()
    upward = []
    for imp in imports(known):
        here, there = layer(imp.source), layer(imp.target)
        if here is None and imp.target != "antler":
            upward.append(f"{imp} (a base module imports nothing of antler)")
        elif there is not None and here is not None and there > here:
            upward.append(f"{imp} ({LAYERS[here]} may not import {LAYERS[there]})")
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycle_between_modules() -> None:
    known = modules()
    edges: dict[str, list[Import]] = {m: [] for m in known}
    for imp in imports(known):
        if imp.target in known and imp.target != imp.source:
            edges[imp.source].append(imp)
    cycle = _cycle(edges)
    assert not cycle, "an import cycle:\n" + "\n".join(map(str, cycle))


def _cycle(edges: dict[str, list[Import]]) -> list[Import]:
    """_cycle is one cycle of the import graph as its imports, or [] when there is none (depth-first search)."""
    done: set[str] = set()
    path: list[Import] = []
    on_path: dict[str, int] = {}

    def visit(module: str) -> list[Import]:
        on_path[module] = len(path)
        for imp in edges[module]:
            if imp.target in on_path:
                return [*path[on_path[imp.target] :], imp]
            if imp.target not in done:
                path.append(imp)
                found = visit(imp.target)
                if found:
                    return found
                path.pop()
        del on_path[module]
        done.add(module)
        return []

    for module in edges:
        if module not in done:
            found = visit(module)
            if found:
                return found
    return []


def test_the_cycle_search_finds_a_cycle_and_names_its_imports() -> None:
    here = Path(antler.__file__)
    a, b, c = (Import(x, here, i, y) for i, (x, y) in enumerate((("a", "b"), ("b", "c"), ("c", "a")), 1))
    assert _cycle({"a": [a], "b": [b], "c": [c]}) == [a, b, c]
    assert _cycle({"a": [a], "b": [b], "c": []}) == []


def test_the_readme_layout_lists_the_layers_in_order_and_every_package_directory() -> None:
    """The README's Layout block names each layer from the base up and every package directory of antler/."""
    readme = (PACKAGE.parent / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    named = [line.split()[0] for line in block.splitlines() if line.startswith("antler/")]
    layers_named = [n.split("/")[1] for n in named if n.count("/") == 2 and n.split("/")[1] in LAYERS]
    assert list(dict.fromkeys(layers_named)) == list(LAYERS)
    directories = {
        str(p.relative_to(PACKAGE.parent)) + "/"
        for p in PACKAGE.rglob("*")
        if p.is_dir() and (p / "__init__.py").exists() and p.parent == PACKAGE
    }
    missing = directories - set(named) - {"antler/starter/", "antler/conf/"}
    assert not missing, f"README Layout misses {sorted(missing)}"
