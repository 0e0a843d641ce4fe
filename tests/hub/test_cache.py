"""The cache as huggingface_hub keeps it: nothing of ours inside HF_HUB_CACHE, and offline listings that say what
they cover. Real loads through the loopback Hub; huggingface_hub's own `scan_cache_dir` and `hf cache ls` judge."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from huggingface_hub import constants, scan_cache_dir

import mu2hub
from mu2hub import cli
from mu2hub.hub.cache import stamp_dir
from mu2hub.errors import PartialListingWarning
from mu2hub.format.system import Dims
from mu2hub.testing import random_system

from locations import REPO


@pytest.fixture(scope="module")
def repo(hub, tmp_path_factory):
    name = "cache/system"
    folder = tmp_path_factory.mktemp("cache-system")
    random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=2, num_tasks=3, num_classes=3)
    hub.commit_folder(name, folder)
    return name


def test_scan_cache_dir_sees_a_clean_cache_after_loads(repo, tmp_path):
    cache = tmp_path / "hub-cache"
    for t in ("task_0", "task_1"):
        mu2hub.from_pretrained(repo, task=t, cache_dir=cache)
    mu2hub.from_pretrained(repo, task="task_0", cache_dir=cache)  # warm: served through the stamps
    info = scan_cache_dir(cache)
    assert info.warnings == []  # no CorruptedCacheException for anything we left there
    (entry,) = info.repos
    # only what huggingface_hub itself writes there
    assert entry.repo_id == repo and {p.name for p in cache.iterdir()} == {f"models--{repo.replace('/', '--')}", ".locks",
                                                                           "CACHEDIR.TAG"}
    # the stamps live in huggingface_hub's assets cache, one folder per hub cache
    stamps = stamp_dir(cache)
    assert Path(constants.HF_ASSETS_CACHE) in stamps.parents and len(list(stamps.iterdir())) > 0
    assert stamp_dir(cache) != stamp_dir(tmp_path / "another")


def test_hf_cache_ls_reports_nothing_odd(repo, tmp_path):
    hf = Path(sys.executable).with_name("hf")
    if not hf.exists():
        pytest.fail(f"the `hf` CLI is not next to {sys.executable}: huggingface_hub installs it")
    cache = tmp_path / "hub-cache"
    mu2hub.from_pretrained(repo, task="task_2", cache_dir=cache)
    env = dict(os.environ, HF_HUB_CACHE=str(cache))
    out = subprocess.run([str(hf), "cache", "ls"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout + out.stderr
    assert repo in text and "inconsisten" not in text.lower() and "corrupt" not in text.lower(), text


def test_offline_listing_says_it_covers_only_cached_tasks(hub, tmp_path, capsys):
    name = "cache/offline"
    folder = tmp_path / "system"
    random_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=1, num_tasks=3, num_classes=3)
    hub.commit_folder(name, folder)
    cache = tmp_path / "c"
    assert cli.main(["download", name, "--task", "task_1", "--cache-dir", str(cache)]) == 0  # never listed online
    capsys.readouterr()
    with pytest.warns(PartialListingWarning, match=r"only the 1 task\(s\) whose files are in the local cache"):
        assert mu2hub.list_tasks(name, cache_dir=cache, local_files_only=True) == ["task_1"]
    assert cli.main(["info", name, "--cache-dir", str(cache), "--local-files-only"]) == 0
    out = capsys.readouterr()
    assert "1 tasks (cached ones only: offline)" in out.out and "note:" in out.err and "may hold more" in out.err
    # the same through HF_HUB_OFFLINE=1, in a fresh process, as a user would switch it
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-m", "mu2hub.cli", "info", name, "--cache-dir", str(cache)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "(cached ones only: offline)" in res.stdout and "may hold more" in res.stderr, res.stderr
    # listed once online at this commit: offline listings are complete from then on, with no warning
    assert mu2hub.list_tasks(name, cache_dir=cache) == ["task_0", "task_1", "task_2"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialListingWarning)
        assert mu2hub.list_tasks(name, cache_dir=cache, local_files_only=True) == ["task_0", "task_1", "task_2"]
    # a snapshot_download caches huggingface_hub's tree listing, which is complete too
    other = tmp_path / "c2"
    from huggingface_hub import snapshot_download

    name2 = "cache/offline-tree"
    hub.commit_folder(name2, folder)
    snapshot_download(name2, cache_dir=other, allow_patterns=["config.json", "tasks/task_0.json"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialListingWarning)
        assert mu2hub.list_tasks(name2, cache_dir=other, local_files_only=True) == ["task_0", "task_1", "task_2"]


def test_stamp_is_invalidated_by_a_rewrite(repo, tmp_path):
    """The stamp outside the cache still only vouches for the exact file it saw."""
    cache = tmp_path / "hub-cache"
    model = mu2hub.from_pretrained(repo, task="task_0", cache_dir=cache)
    ref = model.components[-1]
    blob = next(p for p in cache.rglob(ref.filename.split("/")[-1]))
    real = blob.resolve()
    data = bytearray(real.read_bytes())
    data[-1] ^= 0xFF
    os.chmod(real, 0o644)
    real.write_bytes(bytes(data))
    with pytest.raises(mu2hub.ComponentIntegrityError, match=ref.id):
        mu2hub.from_pretrained(repo, task="task_0", cache_dir=cache, local_files_only=True)
    shutil.rmtree(cache)
