"""Shielding cleanup from cancellation: it runs to its end, and a cancel that came meanwhile is raised after it.

trio's rule: the cancel exception is never swallowed. Cleanup (a test's
cancelers and nodes, an invocation's reports and result folder) must not be
cut short by a second Ctrl-C, or servers and namespaces stay behind and
folders stay half-written; but that Ctrl-C must still reach the caller once
the cleanup is done, or a sweep would carry on with its next test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def shielded(aw: Awaitable[T]) -> T:
    """Await aw to its end, even through cancellation, and return its result.

    Raises CancelledError after aw has ended if the caller was canceled
    meanwhile (any number of times), or what aw raised.
    """
    task = asyncio.ensure_future(aw)
    canceled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            canceled = True
    if canceled:
        raise asyncio.CancelledError()
    return task.result()
