"""A system's best paths -> the published layout, in a Hub repo or a local folder, pushing only what is missing.

`export(source, to)`:
1. Read the source — a training run (`<run>/system/`), a published folder or a Hub repo: its config and task
   files (the best path per task). Every task must report a test accuracy.
2. Read the target at its head: `config.json`, task files, which needed components it already has.
3. Plan. A task whose path is unchanged is left alone; a task the target holds with a better score is kept
   (compare-and-swap, as in training); every other task is released: sizes (activated / new parameters,
   bytes, components shared with tasks published before it) and a probe. The card and figures are rebuilt from
   the union of the target's tasks and ours. Components no task references are never copied (garbage
   collection); at the target they are deleted only with `prune=True`.
4. Push. Missing components first, in commits of at most ~100 operations, without `parent_commit`: they are
   content-addressed, so concurrent adds cannot conflict and a crash here leaves only unreferenced files.
   Then the head is read again, the rest is re-planned on it and committed with `parent_commit=<head>`:
   task files (each the whole new state of its task) and the shared files. HTTP 412 (someone committed in
   between) -> read the head again, re-plan (the card then includes their tasks), retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import random
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from .card import PARAMS_FIGURE, SYSTEM_FIGURE, render_card
from .constants import COMPONENTS_DIR, CONFIG_NAME, README_NAME, ROOT_NAME, TASKS_DIR, component_filename, task_filename
from .errors import ComponentIntegrityError, ExportError, FormatError, Mu2hubError, NotAMu2hubRepoError, PushInterruptedError
from .figures import params_png, system_png
from .format import ComponentRef, SystemConfig, TaskFile, distinct, dump_json, load_json, sha256_hex
from .store import HubStore, LocalStore, Store, atomic_write

SHARED_FILES = (README_NAME, SYSTEM_FIGURE, PARAMS_FIGURE)
_HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9][A-Za-z0-9_.\-]*$")
Callback = Callable[[str, Any], None]

# ---------------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------------


def open_source(source: Any, *, revision: str | None = None, token: str | bool | None = None,
                cache_dir: str | os.PathLike | None = None) -> Store:
    """A run directory (its `system/`), a published folder, a Hub repo id, or a store / `RunDir` as is."""
    if isinstance(source, (LocalStore, HubStore)):
        return source
    if isinstance(getattr(source, "system", None), LocalStore):  # an evolution RunDir
        return source.system
    path = Path(source)
    if path.is_dir():
        if (path / "system" / CONFIG_NAME).is_file():
            return LocalStore(path / "system")
        if (path / CONFIG_NAME).is_file():
            return LocalStore(path)
        raise ExportError(f"{path}: neither a training run (no system/{CONFIG_NAME}) nor a mu2hub folder (no {CONFIG_NAME})")
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return HubStore.open(str(source), revision=revision, cache_dir=cache_dir, token=token)
    except EntryNotFoundError as e:
        raise NotAMu2hubRepoError(str(source), f"no {CONFIG_NAME}") from e


def read_source(store: Store, tasks: Iterable[str] | None = None) -> tuple[SystemConfig, dict[str, TaskFile]]:
    """The config and the chosen tasks' files; refuses tasks without a held-out test accuracy."""
    config = store.read_config()
    names = list(tasks) if tasks is not None else store.list_tasks()
    if not names:
        raise ExportError(f"{store.name}: no tasks to export")
    files = {t: store.read_task(t) for t in names}
    missing = [t for t, tf in files.items()
               if not isinstance(tf.metrics.get("test_accuracy"), (int, float)) or isinstance(tf.metrics.get("test_accuracy"), bool)]
    if missing:
        raise ExportError(f"{store.name}: task(s) {', '.join(missing)} have no metrics.test_accuracy (every published "
                          "task reports a held-out test accuracy); finish their evolution, or leave them out with tasks=/--tasks")
    return config, files


def _component_file(store: Store, ref: ComponentRef) -> Path:
    if isinstance(store, LocalStore):
        return store.root / ref.filename
    return Path(store._get(ref.filename))  # HubStore: the cached file at the pinned commit


