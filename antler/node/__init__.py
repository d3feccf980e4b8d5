"""The node package: everything that runs on a test host (antler's ``node``).

Its names load on first use (PEP 562): a process that needs one small module
(a packet sender process, a node worker) does not import every runner.
``_MODULES`` is the list of public names; the ``TYPE_CHECKING``
block repeats them (as re-exports) for type checkers only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from antler import lazy

if TYPE_CHECKING:
    from antler.node.conn import Conn as Conn, pipe_conn as pipe_conn, stdio_conn as stdio_conn
    from antler.node.feedback import Feedback as Feedback, FeedbackConflict as FeedbackConflict, merge as merge
    from antler.node.items import (
        ROOT_NODE_ID as ROOT_NODE_ID,
        Batch as Batch,
        Error as Error,
        FileData as FileData,
        Item as Item,
        LogEntry as LogEntry,
        PacketInfo as PacketInfo,
        StreamInfo as StreamInfo,
    )
    from antler.node.metric import Bitrate as Bitrate, Bytes as Bytes, Duration as Duration
    from antler.node.nodespec import (
        SSH as SSH,
        Env as Env,
        Launcher as Launcher,
        Local as Local,
        Netns as Netns,
        Node as Node,
        RayLauncher as RayLauncher,
    )
    from antler.node.process import ServeError as ServeError, serve as serve
    from antler.node.root import Control as Control, do as do
    from antler.node.run import Child as Child, NodeHandle as NodeHandle, Run as Run, Schedule as Schedule

_MODULES = {
    "Batch": "antler.node.items",
    "Bitrate": "antler.node.metric",
    "Bytes": "antler.node.metric",
    "Child": "antler.node.run",
    "Conn": "antler.node.conn",
    "Control": "antler.node.root",
    "Duration": "antler.node.metric",
    "Env": "antler.node.nodespec",
    "Error": "antler.node.items",
    "Feedback": "antler.node.feedback",
    "FeedbackConflict": "antler.node.feedback",
    "FileData": "antler.node.items",
    "Item": "antler.node.items",
    "Launcher": "antler.node.nodespec",
    "Local": "antler.node.nodespec",
    "LogEntry": "antler.node.items",
    "Netns": "antler.node.nodespec",
    "Node": "antler.node.nodespec",
    "NodeHandle": "antler.node.run",
    "PacketInfo": "antler.node.items",
    "ROOT_NODE_ID": "antler.node.items",
    "RayLauncher": "antler.node.nodespec",
    "Run": "antler.node.run",
    "SSH": "antler.node.nodespec",
    "ServeError": "antler.node.process",
    "Schedule": "antler.node.run",
    "StreamInfo": "antler.node.items",
    "do": "antler.node.root",
    "pipe_conn": "antler.node.conn",
    "serve": "antler.node.process",
    "stdio_conn": "antler.node.conn",
    "merge": "antler.node.feedback",
}


__getattr__ = lazy.attributes(__name__, _MODULES)
