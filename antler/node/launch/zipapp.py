"""The node executable shipped to SSH hosts: a zipapp of the running package (antler's ``ExeSource``).

It holds the pure-Python code a node imports (``antler/__init__.py``,
``antler/lazy.py`` and ``antler/node/`` but the driver's side of it: the Ray
launcher and the Arrow conversion) and a ``__main__.py`` that checks the
host's Python before anything else, so a host whose ``python3`` is older than
:data:`NODE_PYTHON` fails with a line that names the version found and the
one needed (exit status :data:`EXIT_MISSING`) rather than a traceback. The
node needs nothing but that Python's standard library: no package is asked of
the host. On its first start on a host the zipapp unpacks itself into a
folder beside it (``antler-node-HASH``), and runs from there: Python caches
the modules' bytecode in it, where from the archive it would compile every
module at every start (about half a node's start-up). It is built once per process, byte for byte the same for the same
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
"""EXIT_MISSING is the node zipapp's exit status when the host's Python is older than NODE_PYTHON."""
NODE_PYTHON = (3, 9)
"""NODE_PYTHON is the oldest Python a node process runs on (with its standard library alone)."""
LEAVE_OUT = ("node/launch/ray/", "node/arrow.py", "node/schemas.py")
"""LEAVE_OUT are the modules a node never imports: the Ray launcher's (a node process is not in a Ray cluster)
and the Arrow side of the samples (the parent builds the record batches)."""

BOOTSTRAP = f'''"""An antler node: python3 THIS.pyz NODE_ID serves its parent on stdin and stdout.

Kept parseable by any Python (no f-strings), so a too-old one reaches the
version check and says so. The archive's files are unpacked once into a
folder beside it (THIS without .pyz), so Python caches their bytecode
there instead of compiling every module at every start.
"""
import os
import sys

if sys.version_info < {NODE_PYTHON!r}:
    sys.stderr.write(
        "antler node: this host's python is %d.%d (%s); the node needs Python {NODE_PYTHON[0]}.{NODE_PYTHON[1]} or newer\\n"
        % (sys.version_info[0], sys.version_info[1], sys.executable)
    )
    sys.exit({EXIT_MISSING})


def _unpacked(archive):
    folder = archive[:-4] if archive.endswith(".pyz") else archive + ".d"
    if os.path.isfile(os.path.join(folder, "__main__.py")):
        return folder
    import shutil
    import tempfile
    import zipfile

    tmp = None
    try:
        tmp = tempfile.mkdtemp(prefix=".unpack-", dir=os.path.dirname(archive) or ".")
        with zipfile.ZipFile(archive) as z:
            z.extractall(tmp)
        os.rename(tmp, folder)  # atomic: another node unpacking at once finds it whole or not at all
        return folder
    except OSError:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder if os.path.isfile(os.path.join(folder, "__main__.py")) else None


if os.path.isfile(sys.path[0]):
    folder = _unpacked(sys.path[0])
    if folder is not None:
        sys.path[0] = folder
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
        if not rel.startswith(LEAVE_OUT):
            entries[f"antler/{rel}"] = p.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, entries[name])
    return out.getvalue()
