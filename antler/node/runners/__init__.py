"""Runners: one module per runner type, each a small ``run(ctx, feedback)`` protocol.

Beside the core :class:`Runner`, a runner may declare optional capabilities,
each a protocol of its own (as antler's ``canceler``, ``validater``, ...):

- :class:`antler.node.spec.Validates` and :class:`antler.node.spec.FromScalar`,
  checked by the config parser;
- :class:`Estimates`, its expected run time, for the progress line;
- :class:`DrivesFlow`, the flow it drives, which reports may name
  (antler.node.run.Run.flows);
- cancellation: a runner that leaves something running (a server, a
  background command) registers a canceler with ``ctx.on_cancel``.

The runner's type (its ``Run`` field name) is its tag: the executor hands each
runner a context whose recorder already carries it, so no runner spells it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from antler.node.context import Context
    from antler.node.feedback import Feedback


class Runner(Protocol):
    """One unit of work in a run tree; it returns feedback for later runs."""

    async def run(self, ctx: Context, feedback: Feedback) -> Feedback:
        """Do the work, raising on failure."""
        ...


@runtime_checkable
class Estimates(Protocol):
    """A runner that knows how long it should take."""

    def expected_seconds(self) -> float:
        """Return the runner's expected run time in seconds."""
        ...


@runtime_checkable
class DrivesFlow(Protocol):
    """A runner that drives one flow: a stream or a packet client.

    ``flow_kind`` is ``stream`` or ``packet``, as the ``kind`` column of
    flows.parquet says it.
    """

    flow_kind: ClassVar[str]

    @property
    def flow(self) -> str:
        """The flow's ID (antler.node.flow)."""
        ...
