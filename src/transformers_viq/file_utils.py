# Copyright 2026 The transformers-viq contributors. Licensed under the Apache License, Version 2.0.
"""Writing files so that a killed process never leaves a half-written one behind, and strict JSON."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[Any]:
    """
    Open a hidden temporary file next to `path` for writing; on success it replaces `path` in one rename, with the
    permissions a plain `open()` would have given it. On an error (or a kill) `path` is left untouched and the
    temporary file is removed.

    Yields the open file object; `with atomic_write(p, "w") as f: f.write(...)`. Use [`atomic_path`] for writers that
    want a path rather than a file object.
    """
    with atomic_path(path) as temporary, open(temporary, mode, **open_kwargs) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """
    A temporary path next to `path` to write to (e.g. `save_file(..., temporary)`); it replaces `path` when the block
    ends without an error, and is removed otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix + ".tmp")
    os.close(handle)
    try:
        yield temporary
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual permissions
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def finite_or_null(value):
    """`value` with every non-finite float replaced by `None` (strict JSON has no infinity or NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write strict JSON atomically (an infinite PSNR, say, is written as `null`)."""
    with atomic_write(path, "w", encoding="utf-8") as handle:
        json.dump(finite_or_null(payload), handle, indent=2, allow_nan=False)
        handle.write("\n")


__all__ = ["atomic_path", "atomic_write", "finite_or_null", "write_json"]
