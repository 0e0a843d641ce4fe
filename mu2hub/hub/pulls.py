"""Opening a Hub pull request that only adds files: a contribution never modifies what is published."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..constants import CONFIG_NAME, task_filename
from ..errors import ContributionError
from ..format.system import dump_json, sha256_hex
from .store import LocalStore
from .transfer import hub_call


def git_blob_oid(data: bytes) -> str:
    """Git's blob id: what the Hub reports for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class PushResult:
    """What a push sent: the files and their bytes, and the commit or pull request it made."""

    repo_id: str
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    commit: str | None = None
    pr_url: str | None = None
    pr_num: int | None = None
    parent: str | None = None


def pull_request_files(store: LocalStore, tasks: Iterable[str]) -> dict[str, bytes | Path]:
    """`config.json`, the tasks' files and their components without a `source`, from a local folder."""
    files: dict[str, bytes | Path] = {CONFIG_NAME: (store.root / CONFIG_NAME).read_bytes()}
    for t in tasks:
        tf = store.read_task(t)
        files[task_filename(t)] = dump_json(tf.to_json())
        for c in tf.components:
            if c.source is None:
                files[c.filename] = store.root / c.filename
    return files


def _same(entry: Any, data: bytes) -> bool:
    if entry.size != len(data):
        return False
    return entry.lfs.sha256 == sha256_hex(data) if entry.lfs is not None else entry.blob_id == git_blob_oid(data)


def open_pull_request(repo_id: str, files: Mapping[str, bytes | Path], *, title: str, description: str,
                      parent_commit: str | None = None, token: str | bool | None = None,
                      create_pr: bool = True) -> PushResult:
    """One commit (a pull request by default) on `parent_commit` adding the files `repo_id` lacks there.

    A file the repo holds with the same content is skipped; one it holds with *other* content is refused
    (`ContributionError`): a contribution never modifies what is published.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    nbytes = sum(c.stat().st_size if isinstance(c, Path) else len(c) for c in files.values())
    with hub_call(repo_id, "opening a pull request", nbytes=nbytes):
        return _open_pull_request(api, repo_id, files, title=title, description=description,
                                  parent_commit=parent_commit, create_pr=create_pr)


def _open_pull_request(api: Any, repo_id: str, files: Mapping[str, bytes | Path], *, title: str, description: str,
                       parent_commit: str | None, create_pr: bool) -> PushResult:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.hf_api import RepoFile

    head = api.repo_info(repo_id).sha
    parent = parent_commit or head

    def listing(rev: str) -> dict[str, Any]:
        return {e.path: e for e in api.get_paths_info(repo_id, list(files), revision=rev) if isinstance(e, RepoFile)}

    there, now = listing(parent), listing(head) if head != parent else None
    ops, sent, changed, current = [], [], [], 0
    for path, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        latest = (now or there).get(path)
        if latest is not None and not _same(latest, data):  # also: added on main since `parent` (a conflict)
            changed.append(path)
        current += latest is not None
        if path in there:
            if not _same(there[path], data):
                changed.append(path)
            continue
        if path.startswith("components/") and sha256_hex(data) != Path(path).stem:
            raise ContributionError(f"{path}: its content does not match its id; refusing to upload it")
        ops.append(CommitOperationAdd(path, data))
        sent.append((path, len(data)))
    if changed:
        raise ContributionError(f"{repo_id} already has {', '.join(dict.fromkeys(changed))} with other content; a "
                                "contribution only adds files (rename the task with task=...)")
    if not ops or current == len(files):
        raise ContributionError(f"{repo_id}@{parent[:8]} already has every file of this contribution: nothing to add")
    info = api.create_commit(repo_id, ops, commit_message=title, commit_description=description, create_pr=create_pr,
                             parent_commit=parent)
    return PushResult(repo_id, [p for p, _ in sent], sum(n for _, n in sent), info.oid, info.pr_url, info.pr_num, parent)
