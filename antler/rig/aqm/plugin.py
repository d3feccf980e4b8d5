"""Your own queue discipline: ``rig.qdisc="py:MODULE:CLASS key=value ..."``.

The protocol (:class:`antler.rig.aqm.base.QueueDiscipline`) is four members:

- ``enqueue(pkt, now_ns) -> bool``: a packet arrives at ``now_ns`` (ns on the
  link's monotonic clock). Keep it and return True, or return False to refuse
  it (a tail drop; the link counts it).
- ``dequeue(now_ns) -> Packet | None``: the link is free; return the packet to
  send now, or None when empty. To drop a packet you took, pass it to
  ``self.drop(pkt, now_ns)`` and go on to the next; to mark one, call
  :func:`antler.rig.aqm.mark_ce` (it returns False for a not-ECN-capable
  packet, which you would then drop).
- ``backlog_packets`` and ``backlog_bytes``: what it holds now.

A packet (:class:`antler.rig.aqm.Packet`) has ``length`` (IP bytes),
``ecn`` (its codepoint: ``NOT_ECT`` 0, ``ECT1`` 1, ``ECT0`` 2, ``CE`` 3),
``flow_key`` (a hashable 5-tuple, or None) and ``t_enqueue_ns`` (its arrival;
its sojourn is ``now_ns - pkt.t_enqueue_ns``).

The class is called as ``CLASS(drop=SINK, key=value, ...)``: every
``key=value`` after the name arrives as a keyword argument whose value is the
text written (read it with :func:`antler.rig.aqm.parse_time_ns` or
:func:`antler.rig.aqm.parse_size_bytes`, or ``int``/``float``). MODULE is a
file ``MODULE.py`` in the config dir (``--config-dir``) if there is one, else
any importable module (``py:antler.rig.aqm.step_marker:StepMarker``, the
example in :mod:`antler.rig.aqm.step_marker`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from antler.rig.aqm.base import DropSink, QueueDiscipline

PLUGIN_PACKAGE = "antler_user_aqm"
"""PLUGIN_PACKAGE is the name space a module loaded from the config dir is registered under in sys.modules."""


def _load_module(name: str, config_dir: Path | None) -> ModuleType:
    """Return the module MODULE: ``config_dir/MODULE.py`` (dots as folders) first, else an importable one."""
    if config_dir is not None:
        path = Path(config_dir, *name.split(".")).with_suffix(".py")
        if path.is_file():
            key = f"{PLUGIN_PACKAGE}.{name}"
            spec = importlib.util.spec_from_file_location(key, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"py:{name}: cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:
                del sys.modules[key]
                raise ValueError(f"py:{name}: {path} failed to load: {type(e).__name__}: {e}") from None
            return module
    try:
        return importlib.import_module(name)
    except ImportError as e:
        where = f"no {name.replace('.', '/')}.py in {config_dir} and " if config_dir is not None else ""
        raise ValueError(f"py:{name}: {where}not importable ({e})") from None


def parse_plugin(text: str) -> tuple[str, str, dict[str, str]]:
    """Return (module, class, keyword texts) of ``py:MODULE:CLASS key=value ...``, raising ValueError."""
    words = text.split()
    head = words[0][len("py:") :] if words and words[0].startswith("py:") else ""
    module, _, cls = head.rpartition(":")
    if not module or not cls.isidentifier():
        raise ValueError(f"{words[0] if words else text!r} is not py:MODULE:CLASS (e.g. py:step_marker:StepMarker)")
    params: dict[str, str] = {}
    for word in words[1:]:
        key, eq, value = word.partition("=")
        if not eq or not key.isidentifier() or key == "drop":
            raise ValueError(f"py:{module}:{cls}: {word!r} is not key=value (e.g. threshold=1ms)")
        params[key] = value
    return module, cls, params


def load_plugin(text: str, *, drop: DropSink, config_dir: Path | None) -> QueueDiscipline:
    """Return an instance of the user's class named by ``py:MODULE:CLASS key=value ...``.

    Raises ValueError when the module cannot be loaded, has no such class,
    the class refuses the keywords, or the object lacks the protocol's members.
    """
    module_name, cls_name, params = parse_plugin(text)
    module = _load_module(module_name, config_dir)
    cls = getattr(module, cls_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"py:{module_name}:{cls_name}: {module_name} has no class {cls_name}")
    try:
        queue = cls(drop=drop, **params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"py:{module_name}:{cls_name}: {type(e).__name__}: {e}") from None
    if not isinstance(queue, QueueDiscipline):
        missing = [m for m in ("enqueue", "dequeue", "backlog_packets", "backlog_bytes") if not hasattr(queue, m)]
        raise ValueError(f"py:{module_name}:{cls_name} is not a queue discipline: it lacks {', '.join(missing)}")
    return queue
