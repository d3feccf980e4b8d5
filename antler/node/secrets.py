"""Secrets: keeping the HMAC key, and values whose names look secret, out of commands, logs and results.

Three layers, each enough on its own for the case it covers:

- **Commands never get the key.** Every environment a node hands to the
  commands it starts is built without ``ANTLER_HMAC_KEY``
  (:func:`command_env`), and the command line takes the key out of its own
  environment before it starts Ray (:func:`antler.node.hmac.take_env_key`),
  so no worker inherits it either.
- **Recorded environments are masked.** The ``sysinfo`` runner records the
  value of a variable whose name looks secret (:func:`looks_secret`: KEY,
  SECRET, TOKEN, PASSWORD, ...) as :data:`MASK`, and so does its page, for
  results recorded before this rule.
- **The driver redacts the key's text** from every log line, error, file
  chunk and system-information value that reaches the test's sink
  (:class:`Redactor`), the last line of defence for a key that got out some
  other way (``cat /proc/self/environ``). A chunk boundary can split the key
  in a saved file, which the first layer prevents.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from antler.node.hmac import KEY_ENV
from antler.node.items import Error, FileData, Item, LogEntry, SysInfo

SECRET_NAME = re.compile(
    r"(?:^|_)(?:KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASS|PASSPHRASE|CREDENTIALS?|PRIVATE|COOKIE|AUTH)(?:_|$)",
    re.IGNORECASE,
)
"""SECRET_NAME matches an environment variable name that looks secret (a whole ``_``-separated word)."""
MASK = "(masked)"
"""MASK stands for the value of a recorded variable whose name looks secret."""
REDACTED = "(redacted)"
"""REDACTED replaces the text of a secret found in a log line, error, file or system information."""
MIN_REDACT_LEN = 6
"""MIN_REDACT_LEN is the shortest secret redacted: replacing every "1" of a log for a 1-character key would hide all."""


def looks_secret(name: str) -> bool:
    """Report whether an environment variable's name looks like it holds a secret."""
    return name == KEY_ENV or SECRET_NAME.search(name) is not None


def command_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return the environment a node's commands get: env without the HMAC key variable."""
    return {k: v for k, v in env.items() if k != KEY_ENV}


def mask_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return env as it may be recorded: the value of each variable that looks secret is MASK."""
    return {k: MASK if looks_secret(k) else v for k, v in env.items()}


class Redactor:
    """Replaces the text of known secrets (at least MIN_REDACT_LEN characters) with REDACTED."""

    def __init__(self, secrets: Iterable[str | bytes | None]) -> None:
        texts = set()
        for s in secrets:
            if isinstance(s, bytes):
                s = s.decode(errors="replace")
            if s and len(s) >= MIN_REDACT_LEN:
                texts.add(s)
        # Longest first, so a secret that contains another is replaced whole.
        self._texts = sorted(texts, key=len, reverse=True)
        self._bytes = [t.encode() for t in self._texts]

    def __bool__(self) -> bool:
        return bool(self._texts)

    def text(self, s: str) -> str:
        """Return s with every secret replaced."""
        for t in self._texts:
            if t in s:
                s = s.replace(t, REDACTED)
        return s

    def value(self, obj: Any) -> Any:
        """Return plain data (dicts, lists, text) with every secret in its text replaced."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        return obj

    def item(self, item: Item) -> Item:
        """Return the data item with every secret in its text replaced (measurements pass as they are)."""
        if isinstance(item, LogEntry):
            text = self.text(item.text)
            return item if text is item.text else dataclasses.replace(item, text=text)
        if isinstance(item, Error):
            message = self.text(item.message)
            return item if message is item.message else dataclasses.replace(item, message=message)
        if isinstance(item, SysInfo):
            return dataclasses.replace(item, data=self.value(item.data))
        if isinstance(item, FileData):
            data = item.data
            for b in self._bytes:
                if b in data:
                    data = data.replace(b, REDACTED.encode())
            return item if data is item.data else dataclasses.replace(item, data=data)
        return item


def redacting(sink: Callable[[Item], None], redactor: Redactor) -> Callable[[Item], None]:
    """Return a sink that passes each item through the redactor to sink (sink itself when there is nothing to redact)."""
    if not redactor:
        return sink

    def redacted(item: Item) -> None:
        sink(redactor.item(item))

    return redacted
