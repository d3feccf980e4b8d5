"""Codecs for result files: zstd, gzip and xz, with Python's libraries (no shell tools).

The Encode report writes them; :func:`antler.results.load` reads an encoded
table as if it were plain.
"""

from __future__ import annotations

import gzip
import lzma
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

ENCODED = (".zst", ".gz", ".xz")
"""ENCODED are the extensions of the codecs, which Encode writes and load() reads."""


def _zstd_writer(f: IO[bytes], level: int | None, size: int) -> Any:
    # The size goes in the frame header, so `zstd -l` and one-shot decoders know it.
    return zstandard.ZstdCompressor(level=3 if level is None else level).stream_writer(f, size=size, closefd=False)


def _gzip_writer(f: IO[bytes], level: int | None, size: int) -> Any:
    return gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6 if level is None else level, mtime=0)


def _xz_writer(f: IO[bytes], level: int | None, size: int) -> Any:
    return lzma.LZMAFile(f, mode="wb", preset=6 if level is None else level)


WRITERS: dict[str, Callable[[IO[bytes], int | None, int], Any]] = {
    ".zst": _zstd_writer,
    ".gz": _gzip_writer,
    ".xz": _xz_writer,
}
"""WRITERS maps each extension to a function(file, level, size) returning a writable stream that encodes into file."""


def open_decoded(path: Path) -> IO[bytes]:
    """Open an encoded file (by its extension) for reading its original bytes; others open as is."""
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")
