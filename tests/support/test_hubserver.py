"""The loopback Hub (tests/support/hubserver.py) driven by the real huggingface_hub client over real sockets.

These tests pin the protocol details the rest of the suite relies on: ETags and the cache, partial snapshot
downloads, ranges, error mapping, listing, commits with compare-and-swap, and the pull-request flow.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubserver import HubServer, configure_hf_env

# Imported *before* configure_hf_env runs on purpose: the in-process tests exercise the constant patching path,
# test_env_only_wiring_in_subprocess the env-before-import path.
import huggingface_hub  # noqa: E402
from huggingface_hub import (  # noqa: E402
    CommitOperationAdd,
    CommitOperationCopy,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (  # noqa: E402
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder  # noqa: E402


def _safetensors(n: int = 4) -> bytes:
    """A valid safetensors file (built by hand: 8-byte header length, JSON header, raw float32 data)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]},
                         "__metadata__": {"kind": "block"}}).encode()
    return struct.pack("<Q", len(header)) + header + struct.pack(f"<{n}f", *range(n))


SEED = {
    "config.json": b'{"library_name": "mu2hub"}',
    "README.md": b"---\nlibrary_name: mu2hub\ntags:\n- vision\n---\n# card\n",
    "tasks/a.json": b'{"task": "a"}',
    "tasks/b.json": b'{"task": "b"}',
    "components/ab/ab12.safetensors": _safetensors(),
    "components/cd/cd34.safetensors": _safetensors(8),
}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    root = tmp_path_factory.mktemp("hubserver")
    with HubServer(root / "server", persist=True) as server:
        restore = configure_hf_env(server.url, root / "hf_home")
        try:
            yield server
        finally:
            restore()


def _seed(hub: HubServer, repo_id: str, tmp_path: Path, files: dict[str, bytes] = SEED) -> str:
    folder = tmp_path / f"seed-{repo_id.replace('/', '--')}"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return hub.commit_folder(repo_id, folder, message="seed")


def test_configure_patches_imported_client(hub: HubServer) -> None:
    assert huggingface_hub.constants.ENDPOINT == hub.url
    assert huggingface_hub.hf_api.api.endpoint == hub.url
    assert HfApi().endpoint == hub.url


