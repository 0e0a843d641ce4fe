"""Bytes a task's `from_pretrained` fetches vs. the task's own files and vs. the whole repo.

A generated system of >= 10 tasks sharing >= 70% of their components is pushed to a loopback Hub; each task
is then loaded from a fresh cache through the real huggingface_hub client. Goal: fetched / task files = 1.00
plus the two small JSON files. Run: `.venv/bin/python bench/download.py [--variant B/16] [--tasks 10]`.
"""

from __future__ import annotations

import argparse
import shutil

from _common import VARIANTS, loopback_hub, machine

import mu2hub
from mu2hub.format.system import Dims
from mu2hub.utils.tables import table
from mu2hub.testing import random_system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="B/16", choices=sorted(VARIANTS))
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--own-blocks", type=int, default=1, help="blocks each task clones (the rest are shared)")
    a = ap.parse_args()
    hidden, heads, mlp, patch, layers, size = VARIANTS[a.variant]
    server, root = loopback_hub()
    files = random_system(root / "system", dims=Dims(hidden, heads, mlp, patch), image_size=size, num_layers=layers,
                          num_tasks=a.tasks, own_blocks=a.own_blocks)
    server.create_repo("bench/system")
    server.commit_folder("bench/system", root / "system")
    repo_bytes = sum(len(b) for b in server.files("bench/system").values())
    info = mu2hub.system_info("bench/system")
    rows = []
    for task, tf in files.items():
        shutil.rmtree(root / "hf_home" / "hub", ignore_errors=True)  # fresh cache for every task
        server.reset_log()
        mu2hub.from_pretrained("bench/system", task=task)
        fetched = server.bytes_downloaded("bench/system")
        own = tf.download_bytes
        json_bytes = fetched - own
        shared = info["tasks"][task]["shared_components"] / info["tasks"][task]["components"]
        rows.append([task, f"{shared:.0%}", f"{own / 1e6:.1f}", f"{fetched / 1e6:.1f}", f"{json_bytes:,}",
                     f"{fetched / own:.4f}", f"{fetched / repo_bytes:.3f}"])
    print(f"\nbench/download.py — {a.variant}, {a.tasks} tasks, {info['components']} components, "
          f"repo {repo_bytes / 1e6:.1f} MB — {machine()}")
    print(table(rows, ["task", "shared comps", "task MB", "fetched MB", "JSON bytes", "fetched/task", "fetched/repo"]))
    server.stop()


if __name__ == "__main__":
    main()
