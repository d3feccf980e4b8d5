"""Seeded OmegaConf resolvers for random workloads: lengths, arrivals, and runs built from a template.

Experiments draw flow lengths and waits from these at composition time, so
the drawn values are in the resolved config (``config.yaml``, ``meta.json``)
and the same ``seed`` gives the same test (in each repetition of
``sweep.repeat`` a different one, see :func:`_rng`)::

    fct:
      lengths: ${lognormal:${seed},40,64K,2M}      # P5 = 64 KB, P95 = 2 MB
      waits: ${exponential:${seed},40,250ms}       # mean 250 ms: Poisson arrivals
      ccas: ${cycle:40,[cubic,bbr]}
    test:
      run:
        schedule:
          wait: ${fct.waits}
          run: ${each:${fct.template},{length: ${fct.lengths}, cca: ${fct.ccas}}}

Values an experiment hands straight to another tool's command line go through
a resolver that parses them as this tool does and prints the other tool's own
unambiguous spelling, so ``low_rate: 10MB/s`` reaches ``tc`` as
``80000000bit`` (``mbps`` would be megabytes there) and ``duration: 10s``
reaches ``iperf3 -t`` as ``10``::

    system: {command: "tc class change ... rate ${tc_rate:${low_rate}}"}
    system: {command: "iperf3 -c ... -t ${whole_seconds:${duration}}"}
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from antler.node.metric import Bitrate, Bytes, Duration

Z95 = 1.6448536269514722
"""Z95 is the standard normal quantile at 0.95: P5 and P95 are mu -/+ Z95 sigma."""


REP = "rep"
"""REP is the root config key antler.config.compose sets to a test's repetition (1..sweep.repeat)."""


def _rng(seed: Any, salt: str, root: Any = None) -> random.Random:
    """_rng is the generator of one draw: seeded by seed, the draw's kind and the test's repetition.

    Salted, so lengths and waits drawn with the same seed are independent.
    Repetition 1 (and a test without repetitions) draws what it always has;
    repetition k > 1 draws from ``seed:rep<k>:salt``, so each repetition
    differs and each is repeatable.
    """
    rep = root.get(REP) if isinstance(root, DictConfig) else None
    if rep is None or int(rep) == 1:
        return random.Random(f"{seed}:{salt}")
    return random.Random(f"{seed}:rep{int(rep)}:{salt}")


def lognormal(seed: Any, n: int, p5: Any, p95: Any, _root_: Any = None) -> list[int]:
    """Draw n byte counts whose 5th and 95th percentiles are p5 and p95.

    Raises ValueError unless 0 < p5 < p95 (UnitError, a ValueError, for a bad amount).
    """
    lo, hi = Bytes.parse(p5).n, Bytes.parse(p95).n
    if not 0 < lo < hi:
        raise ValueError(f"lognormal needs 0 < P5 < P95, got {p5} and {p95}")
    mu = (math.log(lo) + math.log(hi)) / 2
    sigma = (math.log(hi) - math.log(lo)) / (2 * Z95)
    rng = _rng(seed, "lognormal", _root_)
    return [max(1, round(rng.lognormvariate(mu, sigma))) for _ in range(int(n))]


def exponential(seed: Any, n: int, mean: Any, _root_: Any = None) -> list[str]:
    """Draw n waits with the given mean (Poisson arrivals), as durations in µs."""
    m = Duration.parse(mean).seconds
    rng = _rng(seed, "exponential", _root_)
    return [f"{max(1, round(rng.expovariate(1 / m) * 1e6))}us" for _ in range(int(n))]


def uniform(seed: Any, n: int, lo: Any, hi: Any, _root_: Any = None) -> list[str]:
    """Draw n durations uniformly between lo and hi, in µs."""
    a, b = Duration.parse(lo).ns / 1e3, Duration.parse(hi).ns / 1e3
    rng = _rng(seed, "uniform", _root_)
    return [f"{round(rng.uniform(a, b))}us" for _ in range(int(n))]


