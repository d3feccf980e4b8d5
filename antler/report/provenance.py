"""Provenance in short: the one line the pages and ``antler-ray results --provenance`` show of meta.json ``provenance``.

The provenance itself is gathered by antler.invoke.provenance (the host)
and antler.rig.snapshot (the rig's namespaces, read back while it is up).
"""

from __future__ import annotations

import html
from typing import Any

FEATURES = {
    "tcp-segmentation-offload": "tso",
    "generic-segmentation-offload": "gso",
    "generic-receive-offload": "gro",
    "large-receive-offload": "lro",
    "rx-gro-list": "gro-list",
}
"""FEATURES are the short names of the offloads (antler.rig.snapshot.OFFLOADS)."""


def short(prov: dict[str, Any]) -> str:
    """Return the provenance as one line: version and commit, kernel, CPU, clocksource, the rig's CCA and offloads."""
    a = prov.get("antler_ray", {})
    commit = (a.get("commit") or "no git")[:10]
    dirty = " (dirty)" if a.get("dirty") else ""
    cpu = prov.get("cpu", {})
    parts = [
        f"antler-ray {a.get('version', '?')} {commit}{dirty}",
        f"kernel {prov.get('kernel', {}).get('release', '?')}",
        f"{cpu.get('cpus', '?')} x {cpu.get('model', '?')} ({cpu.get('governor', '?')})",
        f"clocksource {prov.get('clocksource', '?')}",
    ]
    rig = prov.get("rig") or {}
    sysctls = rig.get("sysctls") or {}
    ccas = sorted({s.get("net.ipv4.tcp_congestion_control", "?") for s in sysctls.values()})
    if ccas:
        parts.append(f"default cca {','.join(ccas)}")
    offloads = rig.get("offloads") or {}
    on = []
    for dev, feats in sorted(offloads.items()):
        names = [FEATURES.get(k, k) for k, v in feats.items() if v == "on"]
        if names:
            on.append(f"{dev} {'+'.join(names)}")
    if offloads:
        parts.append(f"offloads on: {', '.join(on) if on else 'none'}")
    return "; ".join(parts)


def provenance_html(prov: dict[str, Any] | None) -> str:
    """Return a page's provenance line ("" when the test recorded none)."""
    if not prov:
        return ""
    return f'<p class="id">Provenance: {html.escape(short(prov))} (all of it: meta.json)</p>'
