"""The node executable shipped to SSH hosts: a zipapp of the running package (antler's ``ExeSource``).

It holds the pure-Python code a node imports (``antler/__init__.py``,
``antler/lazy.py`` and ``antler/node/`` but its Ray launcher) and a
``__main__.py`` that checks the host's Python (3.11 or newer) and the node's
dependencies (numpy, pyarrow) before anything else, so a host that lacks one
fails with a line that names it (exit status :data:`EXIT_MISSING`) rather than
a traceback. It is built once per process, byte for byte the same for the same
code (sorted entries, fixed times), so its SHA-256 names it in the host's
cache and an unchanged release is never uploaded twice. A node that itself
runs from the zipapp ships the zipapp it runs from.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import antler
from antler.node.launch.local import running_archive

EXIT_MISSING = 3
"""EXIT_MISSING is the node zipapp's exit status when the host lacks Python 3.11 or a dependency."""
DEPENDENCIES = ("numpy", "pyarrow")
"""DEPENDENCIES are the packages a node imports beyond the standard library (the host must have them)."""
_LEAVE_OUT = ("node/launch/ray/",)
"""_LEAVE_OUT are the folders of modules a node never imports: the Ray launcher's (a node process is not in a Ray cluster)."""

BOOTSTRAP = f'''"""An antler node: python3 THIS.pyz NODE_ID serves its parent on stdin and stdout."""
import sys

if sys.version_info < (3, 11):
    sys.stderr.write(
        "antler node: this host's python is %d.%d; the node needs Python 3.11 or newer\\n" % sys.version_info[:2]
    )
    sys.exit({EXIT_MISSING})
import importlib.util

missing = [m for m in {DEPENDENCIES!r} if importlib.util.find_spec(m) is None]
if missing:
    sys.stderr.write(
        "antler node: Python packages missing on this host: %s (install them for %s, e.g. "
        "python3 -m pip install %s; see the README)\\n" % (", ".join(missing), sys.executable, " ".join(missing))
    )
    sys.exit({EXIT_MISSING})
from antler.node.process import main

sys.exit(main())
'''


@dataclass(frozen=True)
class NodeApp:
    """The node zipapp: its bytes and their SHA-256 (hex)."""

    data: bytes
    sha256: str

    @property
    def name(self) -> str:
        """The zipapp's file name in a host's cache: its hash, so versions never collide."""
        return f"antler-node-{self.sha256[:16]}.pyz"


_lock = threading.Lock()
_built: NodeApp | None = None


def node_app() -> NodeApp:
    """Return the node zipapp of the running code, built on first use."""
    global _built
    with _lock:
        if _built is None:
            archive = running_archive()
            data = Path(archive).read_bytes() if archive else build()
            _built = NodeApp(data, hashlib.sha256(data).hexdigest())
        return _built


def build() -> bytes:
    """Zip the node's modules of the installed package and the bootstrap, reproducibly."""
    root = Path(antler.__file__).resolve().parent
    files = [root / "__init__.py", root / "lazy.py"]
    files += [p for p in (root / "node").rglob("*.py") if "__pycache__" not in p.parts]
    entries = {"__main__.py": BOOTSTRAP.encode()}
    for p in files:
        rel = p.relative_to(root).as_posix()
        if not rel.startswith(_LEAVE_OUT):
            entries[f"antler/{rel}"] = p.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, entries[name])
    return out.getvalue()