def test_download_etags_and_cache_reuse(hub: HubServer, tmp_path: Path) -> None:
    sha = _seed(hub, "org/dl", tmp_path)
    hub.reset_log()
    path = hf_hub_download("org/dl", "config.json", cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == SEED["config.json"]
    assert f"snapshots/{sha}/config.json" in Path(path).as_posix()
    assert [(r.method, r.status) for r in hub.log] == [("HEAD", 200), ("GET", 200)]
    assert hub.downloaded_files() == ["config.json"] and hub.bytes_downloaded() == len(SEED["config.json"])

    hub.reset_log()
    again = hf_hub_download("org/dl", "config.json", cache_dir=tmp_path / "c", local_files_only=True)
    assert again == path and hub.log == []

    # LFS files are cached under their sha256 (the ETag the Hub gives them); regular files under the git blob id.
    comp = hf_hub_download("org/dl", "components/ab/ab12.safetensors", cache_dir=tmp_path / "c")
    assert Path(os.path.realpath(comp)).name == hashlib.sha256(SEED["components/ab/ab12.safetensors"]).hexdigest()

    # A pinned commit that is cached needs no request at all.
    hub.reset_log()
    assert hf_hub_download("org/dl", "config.json", revision=sha, cache_dir=tmp_path / "c") == path
    assert hub.log == []


def test_snapshot_allow_patterns_downloads_only_matches(hub: HubServer, tmp_path: Path) -> None:
    _seed(hub, "org/snap", tmp_path)
    hub.reset_log()
    folder = snapshot_download("org/snap", allow_patterns=["config.json", "tasks/a.json",
                                                           "components/ab/*"], cache_dir=tmp_path / "c")
    assert sorted(hub.downloaded_files()) == ["components/ab/ab12.safetensors", "config.json", "tasks/a.json"]
    assert (Path(folder) / "tasks/a.json").read_bytes() == SEED["tasks/a.json"]
    assert not (Path(folder) / "tasks/b.json").exists()
    paths = [r.path for r in hub.log]
    assert paths[0] == "/api/models/org/snap/revision/main" and paths[1].startswith("/api/models/org/snap/tree/")


def test_range_requests_and_safetensors_header(hub: HubServer, tmp_path: Path) -> None:
    _seed(hub, "org/range", tmp_path)
    from huggingface_hub.utils import get_session

    url = f"{hub.url}/org/range/resolve/main/config.json"
    r = get_session().get(url, headers={"Range": "bytes=2-5"})
    assert r.status_code == 206 and r.content == SEED["config.json"][2:6]
    assert r.headers["Content-Range"] == f"bytes 2-5/{len(SEED['config.json'])}"
    assert get_session().get(url, headers={"Range": "bytes=-3"}).content == SEED["config.json"][-3:]
    assert get_session().get(url, headers={"Range": "bytes=999-"}).status_code == 416
    meta = HfApi().parse_safetensors_file_metadata("org/range", "components/cd/cd34.safetensors")
    assert meta.tensors["w"].shape == [8] and meta.metadata == {"kind": "block"}


def test_errors_map_to_client_exceptions(hub: HubServer, tmp_path: Path) -> None:
    _seed(hub, "org/err", tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/err", "nope.json", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json", cache_dir=tmp_path / "c")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/err", "config.json", revision="v9", cache_dir=tmp_path / "c")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("org/missing")
    with pytest.raises(RevisionNotFoundError):
        HfApi().list_repo_tree("org/err", revision="nope").__next__()
    api = HfApi()
    assert api.file_exists("org/err", "tasks/a.json") and not api.file_exists("org/err", "tasks/z.json")
    assert not api.repo_exists("org/missing") and api.revision_exists("org/err", "main")


def test_listing_and_metadata(hub: HubServer, tmp_path: Path) -> None:
    sha = _seed(hub, "org/list", tmp_path)
    api = HfApi()
    info = api.model_info("org/list", files_metadata=True)
    assert info.sha == sha and info.id == "org/list" and not info.private
    lfs = {s.rfilename: s.lfs for s in info.siblings or []}
    assert lfs["components/ab/ab12.safetensors"] is not None and lfs["config.json"] is None
    rev = api.resolve_revision("org/list")  # a str whose *value* is "main"; the sha is in .resolved
    assert rev == "main" and rev.resolved == sha
    hub.reset_log()
    hf_hub_download("org/list", "tasks/a.json", revision=rev, cache_dir=tmp_path / "c")
    assert [r.path for r in hub.log] == [f"/org/list/resolve/{sha}/tasks/a.json"] * 2
    assert set(api.list_repo_files("org/list")) == set(SEED) | {".gitattributes"}

    top = {e.path: type(e) for e in api.list_repo_tree("org/list")}
    assert top["tasks"] is RepoFolder and top["config.json"] is RepoFile and "tasks/a.json" not in top
    sub = [e.path for e in api.list_repo_tree("org/list", "components", recursive=True)]
    assert sub == ["components/ab", "components/cd", "components/ab/ab12.safetensors",
                   "components/cd/cd34.safetensors"]
    expanded = list(api.list_repo_tree("org/list", "tasks", expand=True))
    assert all(e.last_commit is not None and e.last_commit.oid == sha for e in expanded)

    infos = api.get_paths_info("org/list", ["tasks/a.json", "missing.json", "components"])
    assert [(type(e).__name__, e.path) for e in infos] == [("RepoFile", "tasks/a.json"), ("RepoFolder", "components")]
    assert infos[0].size == len(SEED["tasks/a.json"])

    commits = api.list_repo_commits("org/list")
    assert [c.title for c in commits] == ["seed", "initial commit"] and commits[0].commit_id == sha
    refs = api.list_repo_refs("org/list")
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", sha)]


def test_upload_and_commit_compare_and_swap(hub: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    url = api.create_repo("org/up")
    assert url.repo_id == "org/up"
    api.create_repo("org/up", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo("org/up")
    assert exc.value.response.status_code == 409

    folder = tmp_path / "up"
    (folder / "tasks").mkdir(parents=True)
    (folder / "tasks/a.json").write_text('{"a": 1}')
    (folder / "README.md").write_text("---\nlibrary_name: mu2hub\n---\n")
    info = api.upload_folder(repo_id="org/up", folder_path=folder, commit_message="upload")
    assert info.oid == hub.head("org/up") and info.commit_url.endswith(info.oid)
    assert hub.files("org/up")["tasks/a.json"] == b'{"a": 1}'

    parent = hub.head("org/up")
    ops = [CommitOperationAdd("tasks/b.json", b"{}"), CommitOperationCopy("tasks/a.json", "tasks/c.json"),
           CommitOperationDelete("README.md")]
    api.create_commit("org/up", ops, commit_message="ops", parent_commit=parent)
    files = hub.files("org/up")
    assert files["tasks/c.json"] == files["tasks/a.json"] and "README.md" not in files and "tasks/b.json" in files

    with pytest.raises(HfHubHTTPError) as exc:
        api.create_commit("org/up", [CommitOperationAdd("x.json", b"1")], commit_message="stale",
                          parent_commit=parent)
    assert exc.value.response.status_code == 412 and "A commit has happened since" in str(exc.value)

    # Re-uploading identical content is a no-op on the client side (preupload reports the remote oid).
    head = hub.head("org/up")
    assert api.upload_file(path_or_fileobj=b"{}", path_in_repo="tasks/b.json", repo_id="org/up",
                           commit_message="same").oid == head

    hub.fail_next_commit_with(500)
    with pytest.raises(HfHubHTTPError) as exc:
        api.upload_file(path_or_fileobj=b"2", path_in_repo="y.json", repo_id="org/up", commit_message="boom")
    assert exc.value.response.status_code == 500 and hub.head("org/up") == head


def test_concurrent_commits_compare_and_swap(hub: HubServer, tmp_path: Path) -> None:
    """Racing writers with the same parent: exactly one wins, the rest get 412; blind writers all land."""
    from concurrent.futures import ThreadPoolExecutor

    parent = _seed(hub, "org/race", tmp_path)
    api = HfApi()

    def write(i: int, parent_commit: str | None) -> int:
        try:
            api.create_commit("org/race", [CommitOperationAdd(f"tasks/t{i}.json", str(i).encode())],
                              commit_message=f"t{i}", parent_commit=parent_commit)
            return 200
        except HfHubHTTPError as e:
            return e.response.status_code

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(lambda i: write(i, parent), range(8))) == [200] + [412] * 7
        assert list(pool.map(lambda i: write(i, None), range(10, 18))) == [200] * 8
    assert {f"tasks/t{i}.json" for i in range(10, 18)} <= set(hub.files("org/race"))


def test_pull_request_flow(hub: HubServer, tmp_path: Path) -> None:
    base = _seed(hub, "org/pr", tmp_path)
    api = HfApi()
    info = api.create_commit("org/pr", [CommitOperationAdd("tasks/new.json", b'{"task": "new"}'),
                                         CommitOperationDelete("tasks/b.json")],
                             commit_message="Add task new", create_pr=True, parent_commit=base)
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1" and info.pr_url.endswith("/org/pr/discussions/1")
    assert hub.head("org/pr") == base  # main untouched
    path = hf_hub_download("org/pr", "tasks/new.json", revision="refs/pr/1", cache_dir=tmp_path / "c")
    assert Path(path).read_bytes() == b'{"task": "new"}'
    assert hub.pr_files("org/pr", 1) == {"added": ["tasks/new.json"], "modified": [], "deleted": ["tasks/b.json"]}

    # More commits can be pushed to the PR ref.
    api.upload_file(path_or_fileobj=b"{}", path_in_repo="tasks/more.json", repo_id="org/pr",
                    revision="refs/pr/1", commit_message="more")
    details = api.get_discussion_details("org/pr", 1)
    assert details.is_pull_request and details.status == "open" and details.target_branch == "refs/heads/main"
    assert details.conflicting_files == [] and "tasks/new.json" in (details.diff or "")
    assert [e.type for e in details.events] == ["comment", "commit", "commit"]
    api.comment_discussion("org/pr", 1, "LGTM")
    assert [d.num for d in api.get_repo_discussions("org/pr", discussion_type="pull_request")] == [1]
    assert [r.ref for r in api.list_repo_refs("org/pr", include_pull_requests=True).pull_requests or []] == [
        "refs/pr/1"]

    hub.write_file("org/pr", "config.json", b"{}")  # unrelated change on main: still mergeable
    api.merge_pull_request("org/pr", 1)
    main = hub.files("org/pr")
    assert main["tasks/new.json"] == b'{"task": "new"}' and "tasks/b.json" not in main and main["config.json"] == b"{}"
    details = api.get_discussion_details("org/pr", 1)
    assert details.status == "merged" and details.merge_commit_oid == hub.head("org/pr")


def test_pull_request_conflicts_and_status(hub: HubServer, tmp_path: Path) -> None:
    _seed(hub, "org/conflict", tmp_path)
    api = HfApi()
    api.upload_file(path_or_fileobj=b"pr", path_in_repo="tasks/a.json", repo_id="org/conflict",
                    commit_message="pr edit", create_pr=True)
    hub.write_file("org/conflict", "tasks/a.json", b"main")
    assert api.get_discussion_details("org/conflict", 1).conflicting_files == ["tasks/a.json"]
    with pytest.raises(HfHubHTTPError) as exc:
        api.merge_pull_request("org/conflict", 1)
    assert exc.value.response.status_code == 409
    api.change_discussion_status("org/conflict", 1, "closed", comment="superseded")
    assert api.get_discussion_details("org/conflict", 1).status == "closed"

    draft = api.create_pull_request("org/conflict", "empty PR")
    assert draft.status == "draft" and draft.git_reference == "refs/pr/2"


def test_branches_and_tags(hub: HubServer, tmp_path: Path) -> None:
    sha = _seed(hub, "org/refs", tmp_path)
    api = HfApi()
    api.create_tag("org/refs", tag="v1")
    api.create_branch("org/refs", branch="dev")
    api.upload_file(path_or_fileobj=b"dev", path_in_repo="dev.txt", repo_id="org/refs", revision="dev",
                    commit_message="dev")
    refs = api.list_repo_refs("org/refs")
    assert {t.name: t.target_commit for t in refs.tags} == {"v1": sha}
    assert {b.name for b in refs.branches} == {"main", "dev"} and hub.head("org/refs") == sha
    assert hf_hub_download("org/refs", "dev.txt", revision="dev", cache_dir=tmp_path / "c")
    assert hf_hub_download("org/refs", "config.json", revision="v1", cache_dir=tmp_path / "c")
    with pytest.raises(RevisionNotFoundError):
        api.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="org/refs", revision="nope",
                        commit_message="x")


def test_stop_start_keeps_url_and_offline_fallback(hub: HubServer, tmp_path: Path) -> None:
    _seed(hub, "org/down", tmp_path)
    path = hf_hub_download("org/down", "config.json", cache_dir=tmp_path / "c")
    url = hub.url
    hub.stop()
    try:  # Hub unreachable: the client falls back to the cached ref + snapshot
        assert hf_hub_download("org/down", "config.json", cache_dir=tmp_path / "c") == path
    finally:
        hub.start()
    assert hub.url == url and HfApi().model_info("org/down").sha == hub.head("org/down")


def test_state_persists_across_instances(hub: HubServer, tmp_path: Path) -> None:
    sha = _seed(hub, "org/persist", tmp_path)
    again = HubServer(hub.root, persist=True)
    assert again.head("org/persist") == sha and again.files("org/persist")["tasks/a.json"] == SEED["tasks/a.json"]


def test_env_only_wiring_in_subprocess(hub: HubServer, tmp_path: Path) -> None:
    """Env vars set before the import are enough (what a subprocess or a fresh interpreter sees)."""
    _seed(hub, "org/sub", tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_TELEMETRY="1")
    code = ("from huggingface_hub import hf_hub_download, HfApi\n"
            "print(open(hf_hub_download('org/sub', 'tasks/a.json')).read())\n"
            "HfApi().upload_file(path_or_fileobj=b'z', path_in_repo='z.txt', repo_id='org/sub', commit_message='z')\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == SEED["tasks/a.json"].decode() and hub.files("org/sub")["z.txt"] == b"z"
