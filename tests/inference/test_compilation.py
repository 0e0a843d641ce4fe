"""The compilation cache (mu2hub/inference/compilation.py): entries written by a cold process are loaded by a fresh one,
damaged or foreign entries never break a run, the cache can be turned off, unsafe folders are refused; and within
one process, children that differ only in what their programs do not depend on share compiled programs."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import jax
import pytest
from jax import monitoring

from mu2hub import model as vit
from mu2hub.inference.compilation import VerifiedFolderCache, enable_compilation_cache, host_key
from mu2hub.data import Split, get_task
from mu2hub.errors import CompilationCacheError, CompilationCacheWarning
from mu2hub.format.system import Dims, Structure
from mu2hub.train.child import train_child

from locations import REPO, SUPPORT, TINY_CONFIG as TINY

PROBE = SUPPORT / "compilation_probe.py"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", **extra)
    return env


def _probe(where: str | Path, **env: str) -> tuple[dict, str]:
    """One tiny child in a fresh process; (its JSON report, its stderr)."""
    out = subprocess.run([sys.executable, str(PROBE), str(where)], env=_env(**env), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


@pytest.fixture
def own_cache_state():
    """In-process tests change JAX's global cache: hand it back off (the next evolve re-enables the suite's)."""
    yield
    enable_compilation_cache(False)


def _entries(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("*.xla"))


# ---------------------------------------------------------------------------------------------------
# Across processes
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    """A cold process's report and its cache folder (tests copy the folder before changing it)."""
    base = tmp_path_factory.mktemp("cold") / "cc"
    report, _ = _probe(base)
    return report, base


def _copy(base: Path, to: Path) -> Path:
    shutil.copytree(base, to)
    return to / host_key()


