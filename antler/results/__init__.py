"""Result folders: writing a test's data as it arrives, and loading it for analysis.

``antler.results.load(path)`` is the way in for notebooks. The names load on
first use, so the config layer can use :mod:`antler.results.codec` without
importing pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from antler import lazy

if TYPE_CHECKING:
    from antler.results.tables import Results as Results, TestResult as TestResult, load as load

_MODULES = {
    "Results": "antler.results.tables",
    "TestResult": "antler.results.tables",
    "load": "antler.results.tables",
}


__getattr__ = lazy.attributes(__name__, _MODULES)
