"""Serving a results folder over HTTP, so its pages open in a browser on another machine."""

from __future__ import annotations

import functools
import http.server
import sys
from pathlib import Path

from antler.results.store import ResultsError


def make_server(root: Path, bind: str = "127.0.0.1", port: int = 8080) -> http.server.ThreadingHTTPServer:
    """Return an HTTP server for the results folder root, bound but not yet serving.

    Raises ResultsError when root is not a folder, OSError when the address cannot be bound.
    """
    if not root.is_dir():
        raise ResultsError(f"no results folder {root}")
    handler = functools.partial(_QuietHandler, directory=str(root))
    return http.server.ThreadingHTTPServer((bind, port), handler)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """_QuietHandler serves files, logging requests to stderr in one short line."""

    def log_message(self, format: str, *args: object) -> None:
        print(f"{self.address_string()} {format % args}", file=sys.stderr)
