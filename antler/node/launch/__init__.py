"""Launchers: how a node named in a child run is started.

:class:`Launchers` (launchers.py; ProcessLaunchers in process_launchers.py) picks the launcher the node's spec names
(``ray`` unless another is set: the ``ray`` package, local.py, the ``ssh``
package) and remembers the facts of each node it launched (launcher, host,
namespace, clock offset), and of the nodes those launched in turn, for the
test's meta.json. One instance serves a whole command; ``close`` shuts down
an embedded Ray it started. Ray is imported only when a test has a Ray node;
a node process launches its own nodes with :class:`ProcessLaunchers` and
never imports it.
"""

from __future__ import annotations

from antler.node.launch.errors import ClusterError, LaunchError
from antler.node.launch.launchers import Launchers, TestLaunch
from antler.node.launch.process_launchers import Facts, ProcessLaunchers, ReportsFacts, flat_facts

__all__ = [
    "ClusterError",
    "Facts",
    "LaunchError",
    "Launchers",
    "ProcessLaunchers",
    "ReportsFacts",
    "TestLaunch",
    "flat_facts",
]
