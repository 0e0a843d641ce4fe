"""Loading through the real huggingface_hub client from the loopback Hub: partial download proven by bytes."""

from __future__ import annotations

import numpy as np
import pytest
from huggingface_hub import constants

import mu2hub
from mu2hub import cli
from mu2hub.constants import component_filename
from mu2hub.format.system import Dims
from mu2hub.testing import random_system

DIMS = Dims(32, 2, 64, 4)
REPO = "tests/tiny-system"


@pytest.fixture(scope="module")
def system(hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    files = random_system(root, dims=DIMS, image_size=16, num_layers=3, num_tasks=3, own_blocks=1, num_classes=4)
    hub.create_repo(REPO)
    hub.commit_folder(REPO, root, message="tiny system")
    return files


def _expected_files(tf):
    return {component_filename(c.id) for c in tf.components}


def test_partial_download_is_exact(hub, system, fresh_cache):
    a, b = system["task_0"], system["task_1"]
    hub.reset_log()
    ma = mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache)
    got = hub.downloaded_files(REPO)
    assert sorted(got) == sorted({"config.json", "tasks/task_0.json"} | _expected_files(a))
    files = hub.files(REPO)
    assert hub.bytes_downloaded(REPO) == sum(len(files[f]) for f in got)
    assert hub.bytes_downloaded(REPO) - len(files["config.json"]) - len(files["tasks/task_0.json"]) == a.download_bytes

    # task B: only the components it does not share with A (plus its JSON; config.json is revalidated, not re-sent)
    hub.reset_log()
    mu2hub.from_pretrained(REPO, task="task_1", cache_dir=fresh_cache)
    new = _expected_files(b) - _expected_files(a)
    assert sorted(hub.downloaded_files(REPO)) == sorted({"tasks/task_1.json"} | new)
    assert len(new) == 3  # block.2, norm, head are task_1's own; the rest is shared with task_0

    # warm cache, local_files_only: zero requests, same numbers
    hub.reset_log()
    again = mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache, local_files_only=True)
    assert hub.log == []
    x = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    np.testing.assert_array_equal(ma.logits(x), again.logits(x))


def test_revision_is_pinned_for_the_whole_load(hub, system, fresh_cache):
    repo = "tests/pinned"
    hub.create_repo(repo)
    for path, data in hub.files(REPO).items():
        hub.write_file(repo, path, data)
    first = hub.head(repo)
    m = mu2hub.from_pretrained(repo, task="task_2", cache_dir=fresh_cache)
    assert m.revision == first
    # a later commit moves main; loading the old revision by sha still gives the old files
    hub.write_file(repo, "tasks/extra.json", b"{}", message="unrelated")
    old = mu2hub.from_pretrained(repo, task="task_2", revision=first, cache_dir=fresh_cache)
    assert old.revision == first and hub.head(repo) != first
    with pytest.raises(mu2hub.FormatError, match="extra"):
        mu2hub.from_pretrained(repo, task="extra", cache_dir=fresh_cache)


def test_unknown_task_lists_tasks_from_the_hub(hub, system, fresh_cache):
    with pytest.raises(mu2hub.TaskNotFoundError) as e:
        mu2hub.from_pretrained(REPO, task="cifar10", revision=None, cache_dir=fresh_cache)
    assert "task_0, task_1, task_2" in str(e.value)
    assert mu2hub.list_tasks(REPO, cache_dir=fresh_cache) == ["task_0", "task_1", "task_2"]


def test_offline_cold_cache_lists_missing_files(hub, system, fresh_cache):
    with pytest.raises(mu2hub.LocalFilesMissingError, match="config.json"):
        mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache, local_files_only=True)
    # config and task file cached, components not: every missing component is named
    mu2hub.list_tasks(REPO, cache_dir=fresh_cache)
    from huggingface_hub import hf_hub_download

    hf_hub_download(REPO, "tasks/task_0.json", cache_dir=fresh_cache)
    with pytest.raises(mu2hub.LocalFilesMissingError) as e:
        mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache, local_files_only=True)
    assert set(e.value.missing) == _expected_files(system["task_0"])
    assert "local_files_only" in str(e.value)


def test_hf_hub_offline_env_is_honoured(hub, system, fresh_cache, monkeypatch):
    mu2hub.from_pretrained(REPO, task="task_1", cache_dir=fresh_cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset_log()
    mu2hub.from_pretrained(REPO, task="task_1", cache_dir=fresh_cache)
    assert hub.log == []
    with pytest.raises(mu2hub.LocalFilesMissingError):
        mu2hub.from_pretrained(REPO, task="task_2", cache_dir=fresh_cache)


def _cached_file(cache, filename):
    return next(cache.glob(f"models--tests--tiny-system/snapshots/*/{filename}"))


def test_corrupt_cache_is_refetched_and_offline_corruption_is_named(hub, system, fresh_cache):
    tf = system["task_0"]
    mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache)
    head = next(c for c in tf.components if c.slot == "head")
    blob = _cached_file(fresh_cache, head.filename).resolve()
    blob.write_bytes(blob.read_bytes()[: head.bytes // 2])  # truncate the cached copy
    with pytest.raises(mu2hub.ComponentIntegrityError, match=head.id):
        mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache, local_files_only=True)
    # online: the damaged copy is fetched once more and the load succeeds
    hub.reset_log()
    mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache)
    assert hub.downloaded_files(REPO) == [head.filename]
    # and force_download=True also recovers
    blob = _cached_file(fresh_cache, head.filename).resolve()
    blob.write_bytes(b"\0" * head.bytes)
    mu2hub.from_pretrained(REPO, task="task_0", cache_dir=fresh_cache, force_download=True)


def test_corrupt_file_on_the_hub_is_an_integrity_error(hub, system, tmp_path):
    repo = "tests/corrupt"
    files = hub.files(REPO)
    tf = system["task_1"]
    head = next(c for c in tf.components if c.slot == "head")
    hub.create_repo(repo)
    for path, data in files.items():
        if path != ".gitattributes":
            hub.write_file(repo, path, data[:-3] if path == head.filename else data)
    with pytest.raises(mu2hub.ComponentIntegrityError, match=head.filename):
        mu2hub.from_pretrained(repo, task="task_1", cache_dir=tmp_path / "c")


def test_cli_against_the_hub(hub, system, capsys, tmp_path):
    cache = str(tmp_path / "cache")
    assert cli.main(["tasks", REPO, "--cache-dir", cache]) == 0
    assert "task_0" in capsys.readouterr().out
    assert cli.main(["info", REPO, "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "activated params" in out and "task_1" in out and "(task_0, task_2)" in out
    assert cli.main(["download", REPO, "--task", "task_2", "--cache-dir", cache]) == 0
    assert "task_2:" in capsys.readouterr().out
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(img)
    assert cli.main(["predict", REPO, "--task", "task_2", str(img), "--cache-dir", cache, "--local-files-only"]) == 0
    assert str(img) in capsys.readouterr().out
    assert cli.main(["predict", REPO, "--task", "nope", str(img), "--cache-dir", cache]) == 2
    assert "available tasks" in capsys.readouterr().err
