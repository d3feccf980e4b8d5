"""How a run tree executes: serial, parallel and scheduled runs, runners, and why what stops stopped.

Execution is structured concurrency on asyncio: serial stops at the first
failure; parallel runs its children in a TaskGroup, so the first failure
cancels the siblings; a schedule starts its runs after waits. Cancellation is
never swallowed, and each node's cancelers run when the whole test completes
(:class:`~antler.node.runtime.NodeRuntime`).

Nothing stops silently. A runner that is canceled logs that it was and why
(the sibling that failed first, or why the test is ending: a
:class:`~antler.node.run.StopScope` per parallel and per node carries the
reason, read with :func:`~antler.node.run.cancel_reason`), runs that never
start log that they did not, and every flow a client runner names gets a
:class:`~antler.node.items.FlowStatus`: ok, failed with its error, or
cancelled with the reason. A runner still running when the test times out
records an Error instead of a log line: it is what held the test up.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING

import antler.node.compat as compat
from antler.node.feedback import Feedback, FeedbackConflict, merge
from antler.node.items import FLOW_CANCELLED, FLOW_FAILED, FLOW_OK, FlowStatus, RunnerError, now
from antler.node.run import Children, Run, StopScope, cancel_reason, current_scope, enter_scope, timed_out
from antler.node.runners import DrivesFlow
from antler.node.spec import first_line, set_fields

if TYPE_CHECKING:
    from antler.node.context import Context


async def execute(run: Run, ctx: Context, feedback: Feedback, children: Children) -> Feedback:
    """Run a tree on the node of ctx and return the merged feedback of its runs.

    ``children`` holds the handles of the nodes its child runs name. A runner
    runs with ``ctx`` tagged with its type; an exception it raises is
    recorded once as an Error under that tag and re-raised as RunnerError.
    """
    if run.serial is not None:
        return await _serial(run.serial, ctx, feedback, [0.0] * len(run.serial), children)
    if run.parallel is not None:
        return await _parallel(run.parallel, ctx, feedback, [0.0] * len(run.parallel), children)
    if run.schedule is not None:
        s = run.schedule
        waits = list(s.waits())
        if s.sequential:
            return await _serial(s.run, ctx, feedback, waits, children)
        return await _parallel(s.run, ctx, feedback, waits, children)
    if run.child is not None:
        assert run.child.node is not None
        handle = children[run.child.node]
        return await handle.run(run.child.as_run(), feedback)
    found = run.runner()
    if found is None:
        return {}
    tag, runner = found
    rctx = ctx.for_runner(tag)
    flow = runner.flow if isinstance(runner, DrivesFlow) else None
    try:
        out = await runner.run(rctx, feedback)
    except asyncio.CancelledError:
        reason = cancel_reason()
        of_flow = f" (flow {flow})" if flow else ""
        if timed_out(reason):
            # Still running at the timeout: this is what held the test up, and an Error names it.
            rctx.rec.error(f"still running{of_flow} when {reason}")
        else:
            rctx.rec.log(f"canceled{of_flow}: {reason}")
        _flow_status(rctx, flow, FLOW_CANCELLED, reason)
        raise
    except RunnerError as e:
        _flow_status(rctx, flow, FLOW_FAILED, str(e))
        raise
    except Exception as e:
        message = str(e) or type(e).__name__
        err = rctx.rec.error(message)
        _flow_status(rctx, flow, FLOW_FAILED, message)
        raise RunnerError(message, err) from e
    _flow_status(rctx, flow, FLOW_OK)
    return out


def _flow_status(ctx: Context, flow: str | None, status: str, message: str = "") -> None:
    if flow is not None:
        ctx.rec.send(FlowStatus(now(), ctx.node_id, flow, status, message))


def describe(run: Run) -> str:
    """Name a run for a log line: its runner and flow (``stream_client flow up``), node, or kind."""
    found = run.runner()
    if found is not None:
        tag, runner = found
        return f"{tag} flow {runner.flow}" if isinstance(runner, DrivesFlow) else tag
    if run.child is not None and run.child.node is not None:
        return f"{describe(run.child.as_run())} on node {run.child.node.id}"
    kinds = set_fields(run)
    return kinds[0] if kinds else "an empty run"


def _failure(r: Run, e: BaseException) -> str:
    """_failure is why a run failed, as the reason its siblings stop: the first leaf error's first line."""
    while isinstance(e, compat.BaseExceptionGroup) and e.exceptions:
        e = e.exceptions[0]
    return f"{describe(r)} failed: {first_line(e)}"


def _not_started(ctx: Context, runs: tuple[Run, ...], reason: str) -> None:
    """_Not_started logs the runners of runs that will never start, and records their flows as cancelled."""
    names = Counter(describe(r) for run in runs for _, r in run.walk() if r.runner() is not None)
    flows = sorted({flow for run in runs for flow in run.flows()})
    if not names:
        return
    what = ", ".join(name if n == 1 else f"{n} x {name}" for name, n in names.items())
    ctx.rec.log(f"not started: {what} ({reason})", "run")
    for flow in flows:
        _flow_status(ctx, flow, FLOW_CANCELLED, f"never started: {reason}")


async def _serial(
    runs: tuple[Run, ...], ctx: Context, feedback: Feedback, waits: list[float], children: Children
) -> Feedback:
    out: Feedback = {}
    for i, (r, wait) in enumerate(zip(runs, waits)):
        started = False
        try:
            if wait > 0:
                await asyncio.sleep(wait)
            started = True
            got = await execute(r, ctx, _merge(ctx, feedback, out), children)
            out = _merge(ctx, out, got)
        except asyncio.CancelledError:
            _not_started(ctx, runs[i + (1 if started else 0) :], cancel_reason())
            raise
        except Exception as e:
            _not_started(ctx, runs[i + 1 :], _failure(r, e))
            raise
    return out


async def _parallel(
    runs: tuple[Run, ...], ctx: Context, feedback: Feedback, waits: list[float], children: Children
) -> Feedback:
    scope = StopScope(parent=current_scope())

    async def after(delay: float, r: Run) -> Feedback:
        enter_scope(scope)  # this task's own copy of the context
        started = False
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            started = True
            return await execute(r, ctx, feedback, children)
        except asyncio.CancelledError:
            if not started:
                _not_started(ctx, (r,), cancel_reason())
            raise
        except Exception as e:
            # Recorded before the task group cancels the siblings, so they can say why.
            scope.stop(_failure(r, e))
            raise

    tasks: list[asyncio.Task[Feedback]] = []
    start = 0.0
    async with compat.TaskGroup() as tg:
        for r, wait in zip(runs, waits):
            start += wait
            tasks.append(tg.create_task(after(start, r)))
    return _merge(ctx, *(t.result() for t in tasks))


def _merge(ctx: Context, *parts: Feedback) -> Feedback:
    try:
        return merge(*parts)
    except FeedbackConflict as e:
        raise RunnerError(str(e), ctx.rec.error(str(e), "run")) from None
