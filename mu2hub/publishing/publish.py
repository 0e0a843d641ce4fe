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
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .card import DEFAULT_LICENSE, PARAMS_FIGURE, SYSTEM_FIGURE, render_card
from ..constants import CONFIG_NAME, README_NAME, ROOT_NAME, TASKS_DIR, component_filename
from ..errors import ComponentIntegrityError, ExportError, Mu2hubError, NotAMu2hubRepoError, PushInterruptedError
from .figures import params_png, system_png
from ..format.system import ComponentRef, SystemConfig, TaskFile, distinct, dump_json, sha256_hex
from ..hub.metadata import stream_order, test_accuracy
from ..hub.store import HubStore, LocalStore, Store
from .targets import HubTarget, LocalTarget, Snapshot, open_target

SHARED_FILES = (README_NAME, SYSTEM_FIGURE, PARAMS_FIGURE)
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
    """The config and the chosen tasks' files (the plan refuses releasing one without a held-out test accuracy)."""
    config = store.read_config()
    names = list(tasks) if tasks is not None else store.list_tasks()
    if not names:
        raise ExportError(f"{store.name}: no tasks to export")
    return config, {t: store.read_task(t) for t in names}



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
    if new_params is None:  # not known (no lineage.created): say nothing rather than null
        del sizes["new_params"]
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
    from ..inference.task import load_task
    from ..inference.probe import check_probe, make_probe

    if isinstance(store, LocalStore) and any(c.source is not None for c in tf.components):
        return tf.probe  # components in other repos: the probe is only checkable through the Hub
    model = load_task(store, task)  # verifies every component against its id
    if tf.probe and check_probe(model, tf.probe).ok:
        return tf.probe
    return make_probe(model)


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


def card_order(files: Mapping[str, TaskFile], previous: Iterable[str] = ()) -> list[str]:
    """The order card and figures show tasks in: the target card's order for the tasks it already lists, then the
    others in stream order — so a refresh never reorders rows or recolours tasks, and new tasks come last."""
    kept = [t for t in dict.fromkeys(previous) if t in files]
    return kept + [t for t in stream_order({t: tf for t, tf in files.items() if t not in kept})]


def _shared_files(union: dict[str, TaskFile], config: SystemConfig, label: str, root: TaskFile | None,
                  license: str, name: str | None = None) -> dict[str, bytes]:
    """Card and figures of a set of tasks (memoised: a retry with the same tasks does not redraw)."""
    parts = [label.encode(), license.encode(), dump_json(config.to_json()), dump_json(root.to_json()) if root else b"",
             str(name).encode()]
    key = sha256_hex(b"\0".join(parts + [t.encode() + dump_json(tf.to_json()) for t, tf in union.items()]))
    files = _RENDERED.get(key)
    if files is None:
        files = {README_NAME: render_card(union, config, repo_id=label, root=root, license=license, name=name).encode(),
                 SYSTEM_FIGURE: system_png(union), PARAMS_FIGURE: params_png(union)}
        if len(_RENDERED) > 8:
            _RENDERED.clear()
        _RENDERED[key] = files
    return files


def make_plan(store: Store, config: SystemConfig, files: Mapping[str, TaskFile], snap: Snapshot, *, target: str,
              label: str, probe_for: Callable[[str, TaskFile], dict[str, Any] | None], force: bool = False,
              prune: bool = False, root: TaskFile | None = None, license: str = DEFAULT_LICENSE,
              name: str | None = None) -> ExportPlan:
    """Decide every file against the target's snapshot; pure apart from reading (and checking) source files.
    `name` is the card's title (defaults to `label`)."""
    final = _config_ops(config, snap, target)
    status, released, write = _task_status(files, snap, force)
    _check_test_accuracy(store, files, write)
    final += _release_ops(files, snap, write, status, released, probe_for)
    final += _root_ops(root, snap)
    comps, present = _component_ops(store, files, root, status, snap)
    # the card and figures of the union
    union_all = {**snap.tasks, **released}
    union = {t: union_all[t] for t in card_order(union_all, snap.card_order)}
    card_root = root if root is not None else snap.root
    for rel_path, data in _shared_files(union, snap.config or config, label, card_root, license, name).items():
        rf = snap.files.get(rel_path)
        if rf is None or not rf.matches(data):
            final.append(FileOp(rel_path, len(data), "card" if rel_path == README_NAME else "figure", "edit" if rf else "new", data))
    # garbage at the target
    referenced = {c.id for tf in [*union.values(), *([card_root] if card_root is not None else [])] for c in tf.components}
    unreferenced = sorted(snap.components - referenced) if snap.components is not None else []
    if prune:
        final.extend(FileOp(component_filename(cid), 0, "component", "delete") for cid in unreferenced)
    return ExportPlan(store.name, target, snap.head, comps, final, status, released, present, unreferenced, list(snap.notes))


def _config_ops(config: SystemConfig, snap: Snapshot, target: str) -> list[FileOp]:
    """`config.json` for a new target; an existing one must describe the same system."""
    if snap.config is None:
        data = dump_json(config.to_json())
        return [FileOp(CONFIG_NAME, len(data), "config", "new", data)]
    if (snap.config.dims, snap.config.root_image_size, snap.config.root_num_layers) != (
            config.dims, config.root_image_size, config.root_num_layers):
        raise ExportError(f"{target} holds another system: its {CONFIG_NAME} has {snap.config.dims} and root "
                          f"{snap.config.root_image_size}px/{snap.config.root_num_layers} layers, the source {config.dims} and root "
                          f"{config.root_image_size}px/{config.root_num_layers} layers; export to another repo")
    return []


