"""Encoding result files: compressing them with the codecs of :mod:`antler.results.codec`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from antler.results.codec import WRITERS

CHUNK = 1 << 20


def encode_file(src: Path, extension: str, level: int | None = None, destructive: bool = False) -> Path | None:
    """Write src + extension; returns it, or None when it exists already.

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
    """Encode every file in directory matching one of the glob patterns."""
    done = []
    for pattern in patterns:
        for src in sorted(directory.glob(pattern)):
            if src.is_file() and not src.name.endswith(extension):
                out = encode_file(src, extension, level, destructive)
                if out is not None:
                    done.append(out)
    return done
