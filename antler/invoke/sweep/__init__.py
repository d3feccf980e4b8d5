"""The sweep scheduler: which test of an invocation runs where, and when, and running them.

- :mod:`.run`: :class:`Sweep`, the queue of an invocation's tests, started
  one after another, or at once across the sweep's hosts as they have room;
- :mod:`.placement`: the hosts' room (``sweep.per_host``), which test a host
  takes next, and each running test's namespace tag;
- :mod:`.tree`: one placed test's run tree, its unpinned nodes put on its
  host and the namespaces it creates renamed with its tag.

What the ``sweep`` key says (the hosts, how many tests per host) is parsed
with the rest of the root config (:mod:`antler.config.sweep`).
"""

from __future__ import annotations

from antler.invoke.sweep.run import Sweep

__all__ = ["Sweep"]
