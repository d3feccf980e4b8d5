"""TestSpec: one test of an experiment, as the ``test`` key of the config sets it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from antler.config.parse import parse
from antler.node.metric import Duration
from antler.node.run import Run
from antler.report.spec import After, During
from antler.testid import ID_PART, id_path, id_text


@dataclass(frozen=True)
class TestSpec:
    """TestSpec is a test: its ID, output path, timeout, HMAC choice, run tree and reports.

    With ``hmac``, packets are signed with a key from ``ANTLER_HMAC_KEY``, else
    from the file ``hmac_key_file``, else a random key made for the test
    (antler.node.hmac.resolve_key); the key itself is never in the config.
    """

    id: dict[str, str] = field(default_factory=dict)
    path: str = ""
    timeout: Duration = field(default_factory=lambda: Duration(660_000_000_000))
    hmac: bool = False
    hmac_key_file: str = ""
    run: Run = field(default_factory=Run)
    during: During = field(default_factory=During)
    after: After = field(default_factory=After)

    def validate(self) -> None:
        """Validate checks the ID and output path."""
        if not self.id:
            raise ValueError("test.id needs at least one key, e.g. {experiment: NAME}")
        for k, v in self.id.items():
            if not ID_PART.fullmatch(k):
                raise ValueError(f"test ID key {k!r} must match {ID_PART.pattern}")
            if not ID_PART.fullmatch(v):
                raise ValueError(f"test ID value {v!r} (key {k!r}) must match {ID_PART.pattern}")
        if self.path and (self.path.startswith("/") or ".." in self.path.split("/")):
            raise ValueError(f"test path {self.path!r} must be relative, without '..'")

    def output_path(self) -> str:
        """Output_path is the test's folder under the result folder, from path or its ID."""
        if self.path:
            return self.path
        return id_path(self.id)

    def id_text(self) -> str:
        """Id_text is the ID as ``k=v k=v``, for humans."""
        return id_text(self.id)


def parse_run(data: Any, path: str = "run") -> Run:
    """Parse_run builds and validates a run tree from plain data, raising ConfigError with the path."""
    return parse(Run, data, path)
