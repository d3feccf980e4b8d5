"""Encoding result files: zstd, gzip or xz compression with Python's libraries (no shell tools)."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import zstandard

CHUNK = 1 << 20


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


def open_decoded(path: Path) -> IO[bytes]:
    """Open_decoded opens an encoded file (by its extension) for reading its original bytes."""
    if path.suffix == ".zst":
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)
    if path.suffix == ".gz":
        return cast(IO[bytes], gzip.open(path, "rb"))
    if path.suffix == ".xz":
        return lzma.open(path, "rb")
    return open(path, "rb")


def encode_file(src: Path, extension: str, level: int | None = None, destructive: bool = False) -> Path | None:
    """Encode_file writes src + extension; returns it, or None when it exists already.

    The encoded file is written under a temporary name and renamed when
    complete, so an interrupted encode never leaves a truncated file behind
    (and never removes the original).
    """
    dst = src.with_name(src.name + extension)
    if dst.exists():
        return None
    tmp = dst.with_name(f".{dst.name}.tmp")
    with open(src, "rb") as fin, open(tmp, "wb") as fout:
        w = WRITERS[extension](fout, level, os.fstat(fin.fileno()).st_size)
        with w:
            shutil.copyfileobj(fin, w, CHUNK)
    tmp.rename(dst)
    if destructive:
        src.unlink()
    return dst


def encode(
    directory: Path, patterns: tuple[str, ...], extension: str, level: int | None, destructive: bool
) -> list[Path]:
    """Encode encodes every file in directory matching one of the glob patterns."""
    done = []
    for pattern in patterns:
        for src in sorted(directory.glob(pattern)):
            if src.is_file() and not src.name.endswith(extension):
                out = encode_file(src, extension, level, destructive)
                if out is not None:
                    done.append(out)
    return done
