"""The node package: everything that runs on a test host (antler's ``node``)."""

from antler.node.feedback import Feedback, FeedbackConflict, merge
from antler.node.items import ROOT_NODE_ID, Batch, Error, FileData, Item, LogEntry, PacketInfo, StreamInfo
from antler.node.metric import Bitrate, Bytes, Duration
from antler.node.node import Env, Launcher, Netns, Node
from antler.node.root import Control, do
from antler.node.run import Child, Run, Schedule, parse_run
from antler.node.spec import ConfigError

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
