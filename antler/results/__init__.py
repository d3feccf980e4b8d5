"""Result folders: writing a test's data as it arrives, and loading it for analysis.

The ways in for notebooks: ``antler.results.load(path)`` (each test's tables
as pandas, ``concat`` across a sweep) and ``antler.results.dataset(path,
table)`` (one table of every test as a pyarrow dataset, for DuckDB, polars or
pyarrow to query in place), and ``antler.results.intervals(path, metric)``
(per combination of the swept keys, the mean, median and bootstrap interval
over the repetitions). The names load on first use, so the config layer
can use :mod:`antler.results.codec` without importing pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from antler import lazy

if TYPE_CHECKING:
    from antler.results.query import dataset as dataset
    from antler.results.repetitions import bootstrap_ci as bootstrap_ci, intervals as intervals
    from antler.results.tables import Results as Results, TestResult as TestResult, load as load

_MODULES = {
    "Results": "antler.results.tables",
    "TestResult": "antler.results.tables",
    "load": "antler.results.tables",
    "bootstrap_ci": "antler.results.repetitions",
    "intervals": "antler.results.repetitions",
    # In a module of another name: a submodule antler.results.dataset would be
    # set as the package's attribute on import, hiding the function.
    "dataset": "antler.results.query",
}


__getattr__ = lazy.attributes(__name__, _MODULES)
