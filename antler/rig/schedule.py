"""A path that changes during the test: ``rig.schedule``, steps of rate, RTT and loss at given times.

Each step is ``{at: DURATION, rate: RATE, rtt: DURATION, loss: PROBABILITY}``
with any subset of the last three, ``at`` counted from the end of the rig's
set-up (the moment the test's own runs begin)::

    rig:
      schedule:
        - {at: 10s, rate: 10mbit}          # both directions' bottlenecks drop to 10 Mbit/s
        - {at: 20s, rate: 50mbit, rtt: 80ms}
        - {at: 25s, loss: 100%}            # an outage towards right ...
        - {at: 26s, loss: 0}               # ... of one second
        - {at: 30s, rate: 0, direction: reverse}   # the reverse line stops (its queue holds, then drops)

``rate`` changes the bottleneck of each shaped direction (``direction:
forward`` or ``reverse`` picks one); ``rate: 0`` stops the line. ``rtt``
sets each direction's one-way delay to half of it. ``loss`` is the random
loss towards right, as ``rig.loss`` (towards left with ``direction:
reverse``). A kernel bottleneck changes with ``tc class change`` (htb), the
delay with ``tc qdisc change`` of netem or, on kernels without netem, a
message to the userspace delay link, which also changes its own bottleneck
at once. :func:`check_schedule` refuses a step the path cannot take, naming
it; :func:`plan` turns the steps into the actions of the process that
applies them (:mod:`antler.rig.schedule_run`), which records when each was
asked for and when it took effect (``rig_events.parquet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from antler.node.metric import Bitrate, Duration, Probability
from antler.node.spec import ConfigError, FieldError
from antler.rig.lanes import Lane

STEP_DIRECTIONS = ("both", "forward", "reverse")
"""STEP_DIRECTIONS are a step's ``direction`` values: which bottleneck a rate (or loss) changes."""
OUTAGE_BPS = 8
"""OUTAGE_BPS is the htb rate a kernel bottleneck gets for ``rate: 0`` (htb has no zero rate: 1 byte a second)."""


@dataclass(frozen=True)
class ScheduleStep:
    """One change of the path at ``at`` after set-up: a new rate, RTT or loss (any of them)."""

    at: Duration
    rate: Bitrate | None = None
    rtt: Duration | None = None
    loss: Probability | None = None
    direction: str = "both"

    def validate(self) -> None:
        """Require a time not below zero, at least one change, and a known direction."""
        if self.at.ns < 0:
            raise FieldError("at", f"{self.at} is before the test's start")
        if self.rate is None and self.rtt is None and self.loss is None:
            raise ValueError("a step changes at least one of rate, rtt and loss")
        if self.direction not in STEP_DIRECTIONS:
            raise FieldError("direction", f"{self.direction!r} must be both, forward or reverse")
        if self.rtt is not None and self.direction != "both":
            raise FieldError("direction", "rtt changes both directions (half each): leave direction out")
        if self.rate is not None and self.rate.bps < 0:
            raise FieldError("rate", f"{self.rate} is negative")

    def label(self) -> str:
        """Return the step as a chart label: ``rate 10 Mbit/s``, ``rtt 80 ms, loss 1%``."""
        parts = []
        if self.rate is not None:
            parts.append(f"rate {self.rate.bps / 1e6:g} Mbit/s" if self.rate.bps else "outage (rate 0)")
        if self.rtt is not None:
            parts.append(f"rtt {self.rtt.ns / 1e6:g} ms")
        if self.loss is not None:
            parts.append(f"loss {self.loss.p * 100:g}%")
        where = "" if self.direction == "both" else f" ({self.direction})"
        return ", ".join(parts) + where

    def facts(self) -> dict[str, Any]:
        """Return the step for meta.json (seconds, bit/s, milliseconds, probability)."""
        return {
            "at_s": self.at.ns / 1e9,
            "rate_bps": None if self.rate is None else self.rate.bps,
            "rtt_ms": None if self.rtt is None else self.rtt.ns / 1e6,
            "loss": None if self.loss is None else self.loss.p,
            "direction": self.direction,
            "label": self.label(),
        }


