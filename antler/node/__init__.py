"""The node package: everything that runs on a test host (antler's ``node``).

Its names load on first use (PEP 562): a process that needs one small module
(a packet sender process, a node worker) does not import every runner and pyarrow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from antler import lazy

if TYPE_CHECKING:
    from antler.node.feedback import Feedback, FeedbackConflict, merge
    from antler.node.items import ROOT_NODE_ID, Batch, Error, FileData, Item, LogEntry, PacketInfo, StreamInfo
    from antler.node.metric import Bitrate, Bytes, Duration
    from antler.node.node import Env, Launcher, Netns, Node
    from antler.node.root import Control, do
    from antler.node.run import Child, Run, Schedule, parse_run
    from antler.node.spec import ConfigError

_MODULES = {
    "Batch": "antler.node.items",
    "Bitrate": "antler.node.metric",
    "Bytes": "antler.node.metric",
    "Child": "antler.node.run",
    "ConfigError": "antler.node.spec",
    "Control": "antler.node.root",
    "Duration": "antler.node.metric",
    "Env": "antler.node.node",
    "Error": "antler.node.items",
    "Feedback": "antler.node.feedback",
    "FeedbackConflict": "antler.node.feedback",
    "FileData": "antler.node.items",
    "Item": "antler.node.items",
    "Launcher": "antler.node.node",
    "LogEntry": "antler.node.items",
    "Netns": "antler.node.node",
    "Node": "antler.node.node",
    "PacketInfo": "antler.node.items",
    "ROOT_NODE_ID": "antler.node.items",
    "Run": "antler.node.run",
    "Schedule": "antler.node.run",
    "StreamInfo": "antler.node.items",
    "do": "antler.node.root",
    "merge": "antler.node.feedback",
    "parse_run": "antler.node.run",
}

__all__ = [
    "ROOT_NODE_ID",
    "Batch",
    "Bitrate",
    "Bytes",
    "Child",
    "ConfigError",
    "Control",
    "Duration",
    "Env",
    "Error",
    "Feedback",
    "FeedbackConflict",
    "FileData",
    "Item",
    "Launcher",
    "LogEntry",
    "Netns",
    "Node",
    "PacketInfo",
    "Run",
    "Schedule",
    "StreamInfo",
    "do",
    "merge",
    "parse_run",
]


__getattr__ = lazy.attributes(__name__, _MODULES)