def _check_component(path: Path, ref: ComponentRef, where: str) -> None:
    """The exporter never publishes a file whose content is not its id."""
    try:
        with open(path, "rb") as f:
            actual = hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise ExportError(f"{where}: {ref.filename} is missing (named by the {ref.slot} slot)") from None
    if actual != ref.id:
        raise ComponentIntegrityError(f"{where}/{ref.filename}", ref.id, actual, f" ({path.stat().st_size:,} bytes)")


# ---------------------------------------------------------------------------------------------------
# Releases: task files as published
# ---------------------------------------------------------------------------------------------------


def stream_order(files: Mapping[str, TaskFile]) -> list[str]:
    """Tasks in task-stream order from the files alone: after every task whose created components the path uses.

    Ties (and cycles, from revisits) fall back to `lineage.path_id`, then the name — deterministic, so every
    exporter orders a given set of tasks the same way.
    """
    creator = {cid: t for t, tf in files.items() for cid in (tf.lineage.get("created") or [])}
    deps = {t: {creator[c.id] for c in tf.components if creator.get(c.id, t) != t} for t, tf in files.items()}
    key = {t: (str(tf.lineage.get("path_id") or ""), t) for t, tf in files.items()}
    order: list[str] = []
    left = set(files)
    while left:
        ready = [t for t in left if not deps[t] & left] or list(left)
        nxt = min(ready, key=key.__getitem__)
        order.append(nxt)
        left.remove(nxt)
    return order


def release(tf: TaskFile, *, earlier: Mapping[str, Iterable[str]], probe: dict[str, Any] | None) -> TaskFile:
    """The task file as published: sizes recomputed, `shared_with` = tasks published before it that use its components."""
    distinct_refs = {c.id: c for c in tf.components}
    new_params = tf.sizes.get("new_params")
    if new_params is None and "created" in tf.lineage:
        created = set(tf.lineage["created"] or [])
        new_params = sum(c.params for cid, c in distinct_refs.items() if cid in created)
    shared = {cid: sorted(set(earlier[cid])) for cid in distinct_refs if earlier.get(cid)}
    sizes = {**tf.sizes, "activated_params": tf.activated_params, "bytes": tf.download_bytes, "new_params": new_params,
             "shared_with": shared}
    return replace(tf, sizes=sizes, probe=probe)


def _core(tf: TaskFile) -> str:
    """What identifies a release apart from the exporter's own additions (sizes, probe)."""
    d = tf.to_json()
    d.pop("sizes")
    d.pop("probe", None)
    return json.dumps(d, sort_keys=True)


def _score(tf: TaskFile) -> float | None:
    s = tf.metrics.get("score")
    return float(s) if isinstance(s, (int, float)) and not isinstance(s, bool) else None


def make_task_probe(store: Store, task: str, tf: TaskFile) -> dict[str, Any] | None:
    """The source's probe if it still reproduces here, otherwise a new one (re-exports stay byte-stable)."""
    from .api import load_task
    from .verify import check_probe, make_probe

    if isinstance(store, LocalStore) and any(c.source is not None for c in tf.components):
        return tf.probe  # components in other repos: the probe is only checkable through the Hub
    model = load_task(store, task)  # verifies every component against its id
    if tf.probe and check_probe(model, tf.probe).ok:
        return tf.probe
    return make_probe(model)


# ---------------------------------------------------------------------------------------------------
# Targets: what is there, and how to commit
# ---------------------------------------------------------------------------------------------------


