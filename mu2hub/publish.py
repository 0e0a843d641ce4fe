"""A system's best paths -> the published layout: referenced components only, sizes and sharing filled in.

`export_system` reads any store (a training run's `system/` folder or a published repo) and writes a folder
in docs/FORMAT.md's layout; components no task references are left behind (garbage collection).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from .api import summarize
from .format import TaskFile
from .store import LocalStore


def export_system(source: LocalStore, dest: str | os.PathLike, *, tasks: list[str] | None = None) -> dict[str, TaskFile]:
    """Copy the config, the chosen tasks' files and exactly the components they reference into `dest`."""
    out = LocalStore(dest)
    names = tasks if tasks is not None else source.list_tasks()
    files = {t: source.read_task(t) for t in names}
    users = summarize(files)["users"]
    out.write_config(source.read_config())
    written = {}
    for t, tf in files.items():
        for ref in tf.components:
            if ref.source is None and not out.has_component(ref.id):
                # verified read (sha256), then a byte-exact copy under the same name
                source.read_components([ref])
                target = Path(out.root) / ref.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(f".{target.name}.tmp")
                shutil.copyfile(Path(source.root) / ref.filename, tmp)
                tmp.replace(target)
        shared = {c.id: sorted(u for u in users[c.id] if u != t) for c in tf.components if len(users[c.id]) > 1}
        sizes = {**tf.sizes, "activated_params": tf.activated_params, "bytes": tf.download_bytes, "shared_with": shared}
        written[t] = replace(tf, sizes=sizes)
        out.write_task(written[t])
    return written