def rate_lanes(step: ScheduleStep, fwd: Lane, ret: Lane) -> list[Lane]:
    """Return the directions whose rate a step changes: those it names that a rate shapes."""
    named = [fwd, ret] if step.direction == "both" else [fwd if step.direction == "forward" else ret]
    return [lane for lane in named if lane.rate_bps and not lane.trace]


def check_schedule(steps: list[ScheduleStep], fwd: Lane, ret: Lane) -> None:
    """Check every step against the path's directions, raising ConfigError naming the step.

    Steps must be in time order; a rate needs a direction shaped by a rate
    (not unshaped, not replayed from a trace).
    """
    last = 0
    for i, step in enumerate(steps):
        where = f"rig.schedule[{i}]"
        if step.at.ns < last:
            raise ConfigError(f"{where}.at", f"{step.at} is before the step above it: steps go in time order")
        last = step.at.ns
        if step.rate is not None and not rate_lanes(step, fwd, ret):
            named = "either direction" if step.direction == "both" else f"the {step.direction} direction"
            raise ConfigError(
                f"{where}.rate", f"{step.rate}: {named} has no rate to change (unshaped, or paced by a trace)"
            )


@dataclass(frozen=True)
class Devices:
    """Where the schedule acts at mid: each direction's egress and TUN device, and netem's devices."""

    forward_egress: str
    reverse_egress: str
    forward_tun: str
    reverse_tun: str
    forward_netem: str
    reverse_netem: str
    netem_limit: int


def plan(steps: list[ScheduleStep], fwd: Lane, ret: Lane, emulator: str, devs: Devices) -> list[dict[str, Any]]:
    """Return the actions of each step for the schedule's process, as JSON-ready data.

    Each action is ``{at_ns, label, changes: [...]}``; a change is
    ``{what, direction, value, via, tc: [line, confirm]}`` for tc (a line for
    ``tc -batch`` and the ``show`` line whose answer confirms it) or
    ``{..., link: {dev, rate_bps | delay_ns | loss}}`` for the delay link.
    """
    state = {"forward": [fwd.delay_ns, fwd.loss], "reverse": [ret.delay_ns, ret.loss]}
    lanes = {"forward": fwd, "reverse": ret}
    egress = {"forward": devs.forward_egress, "reverse": devs.reverse_egress}
    tun = {"forward": devs.forward_tun, "reverse": devs.reverse_tun}
    netem = {"forward": devs.forward_netem, "reverse": devs.reverse_netem}
    out = []
    for step in steps:
        changes: list[dict[str, Any]] = []
        if step.rate is not None:
            for lane in rate_lanes(step, fwd, ret):
                change = {"what": "rate", "direction": lane.name, "value": step.rate.bps}
                if lane.where == "kernel":
                    bps = step.rate.bps or OUTAGE_BPS
                    dev = egress[lane.name]
                    line = f"class change dev {dev} parent 1: classid 1:1 htb rate {bps}bit ceil {bps}bit quantum 1514"
                    changes.append({**change, "via": "htb", "tc": [line, f"class show dev {dev} classid 1:1"]})
                else:
                    link = {"dev": tun[lane.name], "rate_bps": step.rate.bps}
                    changes.append({**change, "via": "userspace", "link": link})
        touched = []
        if step.rtt is not None:
            for name in lanes:
                state[name][0] = step.rtt.ns // 2
                touched.append((name, "rtt", step.rtt.ns / 1e6))
        if step.loss is not None:
            name = "reverse" if step.direction == "reverse" else "forward"
            state[name][1] = step.loss.p
            touched.append((name, "loss", step.loss.p))
        for name, what, value in touched:
            change = {"what": what, "direction": name, "value": value}
            delay_ns, loss = state[name]
            if emulator == "netem":
                dev = netem[name]
                words = f"delay {delay_ns // 1000}us limit {devs.netem_limit}" + (
                    f" loss {loss * 100:g}%" if loss else ""
                )
                changes.append(
                    {
                        **change,
                        "via": "netem",
                        "tc": [f"qdisc change dev {dev} root netem {words}", f"qdisc show dev {dev} root"],
                    }
                )
            else:
                field = {"rtt": ("delay_ns", delay_ns), "loss": ("loss", loss)}[what]
                changes.append({**change, "via": "tun", "link": {"dev": tun[name], field[0]: field[1]}})
        out.append({"at_ns": step.at.ns, "label": step.label(), "changes": changes})
    return out
