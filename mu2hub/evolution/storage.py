"""What a run directory needs from its filesystem, checked before a run writes any state (docs/TRAINING.md).

One agent needs only what every write already uses: a file renamed over another replaces it whole (temp file +
rename). It never appends to a file and never takes a lock, so an object-store mount (gcsfuse, s3fs), where
neither works, holds a single agent's run. Concurrent agents on one directory (µ3Net, `--agent`) also need file
locks that exclude each other, for the compare-and-swap of task files; a multi-host job needs every process to
see the directory process 0 writes (to resume from it). Each need is probed here and a directory that lacks it
is refused with `SharedStorageError`, instead of being corrupted later.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from pathlib import Path
from typing import Iterator

from filelock import FileLock

from ..errors import SharedStorageError
from ..utils.atomic import atomic_write
from .cluster import Cluster

_PROBE = ".mu2hub-probe"


def check_rename(root: Path) -> None:
    """A file renamed over an existing one replaces it (what every atomic write relies on)."""
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f"{_PROBE}-{secrets.token_hex(4)}"
    try:
        atomic_write(probe, b"old")
        atomic_write(probe, b"new")
        if probe.read_bytes() != b"new":
            raise SharedStorageError(f"{root}: renaming a file over another did not replace it; every write of a run "
                                     "relies on that: use another filesystem for the run directory")
    except OSError as e:
        if isinstance(e, SharedStorageError):
            raise
        raise SharedStorageError(f"{root}: cannot write and rename files here ({e})") from e
    finally:
        probe.unlink(missing_ok=True)


def check_locks(root: Path) -> None:
    """Two locks on one file exclude each other (what concurrent agents' compare-and-swap relies on)."""
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f"{_PROBE}-{secrets.token_hex(4)}.lock"
    try:
        with open(probe, "a") as first, open(probe, "a") as second:
            try:
                fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                raise SharedStorageError(f"{root}: file locks are not supported here ({e}); concurrent agents "
                                         "(--agent) need them for the compare-and-swap of task files: run one agent "
                                         "at a time, or use a filesystem with working locks (local disk, NFSv4)") from e
            try:
                fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    return  # the second lock was refused: locks exclude each other
                raise SharedStorageError(f"{root}: file locks fail here ({e}); concurrent agents need them") from e
            raise SharedStorageError(f"{root}: file locks do not exclude each other here (a second lock on the same "
                                     "file succeeded); concurrent agents (--agent) need them for the compare-and-swap "
                                     "of task files: run one agent at a time, or use a filesystem with working locks "
                                     "(local disk, NFSv4)")
    finally:
        probe.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive lock on `lock_file` (concurrent agents only; `check_locks` vetted the filesystem)."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_file):
        yield


def check_shared(root: Path, cluster: Cluster) -> None:
    """Every process of the job sees a file process 0 just wrote in the run directory (needed to resume)."""
    if cluster.process_count == 1:
        return
    token = cluster.broadcast(secrets.token_hex(8) if cluster.is_primary else None, "agreeing on a probe")
    probe = root / f"{_PROBE}-{token}"
    cluster.on_primary(lambda: atomic_write(probe, token.encode()), "writing the shared-storage probe")

    def read() -> None:
        try:
            seen = probe.read_bytes().decode()
        except OSError as e:
            seen = f"nothing ({e.strerror or e})"
        if seen != token:
            raise SharedStorageError(
                f"{root}: process {cluster.process_index} does not see the file process 0 just wrote there (read "
                f"{seen!r}); every host of a job must mount the run directory on shared storage, visible at once")

    try:
        cluster.all_ok(read, "checking that the run directory is shared")
    finally:
        cluster.on_primary(lambda: os.remove(probe), "removing the shared-storage probe")
