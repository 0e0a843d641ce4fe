"""One writer per run directory (`mu2hub.evolution.claim`): a live holder refuses every second start, with its host
and pid; a killed holder's claim is taken over. No `flock`: the claim is an `O_EXCL` file (object stores)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mu2hub.errors import RunClaimedError
from mu2hub.evolution import claim as claims
from mu2hub.evolution.claim import claim_run

from locations import REPO, TINY_CONFIG

CONFIG = str(TINY_CONFIG)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_claim(root: Path, agent: str, holder: dict, *, age_s: float = 0.0) -> Path:
    path = root / claims.CLAIMS_DIR / f"{agent}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    t = time.time() - age_s
    os.utime(path, (t, t))
    return path


def test_second_claim_is_refused_with_the_holders_host_and_pid(tmp_path):
    with claim_run(tmp_path, "main"):
        with pytest.raises(RunClaimedError, match=f"host {socket.gethostname()} \\(pid {os.getpid()}") as e:
            claim_run(tmp_path, "main")
        assert e.value.holder["pid"] == os.getpid()
    with claim_run(tmp_path, "main"):  # released on exit: claimed again at once
        pass


@pytest.mark.parametrize("first,second,refused", [
    ("main", "a", True), ("a", "main", True), ("a", "a", True), ("a", "b", False)])
def test_agent_modes(tmp_path, first, second, refused):
    """`main` writes without locks, so it excludes every agent; named agents (flock'ed CAS) exclude only their name."""
    with claim_run(tmp_path, first):
        if refused:
            with pytest.raises(RunClaimedError, match=f"agent {first!r}"):
                claim_run(tmp_path, second)
            assert not (tmp_path / claims.CLAIMS_DIR / f"{second}.json").exists() or first == second
        else:
            claim_run(tmp_path, second).release()


def test_claim_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    me = claims._me()
    path = _write_claim(tmp_path, "main", {**me, "pid": _dead_pid()})
    with claim_run(tmp_path, "main"):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_reused_pid_with_another_start_time_is_stale(tmp_path):
    me = claims._me()
    _write_claim(tmp_path, "main", {**me, "start": "1"})  # this pid, but not this process's start
    claim_run(tmp_path, "main").release()


def test_claim_from_another_host_lives_while_its_heartbeat_does(tmp_path):
    other = {"host": "node-7", "boot_id": "x", "pid": 123, "start": "9", "since": time.time()}
    _write_claim(tmp_path, "main", other, age_s=5)
    with pytest.raises(RunClaimedError, match="host node-7 \\(pid 123"):
        claim_run(tmp_path, "main")
    _write_claim(tmp_path, "main", other, age_s=claims.STALE_S + 5)
    claim_run(tmp_path, "main").release()


@pytest.mark.parametrize("content", [b"", b"\xff{not json", b"[1, 2]"])
def test_empty_or_garbage_claim_is_stale_once_old(tmp_path, content):
    path = tmp_path / claims.CLAIMS_DIR / "main.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    old = time.time() - claims.STALE_S - 5
    os.utime(path, (old, old))
    claim_run(tmp_path, "main").release()


def test_empty_claim_being_written_is_respected(tmp_path):
    path = tmp_path / claims.CLAIMS_DIR / "main.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    with pytest.raises(RunClaimedError):
        claim_run(tmp_path, "main")


def _cmd(workdir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "training/evolve.py"), "--config", f"{CONFIG}:4", "--workdir", str(workdir),
            "--quiet", *extra]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def test_two_processes_second_refused_then_kill_9_and_resume_takes_over(tmp_path):
    workdir = tmp_path / "run"
    first = subprocess.Popen(_cmd(workdir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None and not (workdir / "agents").exists():
            time.sleep(0.05)
        assert first.poll() is None, first.stdout.read().decode()[-2000:]
        for extra in ((), ("--resume",), ("--agent", "b", "--tasks", "digits")):
            start = time.time()
            out = subprocess.run(_cmd(workdir, *extra), env=_env(), capture_output=True, text=True, timeout=120)
            assert out.returncode == 2, out.stderr[-2000:]
            assert f"pid {first.pid}" in out.stderr and socket.gethostname() in out.stderr, out.stderr
            assert time.time() - start < 60 and first.poll() is None  # refused at once; the holder runs on
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert json.loads((workdir / claims.CLAIMS_DIR / "main.json").read_text())["pid"] == first.pid  # left behind
    out = subprocess.run(_cmd(workdir, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert not (workdir / claims.CLAIMS_DIR / "main.json").exists()  # released at the end
    assert json.loads((workdir / "agents/main.json").read_text())["loop"] == 2  # both tasks, 4 generations each
