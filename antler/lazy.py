"""Lazy package attributes (PEP 562): a package's names import their modules on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attributes(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` that imports each name from the module ``modules`` maps it to.

    A process that needs one small module of a package (a packet sender
    process, a node worker) then does not pay for importing the whole package.
    """
    namespace = importlib.import_module(package).__dict__

    def getattr_(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return getattr_