def git_blob_oid(data: bytes) -> str:
    """Git's blob id: what the Hub reports for a regular (non-LFS) file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


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


def _target_config(raw: bytes, target: str) -> SystemConfig:
    data = load_json(raw, CONFIG_NAME)
    if not isinstance(data, dict) or data.get("library_name") != "mu2hub":
        lib = data.get("library_name") if isinstance(data, dict) else None
        raise NotAMu2hubRepoError(target, f"{CONFIG_NAME} has library_name={lib!r}")
    return SystemConfig.from_json(data, f"{target}/{CONFIG_NAME}")


def _parse_task(raw: bytes, rel: str, notes: list[str]) -> TaskFile | None:
    try:
        tf = TaskFile.from_json(load_json(raw, rel), rel)
    except FormatError as e:
        notes.append(f"{rel} at the target is not a valid task file, left out of the card: {e}")
        return None
    if task_filename(tf.task) != rel:
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
        with open(self.root.parent / f".{self.root.name}.mu2hub-export.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

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
            if p.is_file():  # components: size only (content-addressed names); shared files: hashed
                snap.files[rel] = (RemoteFile(p.stat().st_size) if rel.startswith(COMPONENTS_DIR + "/")
                                   else RemoteFile(p.stat().st_size, sha256_hex(p.read_bytes())))
        if list_components:
            snap.components = {p.stem for p in (self.root / COMPONENTS_DIR).glob("*/*.safetensors")}
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


# ---------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileOp:
    """One file to add or delete at the target."""

    path: str
    size: int
    kind: str  # component | task | root | config | card | figure
    change: str  # new | edit | delete
    data: bytes | None = None  # small files, in memory
    file: Path | None = None  # component files, read at commit time (already checked against their id)
    id: str | None = None

    def read(self) -> bytes:
        if self.data is not None:
            return self.data
        assert self.file is not None
        data = self.file.read_bytes()
        if self.id is not None and sha256_hex(data) != self.id:  # changed since it was checked
            raise ComponentIntegrityError(str(self.file), self.id, sha256_hex(data))
        return data


@dataclass
class ExportPlan:
    """What an export will do: components first, then the final commit(s) on `head`."""

    source: str
    target: str
    head: str | None
    components: list[FileOp]
    final: list[FileOp]
    tasks: dict[str, str]  # task -> new | replace | unchanged | kept (why)
    released: dict[str, TaskFile]  # our tasks as the target holds them afterwards
    present: int  # needed components the target already has
    unreferenced: list[str]
    notes: list[str]

    @property
    def operations(self) -> int:
        return len(self.components) + len(self.final)

    @property
    def bytes(self) -> int:
        return sum(op.size for op in self.components + self.final)

    def commits(self, max_ops: int = 100) -> list[list[FileOp]]:
        return _chunks(self.components, max_ops) + _chunks(self.final, max_ops)

    def format(self, max_ops: int = 100) -> str:
        """The plan as `--dry-run` prints it: every file with its size, commit by commit."""
        at = f" (main @ {self.head[:8]})" if self.head else " (empty)"
        lines = [f"export {self.source} -> {self.target}{at}",
                 "tasks: " + ", ".join(f"{t} ({s})" for t, s in self.tasks.items()),
                 f"components: {len(self.components)} to upload ({_mb(sum(o.size for o in self.components))}), "
                 f"{self.present} already there" + (f"; {len(self.unreferenced)} there that no task uses" if self.unreferenced else "")]
        for i, chunk in enumerate(self.commits(max_ops), 1):
            parent = "" if chunk[0].kind == "component" and chunk[0].change != "delete" else " with parent_commit=<head>"
            lines.append(f"commit {i}{parent}: {len(chunk)} operations, {_mb(sum(o.size for o in chunk))}")
            sign = {"new": "+", "edit": "~", "delete": "-"}
            lines.extend(f"  {sign[o.change]} {o.path}  {o.size:,} B" for o in chunk)
        lines.extend(f"note: {n}" for n in self.notes)
        lines.append(f"total: {self.operations} operations, {_mb(self.bytes)}" if self.operations else "nothing to do: the target is up to date")
        return "\n".join(lines)


def _chunks(ops: list[FileOp], n: int) -> list[list[FileOp]]:
    return [ops[i : i + n] for i in range(0, len(ops), n)]


def _mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB"


_RENDERED: dict[str, dict[str, bytes]] = {}


def _shared_files(union: dict[str, TaskFile], config: SystemConfig, label: str) -> dict[str, bytes]:
    """Card and figures of a set of tasks (memoised: a retry with the same tasks does not redraw)."""
    key = sha256_hex(b"\0".join([label.encode(), dump_json(config.to_json())] + [dump_json(tf.to_json()) for tf in union.values()]))
    files = _RENDERED.get(key)
    if files is None:
        files = {README_NAME: render_card(union, config, repo_id=label).encode(),
                 SYSTEM_FIGURE: system_png(union), PARAMS_FIGURE: params_png(union)}
        if len(_RENDERED) > 8:
            _RENDERED.clear()
        _RENDERED[key] = files
    return files


def make_plan(store: Store, config: SystemConfig, files: Mapping[str, TaskFile], snap: Snapshot, *, target: str,
              label: str, probe_for: Callable[[str, TaskFile], dict[str, Any] | None], force: bool = False,
              prune: bool = False, root: TaskFile | None = None) -> ExportPlan:
    """Decide every file against the target's snapshot; pure apart from reading (and checking) source files."""
    final: list[FileOp] = []
    if snap.config is None:
        data = dump_json(config.to_json())
        final.append(FileOp(CONFIG_NAME, len(data), "config", "new", data))
    elif (snap.config.dims, snap.config.root_image_size, snap.config.root_num_layers) != (
            config.dims, config.root_image_size, config.root_num_layers):
        raise ExportError(f"{target} holds another system: its {CONFIG_NAME} has {snap.config.dims} and root "
                          f"{snap.config.root_image_size}px/{snap.config.root_num_layers} layers, the source {config.dims} and root "
                          f"{config.root_image_size}px/{config.root_num_layers} layers; export to another repo")
    # 1. which tasks to write
    status, released, write = {}, {}, []
    for t, tf in files.items():
        old = snap.tasks.get(t)
        old_s, new_s = (_score(old), _score(tf)) if old is not None else (None, None)
        if old is not None and _core(old) == _core(tf):
            status[t], released[t] = "unchanged", old
        elif old is not None and not force and old_s is not None and new_s is not None and old_s > new_s:
            status[t], released[t] = f"kept: the target's path scores {old_s:.4g} > {new_s:.4g}", old
        else:
            status[t] = "replace" if old is not None else "new"
            write.append(t)
    # 2. release them in stream order; "shared with" = tasks published before
    earlier: dict[str, list[str]] = {}
    for t, tf in snap.tasks.items():
        if t not in write:
            for cid in distinct(c.id for c in tf.components):
                earlier.setdefault(cid, []).append(t)
    for t in stream_order({t: files[t] for t in write}):
        rel = released[t] = release(files[t], earlier=earlier, probe=probe_for(t, files[t]))
        data = dump_json(rel.to_json())
        final.append(FileOp(rel.filename, len(data), "task", "new" if status[t] == "new" else "edit", data))
        for cid in distinct(c.id for c in rel.components):
            earlier.setdefault(cid, []).append(t)
    # 2b. the root path: the parent contributors' new tasks may start from (docs/FORMAT.md, root.json)
    if root is not None:
        data = dump_json(root.to_json())
        rf = snap.files.get(ROOT_NAME)
        if rf is None or not rf.matches(data):
            final.append(FileOp(ROOT_NAME, len(data), "root", "new" if rf is None else "edit", data))
    # 3. components the target lacks (or holds with other content)
    comps, present = [], 0
    needed = {c.id: c for t, tf in files.items() if not status[t].startswith("kept") for c in tf.components if c.source is None}
    needed.update({c.id: c for c in (root.components if root is not None else []) if c.source is None})
    for cid, ref in needed.items():
        rf = snap.files.get(ref.filename)
        if rf is not None and rf.size == ref.bytes and rf.sha256 in (None, cid):
            present += 1
            continue
        path = _component_file(store, ref)
        _check_component(path, ref, store.name)
        comps.append(FileOp(ref.filename, ref.bytes, "component", "new" if rf is None else "edit", file=path, id=cid))
    # 4. card and figures of the union
    union_all = {**snap.tasks, **released}
    union = {t: union_all[t] for t in stream_order(union_all)}
    for rel_path, data in _shared_files(union, snap.config or config, label).items():
        rf = snap.files.get(rel_path)
        if rf is None or not rf.matches(data):
            final.append(FileOp(rel_path, len(data), "card" if rel_path == README_NAME else "figure", "edit" if rf else "new", data))
    # 5. garbage at the target
    referenced = {c.id for tf in [*union.values(), *([root] if root is not None else [])] for c in tf.components}
    unreferenced = sorted(snap.components - referenced) if snap.components is not None else []
    if prune:
        final.extend(FileOp(component_filename(cid), 0, "component", "delete") for cid in unreferenced)
    return ExportPlan(store.name, target, snap.head, comps, final, status, released, present, unreferenced, list(snap.notes))


