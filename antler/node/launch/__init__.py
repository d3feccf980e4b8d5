"""Launchers: how a node named in a child run is started.

:class:`Launchers` picks the launcher the node's spec names (``ray`` unless
another is set: ray.py, local.py, ssh.py) and remembers the facts of each node
it launched (launcher, host, namespace, clock offset), and of the nodes those
launched in turn, for the test's meta.json (launchers.py). One instance serves
a whole command; ``close`` shuts down an embedded Ray it started. Ray is
imported only when a test has a Ray node; a node process launches its own
nodes with :class:`ProcessLaunchers` and never imports it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from antler.node.launch.launchers import ProcessLaunchers
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle

if TYPE_CHECKING:
    from antler.node.launch.ray import RayLaunch, RaySession


@runtime_checkable
class ReportsFacts(Protocol):
    """ReportsFacts is a launcher that remembers where each node it launched ran, for meta.json."""

    def take_facts(self) -> list[dict[str, Any]]:
        """Take_facts returns the facts of the nodes launched since the last call (host, namespace, clock offset)."""
        ...


class Launchers(ProcessLaunchers):
    """Launchers starts each node with the launcher its spec names, Ray included; call it as a ``Launch``."""

    def __init__(self, ray_address: str | None = None) -> None:
        super().__init__()
        self.ray_address = ray_address
        self._session: RaySession | None = None
        self._ray: RayLaunch | None = None

    async def _launch(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        if node.launcher.name != "ray":
            return await super()._launch(node, sink, nodes)
        handle: NodeHandle = await self._ray_launch().launch(node, sink, nodes)
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

    def close(self) -> None:
        """Close shuts down an embedded Ray this launcher started."""
        if self._session is not None:
            self._session.shutdown()


def ray_address(config: dict[str, Any]) -> str | None:
    """Ray_address is the cluster address the config names (``ray.address``), or None."""
    section = config.get("ray") or {}
    address = section.get("address") if isinstance(section, dict) else None
    return str(address) if address else None
