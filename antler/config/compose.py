"""Composing experiments with Hydra, and expanding sweeps into jobs.

Hydra's compose API builds each job's config; the sweep is expanded here the
way Hydra's BasicSweeper does (the cartesian product of the swept values), so
that no ``outputs/`` or ``multirun/`` folder is ever created and every job is
checked before any test runs: each job's config is parsed once into its
:class:`~antler.config.root.RootSpec`.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, IntervalSweep, Override, Transformer
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from antler.config import resolvers
from antler.config.resolvers import REP
from antler.config.root import RootSpec, parse_root
from antler.config.test import TestSpec
from antler.config.unread import check_read
from antler.node.spec import ConfigError, first_line
from antler.rig.path import set_config_dir
from antler.rig.resolvers import register_resolvers as register_rig_resolvers
from antler.testid import varying_id_keys

_ID_RUN_BAD = re.compile(r"[^a-zA-Z0-9_-]+")


def packaged_conf_dir() -> Path:
    """Return the conf/ folder shipped inside the package."""
    return Path(str(resources.files("antler") / "conf"))


@dataclass
class Job:
    """One test of an invocation: its overrides, the keys it sweeps, its resolved config and that config parsed.

    ``config`` is the resolved config as plain data, for meta.json and
    config.yaml and for an incremental run to compare; everything else reads
    ``root``, the typed config parsed once.
    """

    overrides: list[str]
    swept: dict[str, str]
    config: dict[str, Any]
    root: RootSpec

    @property
    def test(self) -> TestSpec:
        """The job's test (``root.test``)."""
        return self.root.test


def expand(
    overrides: list[str], multirun: bool, config_dir: str | None = None
) -> list[tuple[list[str], dict[str, str]]]:
    """Return each job's overrides and its swept keys with the values they apply.

    A swept value is the value Hydra applies, not its spelling: ``pfifo,"bfifo
    limit 50000"`` and ``pfifo,bfifo limit 50000`` both sweep ``bfifo limit
    50000``, so both give the same tests. Every sweep Hydra's grammar can
    enumerate is expanded as its BasicSweeper does: a list (``a=1,2``,
    ``choice(1,2)``, ``shuffle(...)``, ``sort(...)``), ``range(1,4)`` and
    ``glob(*)`` over a config group (``+experiment=glob(c*)``). Raises
    ConfigError for overrides Hydra cannot parse, a sweep without
    ``multirun``, and ``interval(...)``, which is continuous (a sampler's
    sweep, not a list of tests).
    """
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        bad = str(e).split(":", 1)[-1].strip().splitlines()[0]
        raise ConfigError("overrides", f"cannot parse {bad!r} (quote values with special characters)") from None
    lists: list[list[tuple[str, str, str, bool]]] = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            if not multirun:
                raise ConfigError(key, f"{o.input_line!r} is a sweep: add -m (--multirun) to run one test per value")
            lists.append([(key, spelled, applied, True) for spelled, applied in _sweep_values(o, config_dir)])
        else:
            lists.append([(key, o.get_value_element_as_str(), "", False)])
    jobs = []
    for combo in itertools.product(*lists):
        jobs.append(([f"{k}={v}" for k, v, _, _ in combo], {k: a for k, _, a, swept in combo if swept}))
    return jobs


def _sweep_values(o: Override, config_dir: str | None) -> list[tuple[str, str]]:
    """_sweep_values lists a sweep override's values, each as spelled in an override and as applied."""
    key = o.get_key_element()
    value = o.value()
    if isinstance(value, Glob):
        names = value.filter(_group_options(o.key_or_group, config_dir))
        if not names:
            raise ConfigError(key, f"{o.input_line!r} matches no config of the group {o.key_or_group!r}")
        return [(n, n) for n in names]
    if not o.is_discrete_sweep():
        kind = "interval(...) is a continuous range, not" if isinstance(value, IntervalSweep) else "not"
        raise ConfigError(key, f"{o.input_line!r}: {kind} a list of tests; sweep a list (a=1,2), range(1,4) or glob(*)")
    # Enumerated once, so the spelling and the applied value of a shuffled sweep stay paired.
    elements = list(o.sweep_iterator())
    return [(Transformer.str(e), _applied(e)) for e in elements]


