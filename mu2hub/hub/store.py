"""Where a system's files live: a local folder (`LocalStore`) or a Hub repo at one pinned commit (`HubStore`).

Both read the same way (config, task files, verified components); only `LocalStore` writes, atomically.
A Hub load resolves the revision once — the commit `config.json` was served from — and pins every later
file of that load to it, so a push in the middle of a download cannot mix two versions of a task.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol, TypeAlias

from .cache import cached_listing, save_listing, stamp_dir
from ..utils.atomic import atomic_write
from ..utils.progress import byte_bar, forwarding_class
from ..constants import CONFIG_NAME, ROOT_NAME, TASKS_DIR, component_filename, task_filename
from ..errors import (
    ArgumentError,
    ComponentIntegrityError,
    ComponentMissingError,
    FormatError,
    LocalFilesMissingError,
    LocalFolderNotFoundError,
    Mu2hubError,
    PartialListingWarning,
    RemoteFileNotFoundError,
    TaskNotFoundError,
)
from ..format.system import (
    ComponentRef,
    ComponentSource,
    Structure,
    SystemConfig,
    TaskFile,
    check_relpath,
    check_task_name,
    component_chunks,
    component_id,
    distinct,
    dump_json,
    file_has_id,
    load_json,
    num_params,
    parse_component,
    read_component_file,
)
from .transfer import hub_call, parallel_map

if TYPE_CHECKING:  # numpy only where tensors are touched: listing tasks needs none
    import numpy as np

Tensors: TypeAlias = "dict[str, np.ndarray]"


class Store(Protocol):
    """What loading needs from any place a system lives."""

    name: str

    def read_config(self) -> SystemConfig: ...
    def read_task(self, task: str) -> TaskFile: ...
    def read_root(self) -> TaskFile | None: ...
    def list_tasks(self) -> list[str]: ...
    def read_components(self, refs: Iterable[ComponentRef], *, desc: str = "") -> dict[str, tuple[str, Tensors]]: ...


def _parse_all(blobs: dict[str, tuple[ComponentRef, bytes]]) -> dict[str, tuple[str, Tensors]]:
    return {cid: parse_component(data, expected_id=cid, filename=ref.filename) for cid, (ref, data) in blobs.items()}


# ---------------------------------------------------------------------------------------------------
# Local folder
# ---------------------------------------------------------------------------------------------------


class LocalStore:
    """A folder in the published layout; also the component store of a training run."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.name = str(self.root)

    # -- reading --------------------------------------------------------------------------------
    def _read(self, rel: str) -> bytes:
        try:
            return (self.root / rel).read_bytes()
        except FileNotFoundError:
            raise
        except OSError as e:
            raise Mu2hubError(f"{self.root / rel}: cannot read: {e}") from e

    def read_config(self) -> SystemConfig:
        try:
            data = self._read(CONFIG_NAME)
        except FileNotFoundError as e:
            raise FormatError(f"{self.root} is not a mu2hub repo: no {CONFIG_NAME}") from e
        return SystemConfig.from_json(load_json(data, CONFIG_NAME), CONFIG_NAME)

    def list_tasks(self) -> list[str]:
        base = self.root / TASKS_DIR
        return sorted(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.json")) if base.is_dir() else []

    def read_task(self, task: str) -> TaskFile:
        rel = task_filename(check_task_name(task))
        try:
            data = self._read(rel)
        except FileNotFoundError:
            raise TaskNotFoundError(task, self.list_tasks(), self.name) from None
        return _task_file(data, task, rel)

    def read_root(self) -> TaskFile | None:
        """The root path (`root.json`), if the system publishes one."""
        f = self.root / ROOT_NAME
        return TaskFile.from_json(load_json(self._read(ROOT_NAME), ROOT_NAME), ROOT_NAME) if f.is_file() else None

    def has_component(self, cid: str) -> bool:
        return (self.root / component_filename(cid)).is_file()

    def read_components(self, refs: Iterable[ComponentRef], *, desc: str = "") -> dict[str, tuple[str, Tensors]]:
        blobs: dict[str, tuple[ComponentRef, bytes]] = {}
        sourced: dict[str, ComponentRef] = {}
        missing = []
        for ref in refs:
            if ref.id in blobs or ref.id in sourced:
                continue
            if ref.source is not None:
                sourced[ref.id] = ref
                continue
            try:
                blobs[ref.id] = (ref, self._read(ref.filename))
            except FileNotFoundError:
                missing.append(ref.filename)
        if missing:
            raise ComponentMissingError(self.name, missing)
        out = _parse_all(blobs)
        if sourced:
            out.update(read_sourced(sourced.values(), desc=desc))
        return out

    # -- writing --------------------------------------------------------------------------------
    def write_config(self, config: SystemConfig) -> None:
        atomic_write(self.root / CONFIG_NAME, dump_json(config.to_json()))

    def write_task(self, tf: TaskFile) -> None:
        atomic_write(self.root / task_filename(check_task_name(tf.task)), dump_json(tf.to_json()))

    def write_root(self, tf: TaskFile) -> None:
        atomic_write(self.root / ROOT_NAME, dump_json(tf.to_json()))

    def write_component(self, tensors: Tensors, kind: str, slot: str | None = None) -> ComponentRef:
        """Store a component under its content id (a no-op if it exists) and return a reference to it."""
        return self.add_component(tensors, kind, slot)[0]

    def add_component(self, tensors: Tensors, kind: str, slot: str | None = None) -> tuple[ComponentRef, bool]:
        """`write_component`, also saying whether the file is new (False: these exact parameters were there)."""
        chunks = component_chunks(tensors, kind)  # hashed and written piece by piece: no copy of the tensors
        cid = component_id(chunks)
        new = not file_has_id(self.root / component_filename(cid), cid)  # a damaged file there is replaced
        if new:
            atomic_write(self.root / component_filename(cid), chunks)
        return ComponentRef(slot or kind, cid, num_params(tensors), sum(len(c) for c in chunks)), new

    def write_path(self, task: str, structure: Structure, params: Mapping[str, Mapping[str, np.ndarray]],
                   labels: list[str], **fields: Any) -> TaskFile:
        """Write a path's components and its task file; `fields` fill the other TaskFile fields."""
        import numpy as np

        refs = [self.write_component({k: np.asarray(v) for k, v in params[s].items()}, s.split(".")[0], s) for s in structure.slots()]
        tf = TaskFile(task=task, image_size=structure.image_size, num_layers=structure.num_layers, components=refs,
                      labels=list(labels), adapter_layers=structure.adapter_layers, adapter_dim=structure.adapter_dim, **fields)
        self.write_task(tf)
        return tf

    def write_component_bytes(self, data: bytes) -> str:
        cid = component_id(data)
        if not file_has_id(self.root / component_filename(cid), cid):
            atomic_write(self.root / component_filename(cid), data)
        return cid


# ---------------------------------------------------------------------------------------------------
# Hub repo at a pinned commit
# ---------------------------------------------------------------------------------------------------


class HubStore:
    """A Hub repo read through huggingface_hub's cache at one commit.

    `open()` fetches `config.json` at `revision` (branch, tag or sha); the snapshot folder it lands in
    names the commit, and every later file of this store is fetched at exactly that commit.
    """

    def __init__(self, repo_id: str, commit: str, config_path: str, *, cache_dir=None, token=None, force_download=False,
                 local_files_only=False, subfolder: str | None = None):
        self.repo_id, self.commit, self.subfolder = repo_id, commit, subfolder or None
        self.name = f"{repo_id}/{subfolder}" if subfolder else repo_id
        # a system in a folder of a repo lists its own tasks: its listings are saved apart from the root's
        self._listing_key = commit if not subfolder else f"{commit}.{hashlib.sha256(subfolder.encode()).hexdigest()[:16]}"
        self._prefix = f"{subfolder}/" if subfolder else ""
        self._config_path = Path(config_path)
        self._kw = dict(cache_dir=cache_dir, token=token)
        self.force_download, self.local_files_only = force_download, local_files_only
        self.listing_complete = True  # False after an offline listing that could only scan the cache

    @classmethod
    def open(cls, repo_id: str, *, revision: str | None = None, cache_dir=None, token=None, force_download=False,
             local_files_only=False, subfolder: str | None = None) -> "HubStore":
        from huggingface_hub import constants

        local_files_only = local_files_only or constants.HF_HUB_OFFLINE
        sub = check_subfolder(subfolder)
        where = f"{sub}/{CONFIG_NAME}" if sub else CONFIG_NAME
        try:
            path = hub_download(repo_id, where, revision=revision, cache_dir=cache_dir, token=token,
                             force_download=force_download, local_files_only=local_files_only)
        except RemoteFileNotFoundError:
            at = f" at {revision}" if revision else ""
            raise FormatError(f"{repo_id}{at} is not a mu2hub repo: it has no {where}", path=where) from None
        snapshot = Path(path).parents[where.count("/")]  # snapshots/<commit>/[subfolder/]config.json
        return cls(repo_id, snapshot.name, path, cache_dir=cache_dir, token=token, force_download=force_download,
                   local_files_only=local_files_only, subfolder=sub)

    def _get(self, filename: str, *, repo_id: str | None = None, revision: str | None = None, force: bool = False,
             tqdm_class=None, nbytes: int | None = None) -> str:
        if repo_id is None or (repo_id == self.repo_id and revision in (None, self.commit)):
            filename = self._prefix + filename  # this system's own files; a referenced repo's sit at its root
        return hub_download(
            repo_id or self.repo_id, filename, revision=revision or self.commit, force_download=force or self.force_download,
            local_files_only=self.local_files_only, tqdm_class=tqdm_class, nbytes=nbytes, **self._kw,
        )

    def read_config(self) -> SystemConfig:
        return SystemConfig.from_json(load_json(self._config_path.read_bytes(), CONFIG_NAME), CONFIG_NAME)

    def list_tasks(self) -> list[str]:
        """Tasks at the pinned commit.

        A listing is saved per commit (`mu2hub.hub.cache`), so a warm call asks the Hub nothing beyond the commit.
        Offline, the listing saved when this commit was last listed online (or huggingface_hub's cached tree) is
        complete; without either, only the tasks whose files are in the cache can be named: then
        `listing_complete` turns False and a `PartialListingWarning` says so.
        """
        if self.local_files_only:
            return self._offline_listing()
        saved = cached_listing(self.repo_id, self._listing_key)  # a commit never changes: no need to ask the Hub again
        if saved is not None:
            return saved
        from huggingface_hub import HfApi

        api = HfApi(token=self._kw["token"])
        try:
            with hub_call(self.repo_id, f"listing {TASKS_DIR}/"):
                entries = list(api.list_repo_tree(self.repo_id, path_in_repo=self._prefix + TASKS_DIR, recursive=True,
                                                  revision=self.commit))
        except RemoteFileNotFoundError:  # a repo without tasks/ answers 404
            return []
        skip = len(self._prefix + TASKS_DIR) + 1
        names = sorted(e.path[skip:-5] for e in entries if e.path.endswith(".json") and hasattr(e, "size"))
        with contextlib.suppress(OSError):  # a read-only assets cache only costs the offline listing
            save_listing(self.repo_id, self._listing_key, names)
        return names

    def _offline_listing(self) -> list[str]:
        saved = cached_listing(self.repo_id, self._listing_key)
        if saved is not None:
            return saved
        tree = _cached_tree(self.repo_id, self.commit, self._kw["cache_dir"])
        if tree is not None:
            top = f"{self._prefix}{TASKS_DIR}/"
            return sorted(p[len(top) : -5] for p in tree if p.startswith(top) and p.endswith(".json"))
        base = self._config_path.parent / TASKS_DIR
        names = sorted(p.relative_to(base).with_suffix("").as_posix() for p in base.rglob("*.json")) if base.is_dir() else []
        self.listing_complete = False
        warnings.warn(PartialListingWarning(
            f"{self.repo_id}@{self.commit[:8]}: offline, so only the {len(names)} task(s) whose files are in the local "
            "cache can be listed; the repo may hold more. Connect (unset HF_HUB_OFFLINE / drop local_files_only) "
            "to list them all."), stacklevel=3)
        return names

    def read_root(self) -> TaskFile | None:
        """The root path (`root.json`) at the pinned commit, if the system publishes one."""
        try:
            path = self._get(ROOT_NAME)
        except (RemoteFileNotFoundError, LocalFilesMissingError):
            return None
        return TaskFile.from_json(load_json(Path(path).read_bytes(), ROOT_NAME), ROOT_NAME)

    def read_task(self, task: str) -> TaskFile:
        rel = task_filename(check_task_name(task))
        try:
            path = self._get(rel)
        except RemoteFileNotFoundError:
            raise TaskNotFoundError(task, self.list_tasks(), self.repo_id) from None
        except LocalFilesMissingError as e:
            cached = self.list_tasks()
            raise LocalFilesMissingError(self.repo_id, e.missing + ([f"(tasks in the cache: {', '.join(cached)})"] if cached else [])) from None
        return _task_file(Path(path).read_bytes(), task, rel)

    def read_components(self, refs: Iterable[ComponentRef], *, desc: str = "") -> dict[str, tuple[str, Tensors]]:
        """Fetch, verify and parse exactly these components (in parallel, one aggregate progress bar)."""
        todo = {r.id: r for r in refs}
        total = sum(r.bytes for r in todo.values())
        missing: list[str] = []
        with byte_bar(total, desc or f"Fetching {len(todo)} components") as bar:
            fwd = forwarding_class(bar)

            def one(ref: ComponentRef) -> tuple[str, tuple[str, Tensors]] | None:
                try:
                    return ref.id, self._read_verified(ref, fwd)
                except LocalFilesMissingError as e:
                    missing.extend(e.missing)
                    return None

            results = [r for r in parallel_map(one, todo.values(), workers=8) if r is not None]
        if missing:
            raise LocalFilesMissingError(self.repo_id, sorted(missing))
        return dict(results)

    def _read_verified(self, ref: ComponentRef, tqdm_class) -> tuple[str, Tensors]:
        src = ref.source or ComponentSource(self.repo_id, self.commit)
        label = ref.filename if ref.source is None else f"{src.repo_id}@{src.revision[:8]}/{ref.filename}"
        stamps = stamp_dir(self._kw["cache_dir"])  # outside HF_HUB_CACHE: that folder is huggingface_hub's

        def read(force: bool) -> tuple[str, Tensors]:
            path = self._get(ref.filename, repo_id=src.repo_id, revision=src.revision, force=force, tqdm_class=tqdm_class,
                             nbytes=ref.bytes)
            return read_component_file(path, expected_id=ref.id, expected_bytes=ref.bytes, filename=label, stamp_dir=stamps)

        try:
            return read(False)
        except ComponentIntegrityError:
            if self.local_files_only:
                raise
        # The cached copy is damaged: fetch it once more from the Hub before giving up.
        return read(True)


def _cached_tree(repo_id: str, commit: str, cache_dir) -> list[str] | None:
    """File paths of huggingface_hub's cached tree listing at `commit` (written by `snapshot_download`), if any."""
    try:
        from huggingface_hub import get_cached_repo_tree
        from huggingface_hub.errors import CachedRepoTreeNotFoundError
    except ImportError:  # huggingface_hub before tree caching
        return None
    try:
        return [f.path for f in get_cached_repo_tree(repo_id, revision=commit, cache_dir=cache_dir)]
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return None


def _task_file(data: bytes, task: str, rel: str) -> TaskFile:
    """A task file as either store read it: valid, and naming the task its path says (a renamed copy is refused)."""
    tf = TaskFile.from_json(load_json(data, rel), rel)
    if tf.task != task:
        raise FormatError(f"file names task {tf.task!r} but lives at {rel}", path=rel)
    return tf


_HAS_TQDM_CLASS: bool | None = None


def hub_download(repo_id: str, filename: str, *, revision, cache_dir, token, force_download, local_files_only,
              tqdm_class=None, nbytes: int | None = None) -> str:
    """`hf_hub_download` under a deadline (`transfer.hub_call`): every failure is a named `Mu2hubError`; an offline
    miss is `LocalFilesMissingError` naming the file."""
    global _HAS_TQDM_CLASS
    from huggingface_hub import hf_hub_download

    if _HAS_TQDM_CLASS is None:
        _HAS_TQDM_CLASS = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    extra = {"tqdm_class": tqdm_class} if tqdm_class is not None and _HAS_TQDM_CLASS else {}
    with hub_call(repo_id, filename, nbytes=nbytes, local_files_only=local_files_only):
        return hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache_dir, token=token,
                               force_download=force_download, local_files_only=local_files_only, **extra)


