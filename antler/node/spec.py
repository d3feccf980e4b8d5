"""Building spec dataclasses from plain config data, with the path of every error.

The specs of every layer (the run tree and its nodes here, a rig's, a report
step's, the root config's) are dataclasses parsed by this one engine, at the
base of the layers beside the units it parses (:mod:`antler.node.metric`).

The run tree is recursive and its runners form a union, two things Hydra's
structured configs support only partly (see STYLE.md), so the tree is parsed
here: dataclasses are the schema, YAML holds the values, and every error names
the path of the offending node, e.g. ``test.run.serial[2].child.serial[0]``.

A dataclass may accept a scalar in place of a mapping (``sleep: 100ms``) by
being :class:`FromScalar`, and check itself after parsing by being
:class:`Validates`; a ValueError either raises becomes a ConfigError with the
path. :func:`set_fields` and :func:`check_regex` help specs check themselves.
A class written as a one-key mapping whose key names its kind, from
kinds registered at run time (a report step), is :class:`OneOf`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, Union, get_args, get_origin, get_type_hints, runtime_checkable

from antler.node.metric import Bitrate, Bytes, Duration, Probability, UnitError

T = TypeVar("T")


@runtime_checkable
class Validates(Protocol):
    """A spec that checks itself once parsed (antler's ``validater``)."""

    def validate(self) -> None:
        """Raise ValueError naming what is wrong; the parser adds the path."""
        ...


@runtime_checkable
class FromScalar(Protocol):
    """A spec type that may be written as a scalar, like ``sleep: 100ms``."""

    @classmethod
    def from_scalar(cls, value: Any) -> Any:
        """Build the spec from the scalar, raising ValueError (or UnitError) if it cannot."""
        ...


@runtime_checkable
class OneOf(Protocol):
    """A spec written as a mapping with one key, the name of its kind: ``analyze: {to: flows.parquet}``.

    The parser checks the keys against :meth:`kinds`, parses each value as its
    kind's type (a null value is no value) and builds the spec with :meth:`of`.
    """

    @classmethod
    def kinds(cls) -> Mapping[str, type]:
        """Return the spec type of each kind, by name, in the order errors list them."""
        ...

    @classmethod
    def of(cls, given: dict[str, Any]) -> Any:
        """Build the spec from the parsed values by kind name; raise ValueError unless there is exactly one."""
        ...


class ConfigError(ValueError):
    """An invalid config value, with the path where it was found."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class FieldError(ValueError):
    """A ValueError from a ``validate`` that names the field it refuses.

    The parser then reports the field's path (``rig.limit``), not only its
    object's (``rig``).
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


_QUANTITIES: dict[type, Any] = {
    Duration: Duration.parse,
    Bytes: Bytes.parse,
    Bitrate: Bitrate.parse,
    Probability: Probability.parse,
}


def parse(cls: type[T], data: Any, path: str) -> T:
    """Return an instance of the spec type cls built from plain data (YAML's).

    Raises ConfigError naming the path of the first bad value, e.g.
    ``test.run.serial[2].child.node.id``.
    """
    return typing.cast(T, _parse(cls, data, path))


def _parse(tp: Any, data: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):  # types.UnionType: X | Y, from 3.10 on
        args = [a for a in get_args(tp) if a is not type(None)]
        if data is None:
            return None
        if len(args) == 1:
            return _parse(args[0], data, path)
        raise ConfigError(path, f"unsupported union type {tp}")
    if tp is Any:
        return data
    if tp in _QUANTITIES:
        try:
            return _QUANTITIES[tp](data)
        except UnitError as e:
            raise ConfigError(path, str(e)) from None
    if origin in (list, tuple):
        if data is None:
            data = []
        if not isinstance(data, (list, tuple)):
            # A single value where a list is expected is a one-item list, as
            # users write `wait: 20ms` for `wait: [20ms]`.
            data = [data]
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_parse(item_tp, v, f"{path}[{i}]") for i, v in enumerate(data)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _parse(val_tp, v, f"{path}.{k}") for k, v in data.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _parse_dataclass(tp, data, path)
    if isinstance(tp, type) and issubclass(tp, OneOf):
        return _parse_one_of(tp, data, path)
    if tp is bool:
        if isinstance(data, bool):
            return data
        raise ConfigError(path, f"expected true or false, got {_describe(data)}")
    if tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
        raise ConfigError(path, f"expected an integer, got {_describe(data)}")
    if tp is float:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
        raise ConfigError(path, f"expected a number, got {_describe(data)}")
    if tp is str:
        if isinstance(data, (str, int, float)) and not isinstance(data, bool):
            return str(data)
        raise ConfigError(path, f"expected text, got {_describe(data)}")
    raise ConfigError(path, f"unsupported type {tp}")


def _parse_dataclass(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        if issubclass(cls, FromScalar) and data is not None:
            try:
                obj = cls.from_scalar(data)
            except (UnitError, ValueError) as e:
                raise ConfigError(path, str(e)) from None
            _validate(obj, path)
            return obj
        if data is None:
            data = {}
        else:
            raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [str(k) for k in data if str(k) not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(f"{path}.{unknown[0]}", f"unknown key {unknown[0]!r} (known keys: {known})")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _parse(hints[name], data[name], f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{path}.{name}", "missing required value")
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(path, str(e)) from None
    _validate(obj, path)
    return obj


def _parse_one_of(cls: type[OneOf], data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(path, f"expected a mapping, got {_describe(data)}")
    kinds = cls.kinds()
    unknown = [str(k) for k in data if str(k) not in kinds]
    if unknown:
        known = ", ".join(sorted(kinds))
        raise ConfigError(f"{path}.{unknown[0]}", f"unknown key {unknown[0]!r} (known keys: {known})")
    given = {name: _parse(tp, data[name], f"{path}.{name}") for name, tp in kinds.items() if data.get(name) is not None}
    try:
        return cls.of(given)
    except ValueError as e:
        raise ConfigError(path, str(e)) from None


def _validate(obj: Any, path: str) -> None:
    if isinstance(obj, Validates):
        try:
            obj.validate()
        except ConfigError:
            raise
        except FieldError as e:
            raise ConfigError(f"{path}.{e.field}" if path else e.field, e.problem) from None
        except ValueError as e:
            raise ConfigError(path, str(e)) from None


def _describe(data: Any) -> str:
    if isinstance(data, Mapping):
        return "a mapping"
    if isinstance(data, (list, tuple)):
        return "a list"
    return repr(data)


def to_plain(obj: Any) -> Any:
    """Return a spec as plain data (dicts, lists, text) for printing and meta.json."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if value is None or value == () or value == [] or value == {}:
                continue
            if f.default is not dataclasses.MISSING and value == f.default:
                continue
            out[f.name] = to_plain(value)
        return out
    if isinstance(obj, (Duration, Bytes, Bitrate, Probability)):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    return obj


def set_fields(value: object, among: tuple[str, ...] = ()) -> list[str]:
    """Name the fields of a dataclass value that are not None, in field order.

    The "exactly one of" unions (a run, a launcher, a report step, a packet
    sender, a stream client's transfer) count them; ``among`` limits the
    count to those fields.
    """
    return [
        f.name
        for f in dataclasses.fields(value)  # type: ignore[arg-type]
        if (not among or f.name in among) and getattr(value, f.name) is not None
    ]


def check_regex(key: str, pattern: str) -> None:
    """Raise ValueError, naming the key and the pattern, if pattern is not a Python regex."""
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{key} {pattern!r}: {e}") from None


def first_line(e: BaseException) -> str:
    """Return an exception said in one line: its message's first line, or its type's name if it has none."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__
