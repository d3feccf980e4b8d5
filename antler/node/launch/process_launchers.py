"""The launchers of nodes that are processes of their own (local and SSH), and the facts of the nodes they launched.

A node process (node.process) and a Ray node (launch.ray.actor) launch the local and
SSH nodes under them with :class:`ProcessLaunchers`; the command's Launchers
(launchers.py) adds Ray to it. Each remembers the facts of each node it
launched (launcher, host, namespace, clock offset), and of the nodes those
launched in turn, for the test's meta.json. The SSH launcher's module loads
on first use: paramiko only when there is an SSH node.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import NodeHandle

if TYPE_CHECKING:
    from antler.node.launch.ssh import SSHLaunch


Facts = list[tuple[dict[str, Any], Optional[NodeHandle]]]
"""Facts is what a launcher remembers of the nodes it launched: each node's facts and, once up, its handle."""


class ProcessLaunchers:
    """Starts local and SSH nodes; call it as a ``Launch``.

    One instance serves a whole command (the SSH node code is built once for it).
    """

    def __init__(self) -> None:
        self._ssh: SSHLaunch | None = None
        self._facts: Facts = []

    async def __call__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        """Call launches the node with the launcher its spec names."""
        return await self.launch_into(self._facts, node, sink, nodes)

    async def launch_into(self, into: Facts, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        """Launch the node, appending its facts to into (a test's own list, when tests run at once)."""
        # In launch order, though launches run concurrently and end in any order.
        facts: dict[str, Any] = {"id": node.id, "launcher": node.launcher.name}
        at = len(into)
        into.append((facts, None))
        try:
            handle = await self._launch(node, sink, nodes)
        except Exception as e:
            facts["error"] = str(e)
            raise
        facts.update(getattr(handle, "facts", {}))
        into[at] = (facts, handle)
        return handle

    async def _launch(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        name = node.launcher.name
        if name == "local":
            from antler.node.launch.local import launch_local

            return await launch_local(node, sink)
        if name == "ssh":
            if self._ssh is None:
                from antler.node.launch.ssh import SSHLaunch

                self._ssh = SSHLaunch()
            return await self._ssh.launch(node, sink)
        raise ValueError(f"node {node.id!r}: a {name} node cannot be launched from here (only local and ssh)")

    def take_facts(self) -> list[dict[str, Any]]:
        """Return the facts of the nodes launched since the last call (see :func:`flat_facts`)."""
        facts, self._facts = flat_facts(self._facts), []
        return facts


def flat_facts(facts: Facts) -> list[dict[str, Any]]:
    """List each node's facts followed by the facts of the nodes it launched itself.

    Those name it as their ``parent``; their clock offsets are against its clock.
    """
    out: list[dict[str, Any]] = []
    for node_facts, handle in facts:
        out.append(node_facts)
        out.extend(getattr(handle, "below_facts", []))
    return out


@runtime_checkable
class ReportsFacts(Protocol):
    """A launcher that remembers where each node it launched ran, for meta.json."""

    def take_facts(self) -> list[dict[str, Any]]:
        """Return the facts of the nodes launched since the last call (host, namespace, clock offset)."""
        ...
