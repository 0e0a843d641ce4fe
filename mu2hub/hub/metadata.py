"""What a system holds, read from its JSON files alone: task names, per-task sizes and sharing, one task's files.

No JAX here, nor anything that imports it: `mu2hub tasks`, `info` and `download` run on these functions and start
in a fraction of a second (`bench/cli.py`). `mu2hub.api` re-exports them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from ..format.system import TaskFile, distinct
from .store import open_store, task_components


def list_tasks(repo_id_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir=None, token=None,
               local_files_only: bool = False) -> list[str]:
    """Names of the tasks a system holds (a listing of `tasks/`; nothing else is downloaded).

    Offline (`local_files_only=True` or `HF_HUB_OFFLINE=1`) the listing is complete when this commit was listed
    online before; otherwise it names only the cached tasks and warns (`PartialListingWarning`).

    Args:
        repo_id_or_path (`str`): a Hub repo id (`"org/name"`) or a local folder in the mu2hub layout.
        revision, cache_dir, token, local_files_only: as in `mu2hub.from_pretrained`.

    Raises:
        `LocalFolderNotFoundError`: a path such as `./x` or `a/b/c` that is no folder (and no repo id).
    """
    store = open_store(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token,
                       local_files_only=local_files_only)
    store.read_config()  # a repo that is not a (valid) mu2hub system says so instead of listing nothing
    return store.list_tasks()


def system_info(repo_id_or_path: str | os.PathLike, *, revision: str | None = None, cache_dir=None, token=None,
                local_files_only: bool = False, tasks: Iterable[str] | None = None) -> dict[str, Any]:
    """Per task: accuracy, activated parameters, download bytes, components shared with which tasks; system totals.

    Reads task files only (small JSON); no component is downloaded. Sharing is always computed over *every* task
    of the system, `tasks` only selects the rows returned, so `info --task t` and `info` agree about `t`.

    Args:
        repo_id_or_path (`str`): a Hub repo id (`"org/name"`) or a local folder in the mu2hub layout.
        revision, cache_dir, token, local_files_only: as in `mu2hub.from_pretrained`.
        tasks (`Iterable[str]`, *optional*): the rows to return; defaults to every task.

    Returns:
        `dict`: `tasks` ({task: stats}), `components`, `params`, `bytes` (the tasks' distinct components),
        `users` ({component id: [tasks]}), `complete` (False when an offline listing could name only cached tasks).
    """
    store = open_store(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    store.read_config()  # one small file: a repo that is not a (valid) mu2hub system says so
    names = store.list_tasks()
    wanted = list(tasks) if tasks is not None else names
    files = {t: store.read_task(t) for t in distinct([*names, *wanted])}  # an unknown wanted task raises, listing the rest
    files = {t: files[t] for t in stream_order(files)}
    info = summarize(files)
    info["tasks"] = {t: info["tasks"][t] for t in files if t in set(wanted)}
    info["complete"] = getattr(store, "listing_complete", True)
    return info


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


def test_accuracy(tf: TaskFile) -> float | None:
    """The task's recorded held-out test accuracy, or None when it has none (a bool is not a number here)."""
    acc = tf.metrics.get("test_accuracy")
    return float(acc) if isinstance(acc, (int, float)) and not isinstance(acc, bool) else None


def summarize(files: dict[str, TaskFile]) -> dict[str, Any]:
    """System statistics from task files: who uses which component, unique vs summed sizes, what is referenced."""
    users: dict[str, list[str]] = {}
    sizes: dict[str, tuple[int, int]] = {}
    for t, tf in files.items():
        for c in tf.components:
            if t not in users.setdefault(c.id, []):
                users[c.id].append(t)
            sizes[c.id] = (c.params, c.bytes)
    system_params = sum(p for p, _ in sizes.values())
    system_bytes = sum(b for _, b in sizes.values())
    per_task = {}
    for t, tf in files.items():
        ids = distinct(c.id for c in tf.components)
        shared = {cid: sorted(u for u in users[cid] if u != t) for cid in ids if len(users[cid]) > 1}
        referenced = distinct(f"{c.source.repo_id}@{c.source.revision[:8]}" for c in tf.components if c.source is not None)
        per_task[t] = {
            "accuracy": tf.metrics.get("test_accuracy"),
            "activated_params": tf.activated_params,
            "bytes": tf.download_bytes,
            "share_of_system": tf.activated_params / system_params if system_params else 0.0,
            "components": len(ids),
            "shared_components": len(shared),
            "shared_with": sorted({u for us in shared.values() for u in us}),
            "referenced_components": len({c.id for c in tf.components if c.source is not None}),
            "referenced_from": referenced,
            "new_params": tf.sizes.get("new_params"),
        }
    return {"tasks": per_task, "components": len(sizes), "params": system_params, "bytes": system_bytes,
            "users": users}


def sharing_text(stats: dict[str, Any]) -> str:
    """`3/8 shared (digits, shapes); 2 referenced from org/system@1a2b3c4d` — one row's sharing, as CLI and card show it."""
    text = f"{stats['shared_components']}/{stats['components']}" + (
        f" ({', '.join(stats['shared_with'])})" if stats["shared_with"] else "")
    if stats.get("referenced_components"):
        text += f"; {stats['referenced_components']} referenced from {', '.join(stats['referenced_from'])}"
    return text


@dataclass
class TaskDownload:
    """What `download` fetched: the task file, the commit it was pinned to, its verified components, and the folder
    they are in (the Hub cache's snapshot of that commit, or the local folder), as `hf download` prints it."""

    task_file: TaskFile
    revision: str | None
    components: int
    bytes: int
    folder: str | None = None


def download(repo_id_or_path: str | os.PathLike, task: str, *, revision: str | None = None, cache_dir=None, token=None,
             local_files_only: bool = False, force_download: bool = False) -> TaskDownload:
    """Fetch one task's files into the cache (config, task file, exactly its components), each verified by sha256.

    What `from_pretrained` would download, without building the model (no JAX): a later `from_pretrained(...,
    local_files_only=True)` needs no network.

    Args:
        repo_id_or_path (`str`): a Hub repo id (`"org/name"`) or a local folder in the mu2hub layout.
        revision, cache_dir, token, local_files_only, force_download: as in `mu2hub.from_pretrained`.
        task (`str`): the task whose files to fetch.
    """
    store = open_store(repo_id_or_path, revision=revision, cache_dir=cache_dir, token=token,
                       force_download=force_download, local_files_only=local_files_only)
    store.read_config()
    tf = store.read_task(task)
    comps = task_components(store, tf)
    config_path = getattr(store, "_config_path", None)  # HubStore: <cache>/snapshots/<commit>/[subfolder/]config.json
    folder = str(config_path.parent) if config_path is not None else str(getattr(store, "root", "")) or None
    return TaskDownload(tf, getattr(store, "commit", None), len(comps), tf.download_bytes, folder)
