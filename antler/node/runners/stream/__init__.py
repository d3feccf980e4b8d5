"""Stream flows: TCP transfers between a stream client and a stream server.

A client connects, sends a small header (flow, direction, CCA, stop rules;
see :mod:`.header`), and then one end sends while the other receives, each on
its own thread (:mod:`.pump`), both recording StreamInfo and StreamIO, and the
sender TCP_INFO when asked.
"""

from antler.node.runners.stream.client import StreamClient, StreamError
from antler.node.runners.stream.header import Header, HeaderError
from antler.node.runners.stream.server import StreamServer
from antler.node.runners.stream.transfer import Download, Stream, Transfer, Upload
from antler.node.sockopt import Sockopt

__all__ = [
    "Download",
    "Header",
    "HeaderError",
    "Sockopt",
    "Stream",
    "StreamClient",
    "StreamError",
    "StreamServer",
    "Transfer",
    "Upload",
]