# ---------------------------------------------------------------------------------------------------
# Pushing
# ---------------------------------------------------------------------------------------------------


@dataclass
class CommitRecord:
    oid: str | None
    message: str
    paths: list[str]
    bytes: int
    parent: str | None


@dataclass
class ExportResult:
    """What an export did: the last plan, the commits made, how many stale-parent retries it took."""

    target: str
    plan: ExportPlan | None = None
    commits: list[CommitRecord] = field(default_factory=list)
    retries: int = 0
    dry_run: bool = False

    @property
    def operations(self) -> int:
        return sum(len(c.paths) for c in self.commits)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.commits)

    @property
    def released(self) -> dict[str, TaskFile]:
        return dict(self.plan.released) if self.plan else {}

    def format(self) -> str:
        if self.dry_run and self.plan is not None:
            return self.plan.format()
        lines = [f"{self.target}: " + ", ".join(f"{t} ({s})" for t, s in (self.plan.tasks.items() if self.plan else []))]
        for c in self.commits:
            lines.append(f"  commit {c.oid[:8] if c.oid else '(folder)'}: {len(c.paths)} operations, {_mb(c.bytes)} — {c.message}")
        if not self.commits:
            lines.append("nothing to do: the target is up to date")
        else:
            retries = f"; {self.retries} retry(ies) after a concurrent commit" if self.retries else ""
            lines.append(f"{len(self.commits)} commit(s), {self.operations} operations, {_mb(self.bytes)}{retries}")
        return "\n".join(lines)


