"""The compilation cache is trusted only when the whole chain is (`mu2hub.inference.compilation`): every folder above it
owned by the user or root and not writable by others (sticky `/tmp` allowed), and entries authenticated with a
per-user HMAC key, not a plain hash anyone could compute and forge."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from mu2hub.inference.compilation import _MAGIC, KEY_NAME, VerifiedFolderCache, enable_compilation_cache, user_key
from mu2hub.errors import CompilationCacheError, CompilationCacheWarning


@pytest.fixture
def own_cache_state():
    yield
    enable_compilation_cache(False)


def test_a_parent_others_may_write_breaks_the_chain(tmp_path, monkeypatch, own_cache_state):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # not sticky: anyone may rename the private folder below it away
    with pytest.raises(CompilationCacheError, match=r"shared above it may be written by others \(mode 0777\)"):
        enable_compilation_cache(shared / "mine")
    monkeypatch.delenv("MU2HUB_COMPILATION_CACHE", raising=False)
    monkeypatch.setenv("MU2HUB_CACHE", str(shared / "base"))
    with pytest.warns(CompilationCacheWarning, match="training without a compilation cache"):
        assert enable_compilation_cache() is None  # the default folder: one warning, the cache off


def test_a_sticky_world_writable_parent_is_allowed(tmp_path, own_cache_state):
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    assert enable_compilation_cache(sticky / "mine") is not None
    assert stat.S_IMODE((sticky / "mine").stat().st_mode) == 0o700


def test_a_parent_owned_by_another_user_breaks_the_chain(tmp_path, monkeypatch, own_cache_state):
    folder = tmp_path / "cc"
    folder.mkdir(mode=0o700)
    real_stat, me, parent = os.stat, os.getuid(), str(tmp_path.resolve())

    def stat_as_if_parent_were_someone_elses(path, *a, **k):
        st = real_stat(path, *a, **k)
        if str(path) == parent:
            return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, me + 1, *tuple(st)[5:]))
        return st

    monkeypatch.setattr(os, "stat", stat_as_if_parent_were_someone_elses)
    with pytest.raises(CompilationCacheError, match=f"above it belongs to user id {me + 1}"):
        enable_compilation_cache(folder)


def test_entries_are_authenticated_with_the_users_key(tmp_path):
    folder = tmp_path / "cc"
    folder.mkdir(mode=0o700)
    cache = VerifiedFolderCache(folder)
    cache.put("jit_a-1", b"honest executable")
    assert cache.get("jit_a-1") == b"honest executable"
    key = (tmp_path / KEY_NAME).read_bytes()
    assert len(key) == 32 and stat.S_IMODE((tmp_path / KEY_NAME).stat().st_mode) == 0o600
    # a forger who can write the folder but not read the key computes the old plain sha256: refused, not run
    evil = b"attacker's executable"
    cache.file("jit_a-1").write_bytes(_MAGIC + hashlib.sha256(b"jit_a-1\0" + evil).digest() + evil)
    with pytest.warns(CompilationCacheWarning, match="compiling afresh"):
        assert cache.get("jit_a-1") is None
    # another user's key (another cache) authenticates nothing here
    VerifiedFolderCache(folder, key=os.urandom(32)).put("jit_b-2", b"theirs")
    with pytest.warns(CompilationCacheWarning):
        assert cache.get("jit_b-2") is None


def test_a_key_others_can_read_turns_the_cache_off(tmp_path, own_cache_state):
    base = tmp_path / "base"
    assert enable_compilation_cache(base) is not None
    enable_compilation_cache(False)
    (base / KEY_NAME).chmod(0o644)
    with pytest.raises(CompilationCacheError, match="readable or owned by others"):
        enable_compilation_cache(base)
    (base / KEY_NAME).unlink()
    (base / KEY_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(CompilationCacheError, match="is not a 32-byte file"):
        user_key(base)
