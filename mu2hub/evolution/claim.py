"""One writer per run directory: a claim file created with `O_EXCL`, naming its holder, taken over when stale.

Why not `flock`: an object-store mount (gcsfuse, s3fs) has no working locks, yet holds a single agent's run; an
exclusive create is all these filesystems share with local disks and NFS. The claim
`<workdir>/claims/<agent>.json` holds host, boot id, pid, the process's start time and when it was taken. A claim
is live while its holder is: on the same host (same boot id) the pid must still run with the same start time
(so a reused pid does not keep a dead run claimed); from another host the holder refreshes the file's mtime every
`HEARTBEAT_S` and a claim silent for `STALE_S` is stale. A stale claim is taken over (removed only if it still
holds the bytes judged stale, then created again with `O_EXCL`).

Agents: the `main` agent writes without locks, so it excludes every other agent; a named agent (`--agent`, µ3Net)
excludes the same name and `main`. Both create their own claim first and then look at the others, so of two
racing starts at least one is refused — never neither.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RunClaimedError

CLAIMS_DIR = "claims"
HEARTBEAT_S = 20.0
STALE_S = 120.0
_WRITING_S = 10.0  # a claim file still empty this long after creation was left by a crash mid-write
MAIN = "main"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (`/proc/<pid>/stat` field 22), or "" where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def _me() -> dict[str, Any]:
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(), "start": _start_time(os.getpid()),
            "since": time.time()}


def _alive(holder: dict[str, Any], mtime: float) -> bool:
    """Whether the claim's holder may still be writing (see the module docstring)."""
    if holder.get("host") == socket.gethostname() and holder.get("boot_id") == _boot_id() and _boot_id():
        pid = holder.get("pid")
        if not isinstance(pid, int) or pid <= 0:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # another user's live process
        return not holder.get("start") or _start_time(pid) in ("", holder.get("start"))
    return time.time() - mtime < STALE_S


def _read(path: Path) -> tuple[bytes, dict[str, Any] | None, float] | None:
    """(raw bytes, holder or None while being written, mtime), or None when there is no claim."""
    try:
        raw, mtime = path.read_bytes(), path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(raw.decode("utf-8")) if raw else None
    except (UnicodeDecodeError, ValueError):
        holder = {}  # garbage: nobody can be shown to hold it
    return raw, holder if isinstance(holder, dict) or holder is None else {}, mtime


def _live_holder(path: Path) -> dict[str, Any] | None:
    """The live holder of the claim at `path`, or None (no claim, or a stale one, which is removed)."""
    state = _read(path)
    if state is None:
        return None
    raw, holder, mtime = state
    if holder is None:  # being written right now, or left empty by a crash
        return {"host": "?", "pid": "?"} if time.time() - mtime < _WRITING_S else _remove_if_same(path, raw)
    if _alive(holder, mtime):
        return holder
    return _remove_if_same(path, raw)


def _remove_if_same(path: Path, raw: bytes) -> None:
    try:
        if path.read_bytes() == raw:
            path.unlink()
    except FileNotFoundError:
        pass
    return None


def _refusal(root: Path, agent: str, holder: dict[str, Any], other: str) -> RunClaimedError:
    since = holder.get("since")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(since, (int, float)) else ""
    return RunClaimedError(
        f"{root} is being evolved by agent {other!r} on host {holder.get('host')} (pid {holder.get('pid')}{when}); "
        f"agent {agent!r} cannot write there at the same time" + (" (agent 'main' writes without locks and "
        "excludes every other agent)" if MAIN in (agent, other) else "") + ". Wait for it to finish, or stop it: a "
        f"killed holder's claim is taken over on the next start", holder=holder)


@dataclass
class RunClaim:
    """A held claim: `release()` (or leaving the `with` block) removes it; a heartbeat keeps it fresh meanwhile."""

    path: Path
    raw: bytes
    _stop: threading.Event

    def release(self) -> None:
        """Remove the claim, and `claims/` when no other agent holds one (a refused start leaves nothing behind)."""
        self._stop.set()
        _remove_if_same(self.path, self.raw)
        try:
            self.path.parent.rmdir()
        except OSError:
            pass  # another agent's claim is there

    def __enter__(self) -> "RunClaim":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def claim_run(root: str | os.PathLike, agent: str = MAIN) -> RunClaim:
    """Claim run directory `root` for `agent`, or raise `RunClaimedError` naming the live holder's host and pid."""
    root = Path(root)
    folder = root / CLAIMS_DIR
    path = folder / f"{agent}.json"
    raw = json.dumps({**_me(), "agent": agent}).encode()
    for _ in range(5):  # a stale claim removed by `_live_holder`, or `claims/` removed by a release, is retried
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileNotFoundError:
            continue
        except FileExistsError:
            holder = _live_holder(path)
            if holder is not None:
                raise _refusal(root, agent, holder, agent) from None
            continue
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        break
    else:
        raise RunClaimedError(f"{root}: the claim {path} keeps reappearing; another process is starting there")
    others = [p for p in folder.glob("*.json") if p != path and (agent == MAIN or p.stem == MAIN)]
    for other in others:
        holder = _live_holder(other)
        if holder is not None:
            _remove_if_same(path, raw)
            raise _refusal(root, agent, holder, other.stem)
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(path, raw, stop), daemon=True, name=f"mu2hub-claim-{agent}").start()
    return RunClaim(path, raw, stop)


def _heartbeat(path: Path, raw: bytes, stop: threading.Event) -> None:
    """Refresh the claim's mtime while it is ours, so another host sees a live holder."""
    while not stop.wait(HEARTBEAT_S):
        try:
            if path.read_bytes() != raw:
                return
            os.utime(path)
        except OSError:
            return
