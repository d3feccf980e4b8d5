"""Checks of a test against this host's kernel, made before anything is built: the CCAs its flows ask for.

A stream flow's ``cca`` is set with TCP_CONGESTION by its sender; a kernel
that lacks it refuses the option, which the runner reports only once the rig
is built and the flow starts (issue 30: ``cca=bbr2`` passed ``vet``). The
available algorithms are a kernel's, shared by its network namespaces, so
for a flow whose sender runs on this host (a local, netns or Ray node not
pinned to another host) the check is exact. A sender on another host (an
SSH node, a Ray node pinned by ``host``) is checked there when the test
runs; the check says it could not check it here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from antler.node.nodespec import Node
from antler.node.run import Run
from antler.node.runners.stream.client import StreamClient
from antler.node.runners.stream.sock import available_ccas
from antler.node.spec import ConfigError


@dataclass(frozen=True)
class CCAUse:
    """A CCA a flow asks for: its config path, the CCA, and the node that sets it ("" where the server's end does)."""

    path: str
    cca: str
    node: Node | None
    remote: bool


def _remote(node: Node) -> bool:
    """_remote tells whether a node runs on another host than the driver's."""
    launcher = node.launcher
    return launcher.ssh is not None or (launcher.ray is not None and bool(launcher.ray.host))


def cca_uses(run: Run, path: str = "test.run", node: Node | None = None, remote: bool = False) -> Iterator[CCAUse]:
    """Yield each CCA a stream flow of the tree asks for, with the node whose kernel must offer it.

    An upload's sender is its client's node; a download's is the server's,
    which the tree does not name: it counts as remote when any node of the
    tree is.
    """
    for sub_path, r in run.walk(path):
        if r.child is not None or _inside_child(sub_path, path):
            continue  # walked below, with its node
        found = r.runner()
        if found is not None and isinstance(found[1], StreamClient):
            client = found[1]
            if client.upload is not None and client.upload.cca:
                yield CCAUse(f"{sub_path}.stream_client.upload.cca", client.upload.cca, node, remote)
            if client.download is not None and client.download.cca:
                anywhere_remote = remote or any(_remote(n) for n in run.nodes())
                yield CCAUse(f"{sub_path}.stream_client.download.cca", client.download.cca, None, anywhere_remote)
    for sub_path, r in _child_runs(run, path):
        assert r.child is not None and r.child.node is not None
        child = r.child.node
        yield from cca_uses(r.child.as_run(), f"{sub_path}.child", child, remote or _remote(child))


def _child_runs(run: Run, path: str) -> Iterator[tuple[str, Run]]:
    """_child_runs yields the runs with a child node directly below run (not inside another child)."""
    for sub_path, r in run.walk(path):
        if r.child is not None and r.child.node is not None and not _inside_child(sub_path, path):
            yield sub_path, r


def _inside_child(sub_path: str, path: str) -> bool:
    return ".child" in sub_path[len(path) :]


def check_ccas(run: Run, available: Callable[[], list[str]] = available_ccas) -> list[str]:
    """Raise ConfigError for the first CCA this host's kernel lacks that a sender here asks for.

    Returns a note per CCA it cannot check (its sender on another host). A
    kernel whose list cannot be read checks nothing (also noted).
    """
    uses = list(cca_uses(run))
    offered = available() if uses else []
    notes = []
    for use in uses:
        if use.remote:
            where = f"node {use.node.id!r}" if use.node is not None else "the stream server's node"
            notes.append(f"{use.path}: {use.cca!r} cannot be checked here ({where} may be another host): run checks it")
        elif not offered:
            notes.append(f"{use.path}: {use.cca!r} not checked (this host's kernel lists no congestion controls)")
        elif use.cca not in offered:
            raise ConfigError(
                use.path,
                f"{use.cca!r} is not a congestion control this host's kernel offers ({' '.join(offered)}); "
                "load its module (modprobe tcp_NAME) or choose one of those",
            )
    return notes
