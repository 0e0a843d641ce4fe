"""Export targets: a local folder or a Hub repo — what is there (a snapshot at one head), and how to commit.

The exporter (`publish.py`) plans against a `Snapshot` and commits `FileOp`s; a target knows only how to
read its own state and apply one commit (atomic files locally, `create_commit` with `parent_commit` on the Hub).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from filelock import FileLock

from .card import card_task_order
from ..constants import COMPONENTS_DIR, CONFIG_NAME, README_NAME, ROOT_NAME, TASKS_DIR, task_filename
from ..errors import ComponentIntegrityError, FormatError, NotAMu2hubRepoError
from ..format.system import SystemConfig, TaskFile, file_sha256, load_json, sha256_hex
from ..hub.pulls import git_blob_oid
from ..hub.store import LocalStore
from ..utils.atomic import atomic_write

if TYPE_CHECKING:
    from .publish import FileOp

_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None = None
    git_oid: str | None = None

    def matches(self, data: bytes) -> bool:
        if len(data) != self.size:
            return False
        return sha256_hex(data) == self.sha256 if self.sha256 else git_blob_oid(data) == self.git_oid


@dataclass
class Snapshot:
    """The target at one head: its config, tasks, and the files the plan asked about."""

    head: str | None = None
    config: SystemConfig | None = None
    tasks: dict[str, TaskFile] = field(default_factory=dict)
    files: dict[str, RemoteFile] = field(default_factory=dict)
    components: set[str] | None = None  # every component id there (only listed when pruning)
    notes: list[str] = field(default_factory=list)
    card_order: list[str] = field(default_factory=list)  # the tasks of the card there, in its order
    root: TaskFile | None = None  # the root path there (`root.json`): its components are part of the pool


def _target_config(raw: bytes, target: str) -> SystemConfig:
    data = load_json(raw, CONFIG_NAME)
    if not isinstance(data, dict) or data.get("library_name") != "mu2hub":
        lib = data.get("library_name") if isinstance(data, dict) else None
        raise NotAMu2hubRepoError(target, f"{CONFIG_NAME} has library_name={lib!r}")
    return SystemConfig.from_json(data, f"{target}/{CONFIG_NAME}")


def _parse_task(raw: bytes, rel: str, notes: list[str], *, check_name: bool = True) -> TaskFile | None:
    try:
        tf = TaskFile.from_json(load_json(raw, rel), rel)
    except FormatError as e:
        notes.append(f"{rel} at the target is not a valid task file, left out of the card: {e}")
        return None
    if check_name and task_filename(tf.task) != rel:
        notes.append(f"{rel} names task {tf.task!r}; left out of the card")
        return None
    return tf


class LocalTarget:
    """A folder in the published layout; writes are atomic per file, exporters serialise on a lock file."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.name = self.label = str(root)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(self.root.parent / f".{self.root.name}.mu2hub-export.lock"):
            yield

    def snapshot(self, paths: list[str], *, list_components: bool) -> Snapshot:
        snap = Snapshot()
        if not self.root.is_dir():
            return snap
        if (self.root / CONFIG_NAME).is_file():
            snap.config = _target_config((self.root / CONFIG_NAME).read_bytes(), self.name)
        else:
            other = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and p.name != COMPONENTS_DIR)
            if other:
                raise NotAMu2hubRepoError(self.name, f"no {CONFIG_NAME}, but it holds {', '.join(other[:5])}")
        for t in LocalStore(self.root).list_tasks():
            rel = task_filename(t)
            raw = (self.root / rel).read_bytes()
            snap.files[rel] = RemoteFile(len(raw), sha256_hex(raw))
            tf = _parse_task(raw, rel, snap.notes)
            if tf is not None:
                snap.tasks[t] = tf
        for rel in paths:
            p = self.root / rel
            if p.is_file():  # hashed, components streamed: a damaged file at a content-addressed name is rewritten
                snap.files[rel] = RemoteFile(p.stat().st_size, file_sha256(p) if rel.startswith(COMPONENTS_DIR + "/")
                                             else sha256_hex(p.read_bytes()))
        if list_components:
            snap.components = {p.stem for p in (self.root / COMPONENTS_DIR).glob("*/*.safetensors")}
        if (self.root / ROOT_NAME).is_file():
            snap.root = _parse_task((self.root / ROOT_NAME).read_bytes(), ROOT_NAME, snap.notes, check_name=False)
        if (self.root / README_NAME).is_file():
            snap.card_order = card_task_order((self.root / README_NAME).read_text(errors="replace"))
        return snap

    def commit(self, ops: list["FileOp"], message: str, parent: str | None) -> str | None:
        for op in ops:
            if op.change == "delete":
                (self.root / op.path).unlink(missing_ok=True)
            else:
                atomic_write(self.root / op.path, op.read())
        return None


