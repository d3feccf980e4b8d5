"""Launch errors: a node that could not be launched (LaunchError), a Ray cluster not joined (ClusterError)."""

from __future__ import annotations


class LaunchError(Exception):
    """A node that could not be launched (unknown host, refused connection, missing python3, ...).

    Its message names the node and the cause; the root records it as an Error
    and the test fails before any run starts.
    """


class ClusterError(Exception):
    """A Ray cluster this command cannot join, with what to do about it in one line."""
