"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable


def atomic_write(path: str | os.PathLike, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write via a temp file in the same folder + fsync + rename: readers see the old or the new file, never half.

    `data` may be given in pieces (`format.component_chunks`), written one after the other, never joined. The temp
    file is created with mode 0o666 minus the umask (as `open()` would), not `mkstemp`'s 0600, so a shared folder, a
    Space built from an export, or another user of a run directory can read what was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