class _StaleParent(Exception):
    pass


def export(
    source: Any,
    to: str | os.PathLike,
    *,
    tasks: Iterable[str] | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    repo_id: str | None = None,
    dry_run: bool = False,
    prune: bool = False,
    force: bool = False,
    private: bool | None = None,
    max_ops_per_commit: int = 100,
    max_retries: int = 8,
    callback: Callback | None = None,
) -> ExportResult:
    """Publish a system's tasks to a Hub repo or a local folder, uploading only what the target lacks.

    Args:
        source: a training run directory, a published folder, a Hub repo id, or a `LocalStore` / `HubStore` / `RunDir`.
        to (`str` or `os.PathLike`): `"org/name"` for a Hub repo (created if missing); a path for a folder.
        tasks (`Iterable[str]`, *optional*): export only these; defaults to every task of the source.
        revision (`str`, *optional*): the source repo's branch, tag or commit.
        token, cache_dir: as in `huggingface_hub` (cache_dir holds what is downloaded from source and target).
        repo_id (`str`, *optional*): the name the card's usage snippet shows; defaults to the target.
        dry_run (`bool`, defaults to `False`): plan only; `result.plan.format()` lists files and bytes.
        prune (`bool`, defaults to `False`): delete component files at the target that no task uses (do not
            prune while others push to the same repo).
        force (`bool`, defaults to `False`): replace a task even where the target's path scores better.
        private (`bool`, *optional*): visibility of a repo this creates.
        max_ops_per_commit (`int`, defaults to 100): the Hub recommends ~50-100 files per commit.
        max_retries (`int`, defaults to 8): attempts after HTTP 412 (a concurrent commit).
        callback (*optional*): `callback(event, payload)` with `("plan", ExportPlan)` before each push stage,
            `("commit", CommitRecord)` after each commit and `("retry", str)` before a retry.

    Returns:
        `ExportResult`: the plan, the commits (paths, bytes), retries.

    Raises:
        `ExportError`: a task without test metrics, no tasks, a target holding another system.
        `NotAMu2hubRepoError`: the target holds something else; nothing is written.
        `ComponentIntegrityError`: a source component does not match its id; nothing is written.
        `PushInterruptedError`: a commit failed part-way; every task at the target is in its old or new state,
            and running the export again finishes it.

    Example:
        >>> result = export("runs/quickstart", "org/system")
        >>> print(result.format())
    """
    store = open_source(source, revision=revision, token=token, cache_dir=cache_dir)
    config, files = read_source(store, tasks)
    target = open_target(to, token=token, cache_dir=cache_dir, private=private)
    probes: dict[str, dict[str, Any] | None] = {}

    def probe_for(t: str, tf: TaskFile) -> dict[str, Any] | None:
        if t not in probes:
            probes[t] = make_task_probe(store, t, tf)
        return probes[t]

    emit = callback or (lambda *_: None)
    root = store.read_root()
    paths = [c.filename for tf in [*files.values(), *([root] if root else [])] for c in tf.components if c.source is None]
    paths = distinct(paths) + [CONFIG_NAME, ROOT_NAME, *SHARED_FILES]
    result = ExportResult(target.name, dry_run=dry_run)
    with contextlib.nullcontext() if dry_run else target.locked():
        for _ in range(4 * max_retries + 8):  # components rounds + conflict retries, bounded
            snap = target.snapshot(paths, list_components=prune)
            plan = result.plan = make_plan(store, config, files, snap, target=target.name, label=repo_id or target.label,
                                           probe_for=probe_for, force=force, prune=prune, root=root)
            emit("plan", plan)
            if dry_run:
                return result
            if plan.components:
                # Content-addressed additions: no parent needed, and a crash here leaves only unreferenced files.
                for chunk in _chunks(plan.components, max_ops_per_commit):
                    _commit(target, chunk, f"mu2hub export: {len(chunk)} component files", None, "components", result, emit)
                continue  # the rest is planned on the head it will be committed onto
            if not plan.final:
                return result
            parent = snap.head
            try:
                for i, chunk in enumerate(_chunks(plan.final, max_ops_per_commit)):
                    parent = _commit(target, chunk, _message(chunk), parent, "final" if i == 0 else "follow-up", result, emit)
                return result
            except _StaleParent:
                result.retries += 1
                if result.retries > max_retries:
                    break
                emit("retry", f"{target.name} moved since {str(snap.head)[:8]}; re-reading and re-planning")
                time.sleep(random.uniform(0.0, 0.1 * result.retries))
    raise PushInterruptedError(target.name, "final", len(result.commits),
                               RuntimeError(f"the target kept moving: gave up after {result.retries} stale-parent retries"))


