"""LaunchError: a node that could not be launched, with the cause in the user's terms."""

from __future__ import annotations


class LaunchError(Exception):
    """A node that could not be launched (unknown host, refused connection, missing python3, ...).

    Its message names the node and the cause; the root records it as an Error
    and the test fails before any run starts.
    """
