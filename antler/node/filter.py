"""MessageFilter and ResultStream: which items stream live and which are buffered.

By default every item streams towards the root as it is produced (measurements
in batches), so an interrupted test keeps what it measured. A ``result_stream``
runner can hold some items back on the node until the run tree completes, e.g.
to keep result traffic off the path under test. Errors always stream.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from antler.node.items import Batch, Error, FileData, FlowStatus, Item, LogEntry, PacketInfo, StreamInfo


@dataclass(frozen=True)
class MessageFilter:
    """Selects items by type and field: file globs, logs, flows."""

    file: tuple[str, ...] = ()
    log: bool = False
    flow: tuple[str, ...] = ()

    def accepts(self, item: Item) -> bool:
        """Report whether the item matches this filter."""
        if isinstance(item, FileData):
            return any(fnmatch.fnmatchcase(item.name, pattern) for pattern in self.file)
        if isinstance(item, LogEntry):
            return self.log
        if isinstance(item, (StreamInfo, PacketInfo, Batch, FlowStatus)):
            return any(fnmatch.fnmatchcase(item.flow, pattern) for pattern in self.flow)
        return False


@dataclass(frozen=True)
class ResultStream:
    """Selects items to stream (include) or to buffer (exclude)."""

    include: MessageFilter | None = None
    exclude: MessageFilter | None = None

    def streams(self, item: Item) -> bool:
        """Report whether the item is sent now (True) or buffered (False)."""
        if isinstance(item, Error):
            return True
        if self.include is not None and not self.include.accepts(item):
            return False
        return not (self.exclude is not None and self.exclude.accepts(item))
