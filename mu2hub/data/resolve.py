"""Any way a user names data -> a task's data: a `TaskData`, a registered name, `hf:` / `imagefolder:`, a folder,
or a Hugging Face dataset id."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .registry import TaskData, get_task, list_data_tasks

_DATASET_MARKERS = ("dataset_dict.json", "state.json")  # `save_to_disk` output


def resolve_data(data: TaskData | str | os.PathLike, **kwargs: Any) -> TaskData:
    """Any way a user names data -> validated `TaskData` (label names come from the dataset).

    A folder is an `imagefolder` (or a `save_to_disk` dataset); `hf:`/`imagefolder:` prefixes and registered names
    (`digits`, `shapes/label_shape`) go to the registry; any other string is a Hugging Face dataset id.
    """
    if isinstance(data, TaskData):
        return data
    name = str(data)
    if os.path.isdir(name):
        is_dataset = any(os.path.exists(os.path.join(name, m)) for m in _DATASET_MARKERS)
        name = ("hf:" if is_dataset else "imagefolder:") + name
    if name.startswith("imagefolder:"):
        _check_class_folders(Path(name.removeprefix("imagefolder:")))
    if name.startswith(("hf:", "imagefolder:")) or name in list_data_tasks():
        return get_task(name, **kwargs)
    return get_task(f"hf:{name}", **kwargs)


def _check_class_folders(root: Path) -> None:
    """`datasets` silently drops the label column of a one-class folder; say what is wrong instead."""
    if not root.is_dir() or any(root.rglob("metadata.*")):
        return  # a missing folder is reported by the loader; metadata files label images themselves
    tops = [root / s for s in ("train", "validation", "test") if (root / s).is_dir()] or [root]
    classes = sorted({d.name for top in tops for d in top.iterdir() if d.is_dir()})
    if len(classes) < 2:
        raise ValueError(f"imagefolder {root}: {len(classes)} class folder(s) {classes}; a task needs at least 2 classes, "
                         "one folder per class: <folder>/[train|validation|test/]<class>/<image>")
