"""Files a stranger names are read only when they are regular files, and only up to a bound.

Why before opening: `open()` on a FIFO blocks until someone writes to it, a character device (`/dev/zero`,
`/dev/urandom`) never ends, and a directory fails with an error that names nothing. `regular_file` refuses all of
them from `stat` alone; `read_bounded` then opens without blocking (`O_NONBLOCK`), checks the opened file again
(the path may have been swapped in between) and reads at most `max_bytes`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Iterator

from ..errors import FormatError, Mu2hubError
from .strictjson import show_value

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def regular_file(path: str | os.PathLike, what: str = "file") -> os.stat_result:
    """`os.stat(path)` of a regular file; `FormatError` naming the path for anything else (nothing is opened).
    A missing path stays `FileNotFoundError`."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"the {what} is {_kind(st.st_mode)}, not a regular file: refused before opening it",
                          path=str(path))
    return st


def read_bounded(path: str | os.PathLike, max_bytes: int, what: str = "file") -> bytes:
    """The bytes of regular file `path`, at most `max_bytes` (`FormatError` naming the file beyond that)."""
    with open_regular(path, what) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FormatError(f"the {what} has over the {max_bytes:,}-byte limit", path=str(path))
    return data


def open_regular(path: str | os.PathLike, what: str = "file"):
    """A binary file object on regular file `path` (checked before and after opening; never blocks on a FIFO)."""
    regular_file(path, what)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    f = os.fdopen(fd, "rb", buffering=1 << 16)
    mode = os.fstat(f.fileno()).st_mode
    if not stat.S_ISREG(mode):
        f.close()
        raise FormatError(f"the {what} was replaced by {_kind(mode)} while opening it", path=str(path))
    return f


def is_regular(path: Path) -> bool:
    """Whether `path` exists and is a regular file (symlinks followed), without opening it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def malformed(where: str, what: str) -> Iterator[None]:
    """Inside: reading a stranger's file, where a missing key, a shape of the wrong rank or a wrong type surfaces as
    `KeyError` / `IndexError` / `TypeError` / `ValueError` deep in the conversion. Each becomes one `FormatError`
    naming the file (CLI exit 2), never a traceback (exit 3); our own named errors pass through unchanged."""
    try:
        yield
    except Mu2hubError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
        raise FormatError(f"{what}: {type(e).__name__}: {show_value(e.args[0] if e.args else '')}", path=where) from e