class HubTarget:
    """A Hub model repo, read through `list_repo_tree` / `get_paths_info` and written with `create_commit`."""

    def __init__(self, repo_id: str, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                 private: bool | None = None):
        from huggingface_hub import HfApi

        self.repo_id = self.name = self.label = repo_id
        self.api = HfApi(token=token)
        self.token, self.cache_dir, self.private = token, cache_dir, private
        self._tasks: dict[str, TaskFile | None] = {}  # blob id -> parsed task file
        self._created = False  # created on the first commit: an export refused while planning leaves no trace

    def locked(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # the Hub's compare-and-swap (parent_commit) is the lock

    def head(self) -> str | None:
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            refs = self.api.list_repo_refs(self.repo_id)  # fresher than repo_info on the real Hub
        except RepositoryNotFoundError:
            return None
        return next((b.target_commit for b in refs.branches if b.name == "main"), None)

    def _download(self, rel: str, head: str) -> bytes:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo_id, rel, revision=head, cache_dir=self.cache_dir, token=self.token)).read_bytes()

    def snapshot(self, paths: list[str], *, list_components: bool) -> Snapshot:
        from huggingface_hub.hf_api import RepoFile

        head = self.head()
        snap = Snapshot(head)
        if head is None:
            return snap
        top = {e.path: e for e in self.api.list_repo_tree(self.repo_id, revision=head)}
        if CONFIG_NAME in top:
            snap.config = _target_config(self._download(CONFIG_NAME, head), self.name)
        else:
            other = sorted(p for p in top if p not in (".gitattributes", COMPONENTS_DIR))
            if other:
                raise NotAMu2hubRepoError(self.name, f"no {CONFIG_NAME}, but it holds {', '.join(other[:5])}")
        if TASKS_DIR in top:
            for e in self.api.list_repo_tree(self.repo_id, path_in_repo=TASKS_DIR, recursive=True, revision=head):
                if isinstance(e, RepoFile) and e.path.endswith(".json"):
                    snap.files[e.path] = _remote_file(e)
                    if e.blob_id not in self._tasks:
                        self._tasks[e.blob_id] = _parse_task(self._download(e.path, head), e.path, snap.notes)
                    if self._tasks[e.blob_id] is not None:
                        snap.tasks[e.path[len(TASKS_DIR) + 1 : -5]] = self._tasks[e.blob_id]
        for i in range(0, len(paths), 500):
            for e in self.api.get_paths_info(self.repo_id, paths[i : i + 500], revision=head):
                if isinstance(e, RepoFile):
                    snap.files[e.path] = _remote_file(e)
        if ROOT_NAME in top:
            snap.root = _parse_task(self._download(ROOT_NAME, head), ROOT_NAME, snap.notes, check_name=False)
        if README_NAME in top:
            snap.card_order = card_task_order(self._download(README_NAME, head).decode(errors="replace"))
        if list_components and COMPONENTS_DIR in top:
            snap.components = {e.path.rsplit("/", 1)[-1].removesuffix(".safetensors")
                               for e in self.api.list_repo_tree(self.repo_id, path_in_repo=COMPONENTS_DIR, recursive=True,
                                                                revision=head) if isinstance(e, RepoFile)}
        return snap

    def commit(self, ops: list["FileOp"], message: str, parent: str | None) -> str | None:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        if not self._created:
            self.api.create_repo(self.repo_id, exist_ok=True, private=self.private)
            self._created = True
        operations = []
        for op in ops:
            if op.change == "delete":
                operations.append(CommitOperationDelete(op.path))
                continue
            add = CommitOperationAdd(op.path, str(op.file) if op.file is not None else op.data)
            if op.kind == "component" and add.upload_info.sha256.hex() != op.id:  # changed since it was checked
                raise ComponentIntegrityError(str(op.file), op.id or "", add.upload_info.sha256.hex())
            operations.append(add)
        return self.api.create_commit(self.repo_id, operations, commit_message=message, parent_commit=parent).oid


def _remote_file(e: Any) -> RemoteFile:
    return RemoteFile(e.size, e.lfs.sha256 if e.lfs is not None else None, e.blob_id)


def open_target(to: str | os.PathLike, *, token=None, cache_dir=None, private=None) -> LocalTarget | HubTarget:
    """`org/name` is a Hub repo; a `PathLike`, an existing folder or anything else (`./name`, `runs/x/export`) a folder."""
    if isinstance(to, os.PathLike) or os.path.isdir(to) or not _HUB_REPO.match(str(to)):
        return LocalTarget(to)
    return HubTarget(str(to), token=token, cache_dir=cache_dir, private=private)