def _message(chunk: list[FileOp]) -> str:
    tasks = [op.path[len(TASKS_DIR) + 1 : -5] for op in chunk if op.kind == "task"]
    rest = [op.path for op in chunk if op.kind != "task"]
    return "mu2hub export: " + "; ".join(p for p in (f"tasks {', '.join(tasks)}" if tasks else "",
                                                     ", ".join(rest)) if p)


def _commit(target: LocalTarget | HubTarget, chunk: list[FileOp], message: str, parent: str | None, stage: str,
            result: ExportResult, emit: Callback) -> str | None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        oid = target.commit(chunk, message, parent)
    except Mu2hubError:
        raise
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code == 412:
            raise _StaleParent() from e
        raise PushInterruptedError(target.name, stage, len(result.commits), e) from e
    except Exception as e:  # network, disk: the same recovery applies
        raise PushInterruptedError(target.name, stage, len(result.commits), e) from e
    rec = CommitRecord(oid, message, [op.path for op in chunk], sum(op.size for op in chunk), parent)
    result.commits.append(rec)
    emit("commit", rec)
    return oid


def export_system(source: Any, dest: str | os.PathLike, *, tasks: list[str] | None = None) -> dict[str, TaskFile]:
    """Write the chosen tasks into a local folder in the published layout, with card and figures; returns the
    task files as written. Components no task uses are removed from the folder."""
    return export(source, Path(dest), tasks=tasks, prune=True).released