def read_sourced(refs: Iterable[ComponentRef], *, desc: str = "") -> dict[str, tuple[str, Tensors]]:
    """Components that live in other Hub repos at pinned commits (`source`), read through the Hub cache.

    This is how a local folder of a fine-tuned variant loads the untouched components it references.
    """
    from huggingface_hub import constants

    refs = list(refs)
    if not refs:
        return {}
    first = refs[0].source
    assert first is not None
    store = HubStore(first.repo_id, first.revision, os.devnull, local_files_only=constants.HF_HUB_OFFLINE)
    return store.read_components(refs, desc=desc or f"Fetching {len(refs)} referenced components")


def open_store(repo_or_dir: str | os.PathLike, *, revision: str | None = None, cache_dir=None, token=None,
               force_download: bool = False, local_files_only: bool = False,
               subfolder: str | None = None) -> LocalStore | HubStore:
    """A local folder if `repo_or_dir` is one, otherwise a Hub repo id (huggingface_hub's rule, as ModelHubMixin).

    `subfolder`: the system lives in that folder of the repo (or of the local folder), as in `hf_hub_download`."""
    if force_download and local_files_only:
        raise ArgumentError("force_download=True and local_files_only=True contradict each other: pick one")
    if os.path.isdir(repo_or_dir):
        if revision is not None:
            raise ArgumentError(f"revision={revision!r} given for the local folder {repo_or_dir}: folders have no revisions")
        sub = check_subfolder(subfolder)
        root = Path(repo_or_dir) / sub if sub else Path(repo_or_dir)
        if not root.is_dir():
            raise LocalFolderNotFoundError(str(root))
        return LocalStore(root)
    if not looks_like_repo_id(str(repo_or_dir)):
        raise LocalFolderNotFoundError(str(repo_or_dir))
    return HubStore.open(str(repo_or_dir), revision=revision, cache_dir=cache_dir, token=token,
                         force_download=force_download, local_files_only=local_files_only, subfolder=subfolder)


def check_subfolder(subfolder: str | None) -> str | None:
    """`subfolder=` as a relative path inside the repo (no `..`, not absolute); `""` and `"."` mean the root."""
    if subfolder is None or str(subfolder) in ("", ".", "./"):
        return None
    if not isinstance(subfolder, (str, os.PathLike)):
        raise ArgumentError(f"subfolder must be a folder path inside the repo, got {subfolder!r}")
    sub = str(subfolder).rstrip("/")
    try:
        return check_relpath(sub, where="subfolder")
    except FormatError as e:
        raise ArgumentError(f"subfolder={subfolder!r}: a folder inside the repo, relative and without '..'") from e


_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.\-]*/)?[A-Za-z0-9][\w.\-]*$")


def looks_like_repo_id(name: str) -> bool:
    """`org/name` or `name` (huggingface_hub's rule); `./x`, `/x`, `~/x`, `a/b/c` can only be folders."""
    return isinstance(name, str) and bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith(".git")


def task_components(store: Store, tf: TaskFile, *, desc: str = "") -> dict[str, tuple[str, Tensors]]:
    """Verified components of one task, keyed by id."""
    return store.read_components(tf.components, desc=desc or f"{tf.task}: {len(distinct(c.id for c in tf.components))} components")