def dadd(*durations: Any) -> str:
    """Return the sum of durations, as text (``${dadd:${duration},2s}``)."""
    return str(Duration(sum(Duration.parse(d).ns for d in durations)))


def dscale(duration: Any, factor: float) -> str:
    """Return a duration times a factor, as text (``${dscale:${duration},0.333}``)."""
    return str(Duration(round(Duration.parse(duration).ns * float(factor))))


def tc_rate(rate: Any) -> str:
    """Return a Bitrate (``10mbit``, ``10Mbps``, ``10MB/s``) in tc's own unit, bits per second: ``10000000bit``.

    tc reads ``mbps`` as megabytes per second, where this tool (and iperf3)
    read megabits; the plain ``bit`` suffix means the same to both. Raises
    UnitError (a ValueError) for a value Bitrate refuses.
    """
    return f"{Bitrate.parse(rate).bps}bit"


def whole_seconds(duration: Any) -> str:
    """Return a Duration (``10s``, ``2m``) as a whole number of seconds, as ``iperf3 -t`` takes it.

    Raises UnitError (a ValueError) for a duration without a unit, and
    ValueError for one that is not a whole number of seconds (iperf3 would
    cut it short without a word).
    """
    d = Duration.parse(duration)
    if d.ns % 1_000_000_000:
        raise ValueError(f"duration {duration!r} is not a whole number of seconds")
    return str(d.ns // 1_000_000_000)


def cycle(n: int, values: Any) -> list[Any]:
    """Repeat the values to a list of n, raising ValueError if values is not a non-empty list."""
    items = _plain(values)
    if not isinstance(items, list) or not items:
        raise ValueError("cycle needs a non-empty list")
    return [items[i % len(items)] for i in range(int(n))]


_FIELD = re.compile(r"\{(\w+)\}")


def each(template: Any, variables: Any) -> list[Any]:
    """Copy template once per position of the equal-length lists in variables.

    In every string of the copy, ``{name}`` becomes the name's value at that
    position and ``{i}`` the position; a string that is just ``{name}`` takes
    the value itself (a number stays a number). Raises ValueError unless
    variables maps names to lists of one length.
    """
    tmpl = _plain(template)
    vars_ = _plain(variables)
    if not isinstance(vars_, dict) or not vars_:
        raise ValueError("each needs a mapping of names to lists")
    lengths = {k: len(v) for k, v in vars_.items() if isinstance(v, list)}
    if len(lengths) != len(vars_) or len(set(lengths.values())) != 1:
        raise ValueError(f"each needs lists of one length, got {lengths}")
    n = next(iter(lengths.values()))
    return [_fill(tmpl, {"i": i, **{k: v[i] for k, v in vars_.items()}}) for i in range(n)]


def _fill(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values) for v in node]
    if isinstance(node, str):
        whole = _FIELD.fullmatch(node)
        if whole and whole.group(1) in values:
            return values[whole.group(1)]
        return _FIELD.sub(lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), node)
    return node


def _plain(value: Any) -> Any:
    """_plain returns a resolver's argument as plain lists and dicts, at any depth.

    OmegaConf hands a resolver a literal mapping as a dict, but a value in it
    that is an interpolation of a config node (``{rate: ${trace.rates}}``) as
    that node (a ListConfig): resolved here, so an interpolated list is taken
    like one written inline (issue 30).
    """
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


RESOLVERS: dict[str, Callable[..., Any]] = {
    "lognormal": lognormal,
    "exponential": exponential,
    "uniform": uniform,
    "cycle": cycle,
    "dadd": dadd,
    "dscale": dscale,
    "each": each,
    "tc_rate": tc_rate,
    "whole_seconds": whole_seconds,
}


def register() -> None:
    """Add the resolvers to OmegaConf (once; again is harmless)."""
    for name, fn in RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
