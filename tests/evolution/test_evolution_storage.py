"""What a run directory needs from its filesystem: one agent needs no locks and never appends (object-store mounts
hold its run); concurrent agents need locks that exclude each other, and a directory without them is refused."""

from __future__ import annotations

import errno
import fcntl
import os
import sys

import pytest

from mu2hub.errors import SharedStorageError
from mu2hub.evolution import storage
from mu2hub.evolution.evolve import evolve

from locations import TINY_CONFIG, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

_APPENDS: dict[str, list[str] | str | None] = {"under": None, "seen": []}


def _record_appends(event: str, args: tuple) -> None:
    """Audit hook (process-wide, inert unless a test sets `under`): files opened for appending under a folder."""
    under = _APPENDS["under"]
    if under and event == "open" and isinstance(args[0], str) and args[0].startswith(under):
        if (args[2] or 0) & os.O_APPEND or "a" in (args[1] or ""):
            _APPENDS["seen"].append(args[0])


sys.addaudithook(_record_appends)


def _no_locks(*_args, **_kwargs):
    raise OSError(errno.ENOLCK, "No locks available")  # what flock gives on a mount without lock support


def test_one_agent_runs_where_locks_fail_and_never_appends(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", _no_locks)
    cfg = load_config(str(TINY_CONFIG))
    cfg["tasks"] = ["digits"]
    _APPENDS.update(under=str(tmp_path), seen=[])
    try:
        run = evolve(cfg, tmp_path / "run", quiet=True)
    finally:
        _APPENDS["under"] = None
    assert run.system.list_tasks() == ["digits"] and len(run.history()) == 2
    assert _APPENDS["seen"] == []  # every file written whole (temp + rename): nothing relies on atomic appends
    assert not (tmp_path / "run" / "locks").exists()


def test_concurrent_agents_refuse_a_directory_whose_locks_do_not_exclude(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", lambda *_a, **_k: None)  # a FUSE mount that accepts locks but keeps none
    cfg = load_config(str(TINY_CONFIG))
    with pytest.raises(SharedStorageError, match="do not exclude each other.*--agent"):
        evolve(cfg, tmp_path / "run", agent="a", tasks=["digits"], quiet=True)
    assert list((tmp_path / "run").iterdir()) == []  # refused before any state: no config, no agent state
    monkeypatch.setattr(fcntl, "flock", _no_locks)
    with pytest.raises(SharedStorageError, match="not supported"):
        evolve(cfg, tmp_path / "run", agent="a", tasks=["digits"], quiet=True)


def test_probes_pass_on_a_local_filesystem(tmp_path):
    storage.check_rename(tmp_path)
    storage.check_locks(tmp_path)
    assert list(tmp_path.iterdir()) == []  # the probes leave nothing behind
