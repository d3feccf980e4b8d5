"""plotly.js beside the pages: one copy per result folder, loaded by each page by relative path.

plotly.js is 4.6 MB. Inlined, as pages were first written, every chart page
carried its own copy (a 300-test sweep held 3 GB of the same script); here a
result folder holds one file, ``plotly-<version>.min.js`` at its top, and a
page loads it with ``<script src="../plotly-<version>.min.js">`` (one ``../``
per folder between the page and the result folder). Relative paths keep
every way of opening the pages working: from disk (file://), in a copy of the
folder made elsewhere, or served by ``antler-ray server``, with no network.

The version is in the name because a test that an incremental run links into
a newer result folder keeps the pages it was made with: the script those
pages were written for is then linked from the result folder they came from
(:func:`link_referenced`). Pages of older results, with plotly.js inline,
need nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

PLOTLY_JS = re.compile(r"plotly-[0-9][0-9A-Za-z.+-]*\.min\.js")
"""PLOTLY_JS matches the file name of a result folder's plotly.js (any version)."""

_SCRIPT_SRC = re.compile(r'<script src="(?:\.\./)*(' + PLOTLY_JS.pattern + r')"')
_HEAD_BYTES = 4096
"""_HEAD_BYTES of a page are read to find its script: the tag is in its <head>, before any data."""


def plotly_js_name() -> str:
    """Return the file name of the plotly.js the installed plotly package ships."""
    from plotly.offline import get_plotlyjs_version

    return f"plotly-{get_plotlyjs_version()}.min.js"


def write_plotly_js(root: Path) -> Path:
    """Put plotly.js into the folder root unless it is there already; it returns its path.

    The file appears whole or not at all (written aside, then hard-linked
    into place), so a run stopped part-way never leaves a truncated script
    that every later page would load. It is never overwritten.
    """
    path = root / plotly_js_name()
    if path.exists():
        return path
    from plotly.offline import get_plotlyjs

    tmp = root / f".{path.name}.{os.getpid()}.{threading.get_ident()}"
    tmp.write_text(get_plotlyjs(), encoding="utf-8")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another test's reports wrote it first: the same bytes
    except OSError:
        os.replace(tmp, path)  # a file system without hard links
    finally:
        tmp.unlink(missing_ok=True)
    return path


def script_tag(page_dir: Path, script: Path) -> str:
    """Return the <script> element that loads script from a page in page_dir, by relative path."""
    rel = Path(os.path.relpath(script, page_dir)).as_posix()
    return f'<script src="{rel}" charset="utf-8"></script>'


def result_root(directory: Path, path: str) -> Path:
    """Return the result folder holding the test folder directory, whose path in it is ``path``.

    ``path`` is the test's ``meta.json`` path (``cca-cubic``, or nested
    ``experiment-cubic/cca-bbr``). A test folder that is not at that path
    (one test re-reported on its own is the top of its new result folder)
    is its own result folder.
    """
    parts = Path(path).parts if path else ()
    if parts and len(directory.parts) > len(parts) and directory.parts[-len(parts) :] == parts:
        return directory.parents[len(parts) - 1]
    return directory


def referenced(page: Path) -> str | None:
    """Return the plotly.js file name a page loads by relative path, or None (inline, or no chart)."""
    try:
        with open(page, "rb") as f:
            head = f.read(_HEAD_BYTES).decode("utf-8", "replace")
    except OSError:
        return None
    m = _SCRIPT_SRC.search(head)
    return m.group(1) if m else None


def link_referenced(root: Path, pages: list[Path]) -> list[str]:
    """Give the result folder root every plotly.js version its pages load; it returns what it could not.

    The installed plotly's version is written; another one root lacks
    (pages of a test linked from an older result folder) is hard-linked,
    else copied, from a sibling result folder that has it. Each problem is a sentence naming the version and a page that
    needs it.
    """
    problems = []
    wanted: dict[str, Path] = {}
    for page in pages:
        name = referenced(page)
        if name is not None:
            wanted.setdefault(name, page)
    current = plotly_js_name()
    for name, page in sorted(wanted.items()):
        target = root / name
        if target.exists():
            continue
        if name == current:
            write_plotly_js(root)
            continue
        source = next((p for p in sorted(root.parent.glob(f"*/{name}")) if p.parent != root), None)
        if source is None:
            problems.append(f"{name} is missing: {page.relative_to(root).as_posix()} and pages like it cannot draw")
            continue
        try:
            os.link(source, target)
        except FileExistsError:
            pass
        except OSError:
            shutil.copyfile(source, target)
    return problems