def _group_options(group: str, config_dir: str | None) -> list[str]:
    """_group_options lists the configs of a config group (``experiment``), packaged and in config_dir."""
    folders = [packaged_conf_dir() / group, *([Path(config_dir) / group] if config_dir else [])]
    return sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})


def _applied(value: Any) -> str:
    """_applied is a swept value as Hydra applies it, as text: a quoted string without its quotes."""
    text = getattr(value, "text", None)  # Hydra's QuotedString
    if isinstance(text, str):
        return text
    if isinstance(value, (list, dict)):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def id_value(key: str, value: str) -> str:
    """Return a swept value as a test ID value: runs of other characters become ``_`` (``bfifo limit 50000`` -> ``bfifo_limit_50000``).

    Raises ConfigError naming the key when nothing usable is left.
    """
    text = _ID_RUN_BAD.sub("_", value).strip("_-")
    if not text:
        raise ConfigError(key, f"swept value {value!r} gives no test ID: sweep values with letters or digits")
    return text


def compose_jobs(overrides: list[str], multirun: bool = False, config_dir: str | None = None) -> list[Job]:
    """Build and check every job of an invocation, raising ConfigError."""
    jobs = []
    for job_overrides, swept in expand(overrides, multirun, config_dir):
        cfg = compose_config(job_overrides, config_dir)
        job = _job(cfg, job_overrides, swept)
        repeat = job.root.sweep.repeat
        jobs += [job] if repeat == 1 else [_job(cfg, job_overrides, swept, k) for k in range(1, repeat + 1)]
    seen: dict[str, list[str]] = {}
    for job in jobs:
        out = job.test.output_path()
        if out in seen:
            raise ConfigError(
                "test.id", f"two tests have the same ID or path {out!r} ({seen[out]} and {job.overrides})"
            )
        seen[out] = job.overrides
    _check_index_axis(jobs)
    if jobs and jobs[0].root.sweep.shuffle:
        # sweep is not sweepable, so every job has the same shuffle and seed.
        random.Random(jobs[0].root.sweep.seed).shuffle(jobs)
    return jobs


def compose_config(overrides: list[str], config_dir: str | None = None) -> DictConfig:
    """Compose the root config with overrides, raising ConfigError."""
    if config_dir is not None:
        if not Path(config_dir).is_dir():
            raise ConfigError("--config-dir", f"{config_dir} is not a folder")
        overrides = [*overrides, f"hydra.searchpath=[file://{Path(config_dir).resolve()}]"]
    # A py:MODULE:CLASS rig.qdisc finds MODULE.py in the config dir.
    set_config_dir(Path(config_dir).resolve() if config_dir is not None else None)
    resolvers.register()
    register_rig_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(packaged_conf_dir()), version_base="1.3"):
            return compose("config", overrides=overrides)
    except HydraException as e:
        message = str(e)
        m = re.search(r"Could not find '(experiment/[^']+)'", message)
        if m:
            name = m.group(1).split("/", 1)[1]
            raise ConfigError(
                "experiment", f"unknown experiment {name!r} (available: {', '.join(experiments(config_dir))})"
            ) from None
        raise ConfigError("overrides", hydra_problem(e)) from None
    except OmegaConfBaseException as e:
        raise ConfigError(_omegaconf_path(e), first_line(e)) from None
    except yaml.YAMLError as e:
        raise ConfigError("experiment", f"invalid YAML: {' '.join(str(e).split())}") from None
    finally:
        GlobalHydra.instance().clear()


def hydra_problem(e: BaseException) -> str:
    """Return a Hydra override error as one line, with its hint: a key not in the config needs ``+``.

    Hydra puts its hint on a second line ("To append to your config use
    +rep=1"), or gives none ("Could not override 'rep'. No match in the
    defaults list."); either way the line says to add the key with ``+``.
    """
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    text = lines[0]
    m = re.match(r"Could not override '([^']+)'", text)
    if m:
        key = m.group(1)
        given = next((line.split(" use ", 1)[1] for line in lines[1:] if line.startswith("To append")), "")
        add = given or f"+{key}=VALUE"
        if "Did you mean" in " ".join(lines[1:]):
            text += " " + " ".join(lines[1:])
        return f"{text} {key!r} is not in the config: add it with a +, as {add}"
    if text.startswith("Could not append to config"):
        return " ".join(lines)
    return text


