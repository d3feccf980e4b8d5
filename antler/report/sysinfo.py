"""System information pages: ``sysinfo_<node>.html`` from what the sysinfo runner gathered."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from antler.node.secrets import mask_env
from antler.report.html import page

SECTIONS = {
    "hostname": "Host",
    "os": "Operating system",
    "kernel": "Kernel",
    "python": "Python",
    "cpus": "CPUs",
    "command": "Commands",
    "file": "Files",
    "env": "Environment variables",
    "sysctl": "Sysctls",
}
"""SECTIONS are the known keys of a SysInfo's data and their headings, in page order."""


def sysinfo_html(node_id: str, data: dict[str, Any]) -> str:
    """Render one node's system information as a page."""
    parts = []
    keys = [k for k in SECTIONS if k in data] + sorted(k for k in data if k not in SECTIONS)
    for key in keys:
        value = data[key]
        if key == "env" and isinstance(value, dict):
            # Results recorded before masking may hold a secret's value: the page never shows it.
            value = mask_env({str(k): str(v) for k, v in value.items()})
        parts.append(f"<h2>{html.escape(SECTIONS.get(key, key))}</h2>")
        if isinstance(value, dict):
            if key in ("env", "sysctl"):
                rows = "".join(
                    f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in value.items()
                )
                parts.append(f"<table>{rows}</table>")
            else:
                for k, v in value.items():
                    parts.append(f"<h3>{html.escape(str(k))}</h3><pre>{html.escape(str(v))}</pre>")
        else:
            parts.append(f"<pre>{html.escape(str(value))}</pre>")
    return page(f"System information: node {node_id}", "".join(parts))


def emit_sysinfo(directory: Path, to: str) -> list[Path]:
    """Render every ``sysinfo_<node>.json`` in directory to the name pattern ``to``."""
    written = []
    for src in sorted(directory.glob("sysinfo_*.json")):
        node_id = src.stem.removeprefix("sysinfo_")
        path = directory / to.format(node=node_id)
        with open(path, "x") as f:
            f.write(sysinfo_html(node_id, json.loads(src.read_text())))
        written.append(path)
    return written
