"""The launchers: :class:`ProcessLaunchers` for nodes that are processes of their own (local and SSH),
:class:`Launchers` for the command (Ray too), and the facts of the nodes they launched.

A node process (node.process) and a Ray node (launch.ray.actor) launch the local and
SSH nodes under them with :class:`ProcessLaunchers`; the command's :class:`Launchers`
adds Ray to it, and :class:`TestLaunch` keeps one test's facts apart when
tests run at once. Each remembers the facts of each node it launched (launcher,
host, namespace, clock offset), and of the nodes those launched in turn, for
the test's meta.json. Each launcher's module loads on first use: paramiko
only when there is an SSH node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from antler.node.launch.errors import ClusterError
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import Losable, NodeHandle

if TYPE_CHECKING:
    from antler.node.launch.ray import RayLaunch
    from antler.node.launch.ray.cluster import RaySession
    from antler.node.launch.ssh import SSHLaunch


Facts = list[tuple[dict[str, Any], NodeHandle | None]]
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


class Launchers(ProcessLaunchers):
    """Starts each node with the launcher its spec names, Ray included; call it as a ``Launch``."""

    def __init__(self, ray_address: str | None = None, reuse: bool = False) -> None:
        """With ``reuse``, a Ray node's actor process serves the next test once its node is closed (see RayLaunch)."""
        super().__init__()
        self.ray_address = ray_address
        self.reuse = reuse
        self._session: RaySession | None = None
        self._ray: RayLaunch | None = None

    async def _launch(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        if node.launcher.name != "ray":
            return await super()._launch(node, sink, nodes)
        handle: NodeHandle = await self._ray_launch().launch(node, sink, nodes)
        return handle

    def for_test(self) -> TestLaunch:
        """Return a Launch for one test among several running at once, keeping that test's facts apart."""
        return TestLaunch(self)

    def start(self, nodes: Iterable[Node]) -> None:
        """Connect to Ray now if any of the nodes needs it (blocking, on the calling thread).

        The command calls it before its event loop starts, so Ray's start-up
        (seconds) overlaps the rest of the tool's imports instead of following them.
        """
        if any(n.launcher.name == "ray" for n in nodes):
            self.connect()

    def connect(self) -> None:
        """Connect to Ray now, whatever the nodes (blocking, on the calling thread).

        Raises ClusterError when the cluster cannot be joined (e.g. its token is missing).
        """
        self._ray_launch()
        assert self._session is not None
        from antler.node.launch.ray.cluster import JoinError

        try:
            self._session.ensure()
        except JoinError as e:
            raise ClusterError(str(e)) from None

    def hosts(self) -> dict[str, str]:
        """Map the cluster's host names (``host:NAME`` resources) to their Ray node IDs (connecting first)."""
        self.connect()
        from antler.node.launch.ray.cluster import cluster_hosts

        return cluster_hosts()

    def forget_host(self, host: str) -> None:
        """End the idle actors kept for reuse on a host that was lost."""
        if self._ray is not None:
            self._ray.forget_host(host)

    def _ray_launch(self) -> RayLaunch:
        # Ray is imported only when a test has a Ray node: a test without
        # children never pays for it.
        if self._ray is None:
            from antler.node.launch.ray import RayLaunch
            from antler.node.launch.ray.cluster import RaySession

            self._session = RaySession(self.ray_address)
            self._ray = RayLaunch(self._session, reuse=self.reuse)
        return self._ray

    def close(self) -> None:
        """End the actors kept for reuse and shut down an embedded Ray this launcher started."""
        if self._ray is not None:
            self._ray.close()
        if self._session is not None:
            self._session.shutdown()


class TestLaunch:
    """Launches the nodes of one test through shared Launchers, keeping that test's node facts.

    Tests that run at once each take their own, so meta.json lists only the
    test's own nodes; ``lost_hosts`` names the hosts where one of its nodes was
    lost (its actor or host died), which a sweep then stops using.
    """

    __test__ = False  # not a pytest test class, despite its name

    def __init__(self, launchers: Launchers) -> None:
        self._launchers = launchers
        self._facts: Facts = []
        self._handles: list[NodeHandle] = []

    async def __call__(self, node: Node, sink: Sink, nodes: dict[Node, NodeHandle]) -> NodeHandle:
        """Call launches the node."""
        handle = await self._launchers.launch_into(self._facts, node, sink, nodes)
        self._handles.append(handle)
        return handle

    def take_facts(self) -> list[dict[str, Any]]:
        """Return the facts of the test's nodes launched since the last call (see flat_facts)."""
        facts, self._facts = flat_facts(self._facts), []
        return facts

    def lost_hosts(self) -> set[str]:
        """Name the hosts on which a node of the test was lost."""
        return {
            str(getattr(h, "facts", {}).get("host", ""))
            for h in self._handles
            if isinstance(h, Losable) and h.lost is not None and h.lost.done()
        } - {""}