def _job(cfg: DictConfig, overrides: list[str], swept: dict[str, str], rep: int | None = None) -> Job:
    """_job resolves and parses one job's config; ``rep``, its repetition, is set as the root key ``rep``.

    The seeded resolvers read ``rep`` (antler.config.resolvers), and the
    test's ID gets the key ``rep``.
    """
    if "test" not in cfg or cfg.test is None:
        raise ConfigError("test", "no test: choose an experiment with +experiment=NAME (see antler-ray list)")
    check_read(cfg, overrides)
    if rep is not None:
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg[REP] = rep
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as e:
        cause = _config_error_in(e)
        if cause is not None:
            # A resolver's own ConfigError (e.g. the rig's) already names its key.
            raise cause from None
        raise _resolver_error(cfg, e) from None
    assert isinstance(plain, dict)
    test_data = plain["test"]
    if not isinstance(test_data, dict):
        raise ConfigError("test", "expected a mapping")
    test_data = dict(test_data)
    ids = dict(test_data.get("id") or {})
    for k, v in swept.items():
        ids.setdefault(id_value("overrides", k), id_value(k, v))
    if rep is not None:
        if REP in ids:
            raise ConfigError(f"test.id.{REP}", "is the repetition's ID key (sweep.repeat): name the key otherwise")
        ids[REP] = str(rep)
    test_data["id"] = {str(k): str(v) for k, v in ids.items()}
    plain["test"] = test_data
    config = {str(k): v for k, v in plain.items()}
    return Job(overrides, swept, config, parse_root(config, swept))


def experiments(config_dir: str | None = None) -> list[str]:
    """List the experiment names available (packaged and in config_dir)."""
    names = {p.stem for p in (packaged_conf_dir() / "experiment").glob("*.yaml")}
    if config_dir is not None:
        names |= {p.stem for p in (Path(config_dir) / "experiment").glob("*.yaml")}
    return sorted(names)


def _config_error_in(e: BaseException) -> ConfigError | None:
    """_config_error_in finds a ConfigError that OmegaConf wrapped while resolving."""
    seen: BaseException | None = e
    for _ in range(10):
        if seen is None or isinstance(seen, ConfigError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


_RESOLVER_ARG = re.compile(r"\$\{(\w+):\$\{([\w.]+)\}\}")
"""_RESOLVER_ARG finds ``${resolver:${key}}`` in a raw value: a resolver called on one parameter."""


def _resolver_error(cfg: DictConfig, e: OmegaConfBaseException) -> ConfigError:
    """_resolver_error names the parameter a resolver refused (``low_rate`` in ``${tc_rate:${low_rate}}``).

    The error OmegaConf raises names the key whose value called the resolver
    (a command deep in the run tree); the user wrote the bad value elsewhere.
    """
    where = _omegaconf_path(e)
    problem = re.sub(r"^\w+ raised while resolving interpolation: ", "", first_line(e))
    raw = _raw_at(OmegaConf.to_container(cfg, resolve=False), where)
    calls = _RESOLVER_ARG.findall(raw) if isinstance(raw, str) else []
    if len(calls) == 1 or len({key for _, key in calls}) == 1:
        resolver, key = calls[0]
        return ConfigError(key, f"{problem} (read by ${{{resolver}:...}} for {where})")
    return ConfigError(where, problem)


def _raw_at(data: Any, path: str) -> Any:
    """_raw_at is the unresolved value at a dotted path with [i] indices, or None."""
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        try:
            data = data[int(index)] if index else data[name]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _omegaconf_path(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    return str(key) if key else "config"


def _check_index_axis(jobs: list[Job]) -> None:
    """_check_index_axis refuses ``index.x`` or ``index.group_by`` set to the repetition key of a sweep with repetitions.

    The comparison page takes each combination's mean and interval over the
    repetitions, so that key is no axis; found only when the page was drawn,
    after every test had run (issue 30). See
    :func:`antler.report.summary.check_index_keys`.
    """
    spec = jobs[0].root.index if jobs else None
    if len(jobs) < 2 or spec is None or not (spec.x or spec.group_by):
        return
    from antler.report.summary import REPETITION_KEYS, check_index_keys  # pandas: only for a page with an axis set

    keys = varying_id_keys(job.test.id for job in jobs)
    if {spec.x, spec.group_by} & REPETITION_KEYS & set(keys):
        check_index_keys(spec, keys)