def test_cold_process_writes_and_a_fresh_process_loads(cold, tmp_path):
    report, base = cold
    folder = Path(report["folder"])
    assert folder.parent == base and folder.name == host_key()
    assert report.get("cache_misses", 0) >= 2 and report.get("cache_hits", 0) == 0  # misses = entries written
    assert len(_entries(folder)) == report["cache_misses"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(base.stat().st_mode) == 0o700
    _copy(base, tmp_path / "cc")
    warm, _ = _probe(tmp_path / "cc")
    # every compilation request of the fresh process was served from the folder, nothing compiled or written
    assert warm["cache_hits"] == warm["compile_requests_use_cache"] == report["compile_requests_use_cache"]
    assert warm.get("cache_misses", 0) == 0 and len(_entries(tmp_path / "cc" / host_key())) == report["cache_misses"]
    assert warm["params"] == report["params"] and warm["history"] == report["history"]


def test_damaged_and_foreign_entries_are_recompiled_not_run(cold, tmp_path):
    report, base = cold
    folder = _copy(base, tmp_path / "cc")
    files = _entries(folder)
    assert len(files) >= 4
    blobs = [f.read_bytes() for f in files]
    magic = blobs[0][:blobs[0].index(b"\n") + 1]
    files[0].write_bytes(blobs[1])  # foreign: another program's (valid) entry under this key
    files[1].write_bytes(blobs[0][: len(blobs[0]) // 2])  # truncated
    files[2].write_bytes(zlib.compress(os.urandom(4096)))  # not ours at all
    damaged = bytearray(blobs[3])
    damaged[len(damaged) // 2] ^= 0xFF
    files[3].write_bytes(bytes(damaged))  # one flipped byte
    (folder / "notes.txt").write_text("a stray file")
    (folder / ".x.xla.123.tmp").write_bytes(b"a writer killed mid-write")
    warm, stderr = _probe(tmp_path / "cc")
    assert warm["params"] == report["params"] and warm["history"] == report["history"]
    assert "CompilationCacheWarning" in stderr and "compiling afresh" in stderr
    # the four were compiled again and written back (as a cold process writes them); every other request was a hit
    assert warm["cache_misses"] == 4 and warm["cache_hits"] == report["compile_requests_use_cache"] - 4
    mangled = [blobs[1], blobs[0][: len(blobs[0]) // 2], None, bytes(damaged)]
    assert all(f.read_bytes().startswith(magic) and f.read_bytes() != m for f, m in zip(files, mangled))


def test_turned_off_writes_nothing(tmp_path, monkeypatch, own_cache_state):
    report, _ = _probe("default", MU2HUB_COMPILATION_CACHE="0", MU2HUB_CACHE=str(tmp_path / "base"))
    assert report["folder"] is None and "cache_hits" not in report and "cache_misses" not in report
    assert not (tmp_path / "base").exists()
    for setting in ("off", "false", "No"):
        monkeypatch.setenv("MU2HUB_COMPILATION_CACHE", setting)
        assert enable_compilation_cache() is None
    monkeypatch.setenv("MU2HUB_COMPILATION_CACHE", str(tmp_path / "cc"))
    assert enable_compilation_cache(False) is None and not (tmp_path / "cc").exists()  # the argument wins
    assert jax.config.jax_compilation_cache_dir is None


def test_evolve_cli_second_run_compiles_nothing(tmp_path):
    """The quickstart's situation in small: a second evolution in a fresh process (as a second `make demo`, or a
    --resume) loads every program from the folder, and trains exactly the same children."""
    def evolve(workdir: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, str(REPO / "training/evolve.py"), "--config", f"{TINY}:1", "--workdir",
               str(tmp_path / workdir), "--quiet", "--tasks", "digits", "--compilation-cache", str(tmp_path / "cc")]
        out = subprocess.run(cmd, env=_env(JAX_LOG_COMPILES="1", JAX_EXPLAIN_CACHE_MISSES="1"), capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return out

    cold = evolve("first")
    assert "PERSISTENT COMPILATION CACHE MISS for 'jit_train_step'" in cold.stderr
    warm = evolve("second")
    assert "PERSISTENT COMPILATION CACHE MISS" not in warm.stderr
    for module in ("jit_train_step", "jit__correct"):
        assert f"Persistent compilation cache hit for '{module}'" in warm.stderr
    from mu2hub.evolution.run import RunDir

    def trained(workdir: str) -> list:
        return [(r["task"], r["quality"], r["score"], r["sources"], r["mutations"]) for r in RunDir(tmp_path / workdir).history()]

    assert trained("second") == trained("first")


# ---------------------------------------------------------------------------------------------------
# Where, and which folders are refused
# ---------------------------------------------------------------------------------------------------


def test_default_folder_and_environment(tmp_path, monkeypatch, own_cache_state):
    monkeypatch.delenv("MU2HUB_COMPILATION_CACHE")
    monkeypatch.setenv("MU2HUB_CACHE", str(tmp_path / "mine"))
    assert enable_compilation_cache() == tmp_path / "mine" / "compilation" / host_key()
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine" / "compilation" / host_key())
    monkeypatch.delenv("MU2HUB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert enable_compilation_cache() == tmp_path / "xdg" / "mu2hub" / "compilation" / host_key()
    assert enable_compilation_cache(False) is None and jax.config.jax_compilation_cache_dir is None


def test_unsafe_folders_are_refused(tmp_path, monkeypatch, own_cache_state):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(CompilationCacheError, match="others may write it .mode 0777.*chmod go-w"):
        enable_compilation_cache(shared)
    monkeypatch.delenv("MU2HUB_COMPILATION_CACHE")
    monkeypatch.setenv("MU2HUB_CACHE", str(tmp_path / "base"))
    (tmp_path / "base" / "compilation").mkdir(parents=True)
    (tmp_path / "base" / "compilation").chmod(0o775)
    with pytest.warns(CompilationCacheWarning, match="training without a compilation cache"):
        assert enable_compilation_cache() is None  # the default folder: a warning, not a failed run
    (tmp_path / "other").mkdir(mode=0o700)
    owner = (tmp_path / "other").stat().st_uid
    monkeypatch.setattr(os, "getuid", lambda: owner + 1)  # as if another user had made it
    with pytest.raises(CompilationCacheError, match=f"belongs to user id {owner}"):
        enable_compilation_cache(tmp_path / "other")
    monkeypatch.undo()
    (tmp_path / "file").write_text("x")
    with pytest.raises(CompilationCacheError, match="cannot create it"):
        enable_compilation_cache(tmp_path / "file" / "cache")
    assert jax.config.jax_compilation_cache_dir is None


def test_a_users_own_jax_cache_is_left_alone(tmp_path, own_cache_state):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    try:
        assert enable_compilation_cache(tmp_path / "ours") == tmp_path / "theirs"
        assert not (tmp_path / "ours").exists()
    finally:
        jax.config.update("jax_compilation_cache_dir", None)


def test_folder_is_bounded_least_recently_used_first(tmp_path):
    folder = tmp_path / "cc"
    folder.mkdir()
    cache = VerifiedFolderCache(folder, max_bytes=3000)
    for i, key in enumerate(("jit_a-1", "jit_b-2", "jit_c-3")):
        cache.put(key, bytes([i]) * 900)
        os.utime(cache.file(key), (1000 + i, 1000 + i))
    assert cache.get("jit_a-1") == bytes([0]) * 900  # a hit makes it the most recently used
    stale = folder / ".old.xla.1.tmp"
    stale.write_bytes(b"killed writer")
    os.utime(stale, (0, 0))
    cache.put("jit_d-4", b"\3" * 900)
    assert [cache.get(k) is not None for k in ("jit_a-1", "jit_b-2", "jit_c-3", "jit_d-4")] == [True, False, True, True]
    assert not stale.exists()
    cache.put("jit_e-5", b"\0" * 4000)  # larger than the bound: not written, nothing evicted for it
    assert cache.get("jit_e-5") is None and len(_entries(folder)) == 3
    assert all(cache.file(k).parent == folder for k in ("../../escape-1", "/abs/path-2", "a b/c-3"))


# ---------------------------------------------------------------------------------------------------
# Within one process
# ---------------------------------------------------------------------------------------------------


def test_children_share_programs_that_do_not_depend_on_their_differences():
    """Two children differing in lr and in crop settings that crop nothing share one train step; a child with
    another frozen/trainable partition shares the evaluation (which does not depend on it)."""
    traces: list[str] = []

    def listen(event: str, _duration: float, fun_name: str | None = None, **_) -> None:
        if event.endswith("jaxpr_trace_duration"):
            traces.append(fun_name)

    d = get_task("digits")
    data = dataclasses.replace(d, train=Split(d.train.images[:64], d.train.labels[:64]),
                               validation=Split(d.validation.images[:32], d.validation.labels[:32]))
    structure = Structure(Dims(24, 2, 48, 4), 8, 1, d.num_classes)  # a shape no other test compiles
    params = vit.init_path(structure, jax.random.key(1))
    kw = dict(num_validations=1, steps_per_validation=2, batch_size=16, seed=0)
    first = {"opt_lr": 0.1, "ds_crop": False, "ds_area_range_min": 0.5}
    second = {"opt_lr": 0.02, "ds_crop": True, "ds_area_range_min": 1.0, "ds_aspect_ratio_range_min": 0.5}
    monitoring.register_event_duration_secs_listener(listen)
    try:
        for hparams, frozen_slots in ((first, ("cls",)), (second, ("cls",)), (first, ("cls", "block.0"))):
            frozen = {s: t for s, t in params.items() if s in frozen_slots}
            train_child(structure, frozen, {s: t for s, t in params.items() if s not in frozen}, data, hparams, **kw)
    finally:
        monitoring.unregister_event_duration_listener(listen)
    assert traces.count("train_step") == 2  # the third child's partition is another program
    assert traces.count("_correct") == 1
