"""The command's launchers: :class:`Launchers` (local, SSH and Ray nodes) and :class:`TestLaunch`.

:class:`Launchers` adds Ray to process_launchers.ProcessLaunchers; one
instance serves a whole command, and :class:`TestLaunch` keeps one test's
node facts apart when tests run at once. Ray is imported only when a test
has a Ray node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from antler.node.launch.errors import ClusterError
from antler.node.launch.process_launchers import Facts, ProcessLaunchers, flat_facts
from antler.node.nodespec import Node
from antler.node.recorder import Sink
from antler.node.run import Losable, NodeHandle

if TYPE_CHECKING:
    from antler.node.launch.ray import RayLaunch
    from antler.node.launch.ray.cluster import RaySession


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
