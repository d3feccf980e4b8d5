"""Launchers: how a node named in a child run is started.

:class:`Launchers` picks the launcher the node's spec names (``ray`` unless
another is set: ray.py, local.py, ssh.py) and remembers the facts of each node
it launched (launcher, host, namespace, clock offset), and of the nodes those
launched in turn, for the test's meta.json. One instance serves a whole
command (the SSH node code is built once for it); ``close`` shuts down an
embedded Ray it started. Each launcher's module loads on first use: a node
process never imports Ray, paramiko only if it has SSH nodes of its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle

if TYPE_CHECKING:
    from antler.node.launch.ray import RayLaunch, RaySession
    from antler.node.launch.ssh import SSHLaunch


@runtime_checkable
class ReportsFacts(Protocol):
    """ReportsFacts is a launcher that remembers where each node it launched ran, for meta.json."""

    def take_facts(self) -> list[dict[str, Any]]:
        """Take_facts returns the facts of the nodes launched since the last call (host, namespace, clock offset)."""
        ...


class Launchers:
    """Launchers starts each node with the launcher its spec names; call it as a ``Launch``."""

    def __init__(self, ray_address: str | None = None) -> None:
        self.ray_address = ray_address
        self._session: RaySession | None = None
        self._ray: RayLaunch | None = None
        self._ssh: SSHLaunch | None = None
        self._facts: list[tuple[dict[str, Any], NodeHandle | None]] = []

    async def __call__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        """Call launches the node."""
        name = node.launcher.name
        # In launch order, though launches run concurrently and end in any order.
        facts: dict[str, Any] = {"id": node.id, "launcher": name}
        at = len(self._facts)
        self._facts.append((facts, None))
        try:
            handle: NodeHandle
            if name == "local":
                from antler.node.launch.local import launch_local

                handle = await launch_local(node, sink)
            elif name == "ssh":
                handle = await self._ssh_launch().launch(node, sink)
            else:
                handle = await self._ray_launch().launch(node, sink, nodes)
        except Exception as e:
            facts["error"] = str(e)
            raise
        facts.update(getattr(handle, "facts", {}))
        self._facts[at] = (facts, handle)
        return handle

    def start(self, nodes: Iterable[Node]) -> None:
        """Start connects to Ray now if any of the nodes needs it (blocking, on the calling thread).

        The command calls it before its event loop starts, so Ray's start-up
        (seconds) overlaps the rest of the tool's imports instead of following them.
        """
        if any(n.launcher.name == "ray" for n in nodes):
            self._ray_launch()
            assert self._session is not None
            self._session.ensure()

    def _ray_launch(self) -> RayLaunch:
        # Ray is imported only when a test has a Ray node: a test without
        # children never pays for it.
        if self._ray is None:
            from antler.node.launch.ray import RayLaunch, RaySession

            self._session = RaySession(self.ray_address)
            self._ray = RayLaunch(self._session)
        return self._ray

    def _ssh_launch(self) -> SSHLaunch:
        if self._ssh is None:
            from antler.node.launch.ssh import SSHLaunch

            self._ssh = SSHLaunch()
        return self._ssh

    def take_facts(self) -> list[dict[str, Any]]:
        """Take_facts returns the facts of the nodes launched since the last call.

        Each node comes with, after it, the facts of the nodes it launched
        itself (``parent`` names it; their clock offsets are against this
        process's clock).
        """
        out: list[dict[str, Any]] = []
        for facts, handle in self._facts:
            out.append(facts)
            out.extend(getattr(handle, "below_facts", []))
        self._facts = []
        return out

    def close(self) -> None:
        """Close shuts down an embedded Ray this launcher started."""
        if self._session is not None:
            self._session.shutdown()


def ray_address(config: dict[str, Any]) -> str | None:
    """Ray_address is the cluster address the config names (``ray.address``), or None."""
    section = config.get("ray") or {}
    address = section.get("address") if isinstance(section, dict) else None
    return str(address) if address else None
