"""Bad config never reaches the network: generated run trees and rig settings, valid and broken, through the command.

Hypothesis builds run trees (serial, parallel, schedule and child runs over
every runner, with valid values), then breaks one thing at a known place:
an unknown key, a second field of a union, a duration without its unit, a
bad flow ID, a bad address, a number out of its range, a value of the wrong
type. Every broken config must end ``antler-ray run`` with status 2 and an
error naming the place (the object or the field that is wrong, never a far
ancestor), with nothing written and nothing launched; every valid one must
pass ``antler-ray vet``. The rig's settings are generated the same way over
``+experiment=cubic``.

Among them, the cases the field reports found read two ways: ambiguous units
(``50MBPS``, a rate written as an amount of data and the reverse), a bare
probability of 1, an IPv4 address for ``tcp6``.

``make test`` tries a few hundred configs; ``make reliability`` many more
(ANTLER_RELIABILITY_LONG=1).
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, assume, given, settings, strategies as st

from antler.cli import main
from tests.lab import figures

LONG = os.environ.get("ANTLER_RELIABILITY_LONG") == "1"
EXAMPLES = 2000 if LONG else 100
RIG_EXAMPLES = 300 if LONG else 24
BOGUS = "bogus_key"
# No "explain" phase: it traces every line run, and a command run takes seconds under it.
PHASES = (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)


# --- valid configs

durations = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 999), st.sampled_from(["us", "ms", "s"]))
flows = st.from_regex(r"[a-z][a-z0-9.-]{0,15}", fullmatch=True)
addrs = st.builds(lambda a, b, p: f"10.77.{a}.{b}:{p}", st.integers(0, 255), st.integers(1, 254), st.integers(1, 65535))
NODES = {
    "a": {"id": "a"},
    "b": {"id": "b", "netns": {"name": "ns-b"}},
    "c": {"id": "c", "netns": {"create": True}},
}


def transfer() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"flow": flows, "duration": durations},
        optional={
            "sample_io_interval": durations,
            "tcp_info_interval": durations,
            "dscp": st.integers(0, 63),
            "length": st.sampled_from(["64K", "2MB", "1MiB", "20Mbit", 1500]),
        },
    )


runners: dict[str, st.SearchStrategy[Any]] = {
    "sleep": durations,
    "system": st.fixed_dictionaries(
        {"command": st.sampled_from(["true", "echo hi", "sleep 0"])},
        optional={"background": st.booleans(), "stdout": st.sampled_from(["", "quiet", "stream"])},
    ),
    "stream_server": st.fixed_dictionaries({"listen_addr": addrs, "protocol": st.sampled_from(["tcp", "tcp4"])}),
    "stream_client": st.builds(
        lambda addr, proto, way, t: {"addr": addr, "protocol": proto, way: t},
        addrs,
        st.sampled_from(["tcp", "tcp4"]),
        st.sampled_from(["upload", "download"]),
        transfer(),
    ),
    "packet_server": st.fixed_dictionaries({"listen_addr": addrs, "protocol": st.sampled_from(["udp", "udp4"])}),
    "packet_client": st.fixed_dictionaries(
        {
            "flow": flows,
            "addr": addrs,
            "sender": st.lists(
                st.fixed_dictionaries(
                    {
                        "unresponsive": st.fixed_dictionaries(
                            {
                                "wait": st.lists(durations, min_size=1, max_size=3),
                                "length": st.lists(st.integers(64, 1480), min_size=1, max_size=3),
                                "duration": durations,
                            },
                            optional={"echo": st.booleans()},
                        )
                    }
                ),
                min_size=1,
                max_size=2,
            ),
        },
        optional={"protocol": st.sampled_from(["udp", "udp4"]), "dscp": st.integers(0, 63)},
    ),
}

leaf = st.one_of(*(st.builds(lambda v, k=k: {k: v}, s) for k, s in runners.items()))


def _combine(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    runs = st.lists(children, min_size=1, max_size=3)
    return st.one_of(
        st.builds(lambda r: {"serial": r}, runs),
        st.builds(lambda r: {"parallel": r}, runs),
        st.builds(lambda r, w: {"schedule": {"run": r, "wait": w}}, runs, st.lists(durations, min_size=1, max_size=2)),
        st.builds(
            lambda n, r: {"child": {"node": copy.deepcopy(NODES[n]), **r}}, st.sampled_from(sorted(NODES)), children
        ),
    )


random_trees = st.recursive(leaf, _combine, max_leaves=8)


def _within(key: str) -> st.SearchStrategy[dict[str, Any]]:
    """_Within is a tree that holds a runner of kind key, somewhere under random combinators."""
    return st.recursive(st.builds(lambda v: {key: v}, runners[key]), _combine, max_leaves=3)


# Each tree holds every runner (each under its own random combinators), so
# every kind of break has a place in it, beside random trees.
run_trees = st.builds(
    lambda required, rest, order: {"serial": [x for _, x in sorted(zip(order, [*required, *rest], strict=False))]},
    st.tuples(*(_within(k) for k in ("stream_client", "packet_client", "stream_server", "packet_server", "system"))),
    st.lists(random_trees, max_size=2),
    st.permutations(range(7)),
)


# --- where a tree can be broken


@dataclass(frozen=True)
class Site:
    """A place to break: what kind of break, where in the data, and the paths the error may name.

    The error must name ``field`` or an object above it, but no higher than ``obj``.
    """

    kind: str
    at: tuple[str | int, ...]
    obj: str
    field: str


def sites(run: dict[str, Any], at: tuple[str | int, ...] = ("test", "run"), path: str = "test.run") -> Iterator[Site]:
    """Yield every place of a run (a child run's too) where one kind of break can go."""
    yield Site("union", at, path, path)
    yield Site("unknown", at, path, f"{path}.{BOGUS}")
    if "node" in run:
        node = f"{path}.node"
        yield Site("unknown", (*at, "node"), node, f"{node}.{BOGUS}")
        yield Site("node_id", (*at, "node", "id"), node, f"{node}.id")
    (key,) = [k for k in run if k != "node"]
    here, spec = f"{path}.{key}", run[key]
    if key in ("serial", "parallel"):
        for i, r in enumerate(spec):
            yield from sites(r, (*at, key, i), f"{here}[{i}]")
    elif key == "schedule":
        yield Site("unknown", (*at, key), here, f"{here}.{BOGUS}")
        for i in range(len(spec["wait"])):
            yield Site("unit", (*at, key, "wait", i), here, f"{here}.wait[{i}]")
        for i, r in enumerate(spec["run"]):
            yield from sites(r, (*at, key, "run", i), f"{here}.run[{i}]")
    elif key == "child":
        yield from sites(spec, (*at, key), here)
    else:
        yield from _runner_sites(key, spec, (*at, key), here)


def _runner_sites(key: str, spec: Any, at: tuple[str | int, ...], path: str) -> Iterator[Site]:
    if key == "sleep":
        yield Site("unit", at, path, path)
        return
    yield Site("unknown", at, path, f"{path}.{BOGUS}")
    if key == "system":
        yield Site("type_bool", (*at, "background"), path, f"{path}.background")
    if key in ("stream_server", "packet_server"):
        yield Site("addr", (*at, "listen_addr"), path, f"{path}.listen_addr")
    if key == "packet_server":
        yield Site("packet_size", (*at, "max_packet_size"), path, f"{path}.max_packet_size")
    if key == "stream_client":
        yield Site("addr", (*at, "addr"), path, f"{path}.addr")
        way = "upload" if "upload" in spec else "download"
        yield Site("second_transfer", at, path, path)
        t = f"{path}.{way}"
        yield Site("unknown", (*at, way), t, f"{t}.{BOGUS}")
        yield Site("flow", (*at, way, "flow"), t, f"{t}.flow")
        yield Site("dscp", (*at, way, "dscp"), t, f"{t}.dscp")
        yield Site("buf_len", (*at, way, "buf_len"), t, f"{t}.buf_len")
        for name in ("duration", "sample_io_interval", "tcp_info_interval"):
            if name in spec[way]:
                yield Site("unit", (*at, way, name), t, f"{t}.{name}")
        yield Site("family", at, path, f"{path}.addr")
        if "length" in spec[way]:
            yield Site("amount", (*at, way, "length"), t, f"{t}.length")
    if key == "packet_client":
        yield Site("addr", (*at, "addr"), path, f"{path}.addr")
        yield Site("flow", (*at, "flow"), path, f"{path}.flow")
        yield Site("dscp", (*at, "dscp"), path, f"{path}.dscp")
        yield Site("packet_size", (*at, "max_packet_size"), path, f"{path}.max_packet_size")
        for i, sender in enumerate(spec["sender"]):
            s = f"{path}.sender[{i}]"
            u = f"{s}.unresponsive"
            yield Site("unknown", (*at, "sender", i), s, f"{s}.{BOGUS}")
            yield Site("unknown", (*at, "sender", i, "unresponsive"), u, f"{u}.{BOGUS}")
            yield Site("unit", (*at, "sender", i, "unresponsive", "duration"), u, f"{u}.duration")
            yield Site("length", (*at, "sender", i, "unresponsive", "length", 0), u, f"{u}.length[0]")
            for j in range(len(sender["unresponsive"]["wait"])):
                yield Site("unit", (*at, "sender", i, "unresponsive", "wait", j), u, f"{u}.wait[{j}]")


BAD: dict[str, st.SearchStrategy[Any]] = {
    "unit": st.sampled_from([100, 2.5, "100", "1.5", "10 parsecs", "ms", "5 s"]),
    "flow": st.one_of(
        st.sampled_from(["Up", "1up", "up_1", "up flow", "", "-up", ".up"]),
        st.from_regex(r"[a-z][a-z0-9.-]{16,20}", fullmatch=True),  # too long
        st.from_regex(r"[a-z]{0,4}[A-Z_ /:@][a-z]{0,4}", fullmatch=True),
    ),
    "node_id": st.sampled_from(["", "-a", "a b", "a/b", "é"]),
    "addr": st.sampled_from(["10.77.1.1", "10.77.1.1:70000", "10.77.1.1:port", "::1:80", "10.77.1.1:-1"]),
    "dscp": st.one_of(st.integers(64, 255), st.integers(-5, -1)),
    "buf_len": st.sampled_from([0, -1, 64 * 1024 * 1024 + 1]),
    "amount": st.sampled_from(["20MBps", "5Mbit/s", "lots", "-5MB", "2 parsecs"]),
    "packet_size": st.sampled_from([0, -1, 65508, 100000]),
    "length": st.sampled_from([0, -1, 65508]),
    "type_bool": st.sampled_from(["maybe", 2, "yes please"]),
}


KINDS = (
    "unknown",
    "union",
    "unit",
    "flow",
    "node_id",
    "addr",
    "family",
    "second_transfer",
    "amount",
    *sorted(set(BAD) - {"unit", "flow", "node_id", "addr", "amount"}),
)
"""KINDS are the kinds of break, each tried on its own budget of trees."""


def _get(data: Any, at: tuple[str | int, ...]) -> Any:
    for k in at:
        data = data[k]
    return data


def _set(data: Any, at: tuple[str | int, ...], value: Any) -> None:
    _get(data, at[:-1])[at[-1]] = value


def broken(draw: Callable[..., Any], config: dict[str, Any], site: Site) -> dict[str, Any]:
    """Return a copy of config with the break of site made."""
    out = copy.deepcopy(config)
    if site.kind in BAD:
        _set(out, site.at, draw(BAD[site.kind]))
        return out
    target = _get(out, site.at)
    if site.kind == "unknown":
        target[BOGUS] = 1
    elif site.kind == "union":
        if "sleep" not in target:
            target["sleep"] = "1ms"
        else:
            target["system"] = {"command": "true"}
    elif site.kind == "second_transfer":
        target["download" if "upload" in target else "upload"] = {"flow": "second"}
    elif site.kind == "family":
        target["protocol"] = "tcp6"  # with an IPv4 literal
    return out


# --- through the command


@dataclass
class Outcome:
    status: int
    err: str

    @property
    def error_path(self) -> str:
        m = re.search(r"config error: (.*?)(?::\s|$)", self.err)
        assert m, f"no config error line in {self.err!r}"
        return m.group(1)


def command(folder: Path, verb: str, config: dict[str, Any], overrides: tuple[str, ...] = ()) -> Outcome:
    """Run ``antler-ray VERB`` on config as the experiment ``h`` in folder/c."""
    (folder / "c" / "experiment").mkdir(parents=True, exist_ok=True)
    text = "# @package _global_\n" + yaml.safe_dump(config, sort_keys=False)
    (folder / "c" / "experiment" / "h.yaml").write_text(text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = main([verb, "--config-dir", str(folder / "c"), "+experiment=h", *overrides])
    return Outcome(status, err.getvalue())


def names_the_place(path: str, site: Site) -> bool:
    """Report whether an error path is the broken field or an object above it, up to site.obj."""
    at_or_above = path == site.field or site.field.startswith((path + ".", path + "["))
    return at_or_above and path.startswith(site.obj)


@pytest.fixture
def quiet_launch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make the folder the working one and fail any test that gets as far as launching a node."""

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("a broken config reached the launch of its nodes")

    monkeypatch.setattr("antler.cli.run._start", reached)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.no_netns
@pytest.mark.parametrize("kind", KINDS)
def test_every_broken_run_tree_is_refused_naming_its_place_and_no_valid_one_is(quiet_launch: Path, kind: str) -> None:
    tried = 0

    @settings(
        max_examples=max(1, EXAMPLES // len(KINDS)),
        deadline=None,
        derandomize=not LONG,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        phases=PHASES,
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        nonlocal tried
        tree: dict[str, Any] = data.draw(run_trees, "run tree")
        config = {"test": {"id": {"experiment": "h"}, "run": tree}}
        # Each kind of break has its own budget of trees with a place for it;
        # the place is drawn.
        places = [place for place in sites(tree) if place.kind == kind]
        assume(places)
        valid = command(quiet_launch, "vet", config)
        assert valid.status == 0, valid.err
        site = data.draw(st.sampled_from(places), "site")
        bad = broken(data.draw, config, site)
        out = command(quiet_launch, "run", bad)
        assert out.status == 2, f"{site}: {out.err}"
        assert names_the_place(out.error_path, site), f"{site}: {out.err}"
        assert not (quiet_launch / "results").exists(), "a broken config wrote results"
        tried += 1

    check()
    figures.record("config", "run trees generated (valid, passed vet)", tried)
    figures.record("config", f"broken configs refused with status 2 naming the place: {kind}", tried)


RIG_VALID: dict[str, st.SearchStrategy[str]] = {
    "rig.rate": st.builds(
        lambda n, u: f"{n}{u}", st.integers(1, 1000), st.sampled_from(["mbit", "Mbit", "kbit", "Mbps", "MB/s", "MBps"])
    ),
    "rig.rtt": st.builds(lambda n: f"{n}ms", st.integers(0, 200)),
    "rig.loss": st.one_of(
        st.sampled_from(["0", "0.01", "0.5", "0.99"]), st.builds(lambda n: f"{n}%", st.integers(0, 100))
    ),
    "rig.limit": st.builds(str, st.integers(0, 10000)),
}
RIG_BROKEN: dict[str, list[str]] = {
    "rig.rate": ["50", "-5mbit", "fast", "50 parsecs", "50MB", "50MBPS", "64K"],
    "rig.rtt": ["20", "-5ms", "soon"],
    "rig.loss": ["1.5", "-0.1", "150%", "lots", "1", "1.0"],
    "rig.limit": ["-1", "many"],
}


@pytest.mark.no_netns
def test_every_broken_rig_setting_is_refused_naming_its_key_and_no_valid_one_is(quiet_launch: Path) -> None:
    tried: Counter[str] = Counter()
    config = {
        "defaults": [{"/rig": "dumbbell"}, "_self_"],
        "test": {"id": {"experiment": "h"}, "run": {"serial": "${rig_setup:}"}},
    }

    @settings(max_examples=RIG_EXAMPLES, deadline=None, derandomize=not LONG, phases=PHASES)
    @given(
        st.fixed_dictionaries({k: s for k, s in RIG_VALID.items()}),
        st.sampled_from(sorted(RIG_BROKEN)),
        st.data(),
    )
    def check(valid: dict[str, str], key: str, data: st.DataObject) -> None:
        overrides = tuple(f"{k}={v}" for k, v in valid.items())
        ok = command(quiet_launch, "vet", config, overrides)
        assert ok.status == 0, f"{overrides}: {ok.err}"
        value = data.draw(st.sampled_from(RIG_BROKEN[key]), "broken value")
        bad = (*(o for o in overrides if not o.startswith(f"{key}=")), f"{key}={value}")
        out = command(quiet_launch, "run", config, bad)
        assert out.status == 2, f"{key}={value}: {out.err}"
        assert out.error_path.startswith(key), f"{key}={value}: the error names {out.error_path!r}: {out.err}"
        assert not (quiet_launch / "results").exists()
        tried[key] += 1

    check()
    figures.record("config", "rig settings generated (valid, passed vet)", tried.total())
    figures.record("config", "broken rig settings refused naming their key", tried.total())