def _task_status(files: Mapping[str, TaskFile], snap: Snapshot,
                 force: bool) -> tuple[dict[str, str], dict[str, TaskFile], list[str]]:
    """Which tasks to write: task -> status, the tasks kept as the target has them, the tasks to write."""
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
    return status, released, write


def _check_test_accuracy(store: Store, files: Mapping[str, TaskFile], write: list[str]) -> None:
    """Every task released here reports a test accuracy; tasks already at the target unchanged are left as they are
    (so re-rendering a repo's card onto itself works for any repo)."""
    missing = [t for t in write if test_accuracy(files[t]) is None]
    if missing:
        raise ExportError(f"{store.name}: task(s) {', '.join(missing)} have no metrics.test_accuracy (every published "
                          "task reports a held-out test accuracy); finish their evolution, or leave them out with tasks=/--tasks")


def _release_ops(files: Mapping[str, TaskFile], snap: Snapshot, write: list[str], status: dict[str, str],
                 released: dict[str, TaskFile], probe_for: Callable[[str, TaskFile], dict[str, Any] | None]) -> list[FileOp]:
    """Release the tasks to write in stream order (into `released`); "shared with" = tasks published before."""
    ops = []
    earlier: dict[str, list[str]] = {}
    for t, tf in snap.tasks.items():
        if t not in write:
            for cid in distinct(c.id for c in tf.components):
                earlier.setdefault(cid, []).append(t)
    for t in stream_order({t: files[t] for t in write}):
        rel = released[t] = release(files[t], earlier=earlier, probe=probe_for(t, files[t]))
        data = dump_json(rel.to_json())
        ops.append(FileOp(rel.filename, len(data), "task", "new" if status[t] == "new" else "edit", data))
        for cid in distinct(c.id for c in rel.components):
            earlier.setdefault(cid, []).append(t)
    return ops


def _root_ops(root: TaskFile | None, snap: Snapshot) -> list[FileOp]:
    """The root path: the parent contributors' new tasks may start from (docs/FORMAT.md, root.json)."""
    if root is None:
        return []
    data = dump_json(root.to_json())
    rf = snap.files.get(ROOT_NAME)
    if rf is None or not rf.matches(data):
        return [FileOp(ROOT_NAME, len(data), "root", "new" if rf is None else "edit", data)]
    return []


def _component_ops(store: Store, files: Mapping[str, TaskFile], root: TaskFile | None, status: dict[str, str],
                   snap: Snapshot) -> tuple[list[FileOp], int]:
    """Components the target lacks (or holds with other content), each checked; and how many it already holds."""
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
    return comps, present


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
    license: str = DEFAULT_LICENSE,
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
        repo_id (`str`, *optional*): the name the card's title and usage snippet show; defaults to the target (for a
            folder, the title is the run's name, `config.name`).
        dry_run (`bool`, defaults to `False`): plan only; `result.plan.format()` lists files and bytes.
        prune (`bool`, defaults to `False`): delete component files at the target that no task uses (do not
            prune while others push to the same repo).
        force (`bool`, defaults to `False`): replace a task even where the target's path scores better.
        private (`bool`, *optional*): visibility of a repo this creates.
        license (`str`, defaults to `"apache-2.0"`): the license id the model card states.
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
    probe_for = _probes_once(store)
    emit = callback or (lambda *_: None)
    root = store.read_root()
    paths = _target_paths(files, root)
    result = ExportResult(target.name, dry_run=dry_run)
    # the card names the system by its repo id, or for a folder by the run's name (config.json), not the folder's
    title = repo_id or (target.repo_id if isinstance(target, HubTarget) else (config.name or Path(target.label).name))
    with contextlib.nullcontext() if dry_run else target.locked():
        for _ in range(4 * max_retries + 8):  # components rounds + conflict retries, bounded
            snap = target.snapshot(paths, list_components=prune)
            plan = result.plan = make_plan(store, config, files, snap, target=target.name, label=repo_id or target.label,
                                           probe_for=probe_for, force=force, prune=prune, root=root, license=license,
                                           name=title)
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


def _probes_once(store: Store) -> Callable[[str, TaskFile], dict[str, Any] | None]:
    """`probe_for(task, task_file)`: each task's probe computed once, however often the export plans again."""
    probes: dict[str, dict[str, Any] | None] = {}

    def probe_for(t: str, tf: TaskFile) -> dict[str, Any] | None:
        if t not in probes:
            probes[t] = make_task_probe(store, t, tf)
        return probes[t]

    return probe_for


def _target_paths(files: Mapping[str, TaskFile], root: TaskFile | None) -> list[str]:
    """The files of the target the plan looks at: the components the source's paths store, the JSON files, card and
    figures."""
    paths = [c.filename for tf in [*files.values(), *([root] if root else [])] for c in tf.components if c.source is None]
    return distinct(paths) + [CONFIG_NAME, ROOT_NAME, *SHARED_FILES]


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


def refresh_card(repo_id: str, *, token: str | bool | None = None, cache_dir: str | os.PathLike | None = None) -> list[str]:
    """Re-render a repo's card and figures from every task at its head (after a merge): nothing else changes.

    An export of the repo onto itself: every task and component is already there, so the one commit (if any)
    holds `README.md` and the figures. Returns the paths committed.
    """
    result = export(repo_id, repo_id, token=token, cache_dir=cache_dir)
    return [p for c in result.commits for p in c.paths]


def export_system(source: Any, dest: str | os.PathLike, *, tasks: list[str] | None = None) -> dict[str, TaskFile]:
    """Write the chosen tasks into a local folder in the published layout, with card and figures; returns the
    task files as written. Components no task uses are removed from the folder."""
    return export(source, Path(dest), tasks=tasks, prune=True).released
