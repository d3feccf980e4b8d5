"""Node specs: what to launch (antler's ``Node``, ``Netns``, ``Local``, ``SSH``), as plain values.

A :class:`Node` is a hashable value: the same spec used twice in a tree is the
same node, launched once. This module imports only the standard library (and
the spec engine, as stdlib-only), so the config layer and the rigs can build node specs without the runtime
(the runners, the recorder) that executes them.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from antler.node.hmac import KEY_ENV
from antler.node.spec import set_fields

NODE_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
"""NODE_ID is the pattern a whole node ID (and a namespace name) must match."""


@dataclass(frozen=True)
class Netns:
    """The Linux network namespace a node runs in (man ip-netns(8)).

    With ``create`` the namespace is created at launch (named after the node ID
    unless ``name`` is set) and deleted when the test ends; otherwise the
    existing namespace ``name`` is joined and left in place.
    """

    name: str = ""
    create: bool = False

    def validate(self) -> None:
        """Raise ValueError for a name ip-netns would refuse."""
        if self.name and not NODE_ID.fullmatch(self.name):
            raise ValueError(f"invalid namespace name {self.name!r}")

    @property
    def enabled(self) -> bool:
        """Whether the node uses a namespace at all."""
        return bool(self.name) or self.create

    def name_for(self, node_id: str) -> str:
        """Return the namespace a node with this spec uses: ``name``, or the node ID."""
        return self.name or node_id


@dataclass(frozen=True)
class Env:
    """The environment of a node's commands: ``vars`` as KEY=value, over the inherited one.

    The HMAC key's variable (``ANTLER_HMAC_KEY``) is never passed on, and
    may not be set here: the config is saved with the results.
    """

    vars: tuple[str, ...] = ()
    inherit: bool = True

    def validate(self) -> None:
        """Raise ValueError for a variable that is not KEY=value."""
        for v in self.vars:
            if "=" not in v or v.startswith("="):
                raise ValueError(f"env var {v.partition('=')[0]!r} is not KEY=value")
            if v.partition("=")[0] == KEY_ENV:
                raise ValueError(
                    f"env var {KEY_ENV} would put the HMAC key into the config saved with the results: "
                    "set it in the environment of antler-ray (or use test.hmac_key_file)"
                )

    def build(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Return the environment, starting from base (or os.environ) if inherited, without the HMAC key."""
        env = dict(base if base is not None else os.environ) if self.inherit else {}
        for v in self.vars:
            key, _, value = v.partition("=")
            env[key] = value
        env.pop(KEY_ENV, None)
        return env


@dataclass(frozen=True)
class RayLauncher:
    """Starts the node as a Ray actor, on the cluster host named ``host`` (empty: the driver's)."""

    host: str = ""


@dataclass(frozen=True)
class Local:
    """Starts the node as a child process of its parent, speaking the node protocol over stdio.

    With ``root`` the process runs through ``sudo -n`` when the tool is not
    root; when the tool is root (under sudo) and ``root`` is false, it runs as
    ``SUDO_USER``, as antler's local launcher does.
    """

    root: bool = False


@dataclass(frozen=True)
class SSH:
    """Starts the node on another host over SSH, speaking the node protocol over the session.

    ``destination`` is ``[user@]host[:port]`` (an IPv6 address in brackets,
    ``[::1]:2222``); the user defaults to this one's, the port to 22, and
    ``~/.ssh/config`` may map the host to a HostName, User, Port and
    IdentityFile. Keys come from the SSH agent, the default keys in
    ``~/.ssh``, or ``key_file``; the host key must be in ``~/.ssh/known_hosts``
    unless ``accept_new_host_key`` adds a host not seen before (a changed key
    is always refused). With ``root`` the node runs through ``sudo -n`` on the
    host unless the SSH user is root. ``python`` is the host's Python 3.9+
    interpreter (a command on its PATH, or a path, e.g. a venv's).
    """

    destination: str = ""
    root: bool = False
    key_file: str = ""
    accept_new_host_key: bool = False
    python: str = "python3"

    def validate(self) -> None:
        """Raise ValueError for a missing or malformed destination."""
        parse_destination(self.destination)
        if not self.python.strip():
            raise ValueError("python must name the host's Python interpreter")


@dataclass(frozen=True)
class Destination:
    """An SSH destination: user (empty: the default), host and port (0: the default)."""

    user: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user + '@' if self.user else ''}{host}{f':{self.port}' if self.port else ''}"


def parse_destination(text: str) -> Destination:
    """Split ``[user@]host[:port]``; it raises ValueError naming what is wrong."""
    if not text:
        raise ValueError("destination is required, as [user@]host[:port]")
    user, at, rest = text.rpartition("@")
    if at and not user:
        raise ValueError(f"destination {text!r} has an empty user")
    port_text = ""
    if rest.startswith("["):
        host, close, tail = rest[1:].partition("]")
        if not close or (tail and not tail.startswith(":")):
            raise ValueError(f"destination {text!r}: write an IPv6 address as [addr]:port")
        port_text = tail[1:]
    elif rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    else:
        host = rest
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"destination {text!r} has no valid host")
    port = 0
    if port_text or rest.endswith(":"):
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"destination {text!r}: port {port_text!r} is not 1-65535")
        port = int(port_text)
    return Destination(user, host, port)


@dataclass(frozen=True)
class Launcher:
    """The union of available launchers: at most one is set; none means ``ray``."""

    ray: RayLauncher | None = None
    local: Local | None = None
    ssh: SSH | None = None

    def validate(self) -> None:
        """Raise ValueError when more than one launcher is set."""
        set_ = set_fields(self)
        if len(set_) > 1:
            raise ValueError(f"only one launcher may be set, found {', '.join(set_)}")

    @property
    def name(self) -> str:
        """The chosen launcher's name; Ray is the default."""
        set_ = set_fields(self)
        return set_[0] if set_ else "ray"


@dataclass(frozen=True)
class Node:
    """The information needed to launch a node; a hashable value.

    ``platform`` is accepted for antler's configs and recorded; nodes run the
    same Python package wherever they are launched.
    """

    id: str = ""
    platform: str = ""
    launcher: Launcher = field(default_factory=Launcher)
    netns: Netns = field(default_factory=Netns)
    env: Env = field(default_factory=Env)

    def validate(self) -> None:
        """Raise ValueError for a node ID that is not a NODE_ID."""
        if not NODE_ID.fullmatch(self.id):
            raise ValueError(f"node id {self.id!r} must match {NODE_ID.pattern}")

    @property
    def netns_name(self) -> str | None:
        """The namespace the node runs in, or None when it runs in its host's."""
        return self.netns.name_for(self.id) if self.netns.enabled else None
