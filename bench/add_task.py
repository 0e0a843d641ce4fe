"""Bytes downloaded and wall time to add one task to a published system, vs downloading the whole system.

A generated system (random weights: this measures bytes and time, not accuracy) of many tasks, each cloning its
top blocks, `norm` and `head` and sharing the rest with the others, is pushed to a loopback Hub. Then, from a fresh
cache each time, through the real huggingface_hub client:
- `snapshot_download` of the whole repo (what adding a task costs without partial downloads);
- `mu2hub.add_task` with no byte cap, and with a cap that admits only a few parents.
Every `add_task` row includes its training (children on generated shapes), so its wall time is an upper bound on
the download part. Run: `.venv/bin/python bench/add_task.py [--variant Ti/16] [--tasks 24] [--budget 4]`.
"""

from __future__ import annotations

import argparse
import shutil
import time

from _common import VARIANTS, load_average, loopback_hub, machine

import mu2hub
from mu2hub.format.system import Dims
from mu2hub.utils.tables import table
from mu2hub.testing import random_system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="Ti/16", choices=sorted(VARIANTS))
    ap.add_argument("--tasks", type=int, default=24)
    ap.add_argument("--own-blocks", type=int, default=2, help="blocks each task clones (the rest are shared)")
    ap.add_argument("--image-size", type=int, default=64, help="smaller than the variant's 224 to keep CPU training short")
    ap.add_argument("--budget", type=int, default=4, help="children add_task trains")
    a = ap.parse_args()
    import jax

    hidden, heads, mlp, patch, layers, _ = VARIANTS[a.variant]
    server, root = loopback_hub()
    files = random_system(root / "system", dims=Dims(hidden, heads, mlp, patch), image_size=a.image_size,
                          num_layers=layers, num_tasks=a.tasks, own_blocks=a.own_blocks, num_classes=6)
    path = files["task_0"]
    own = {f"block.{i}" for i in range(layers - a.own_blocks, layers)} | {"norm", "head"}
    three = path.download_bytes + 2 * sum(c.bytes for c in path.components if c.slot in own)  # one path + 2 tasks' own files
    server.create_repo("bench/system")
    server.commit_folder("bench/system", root / "system")
    repo_bytes = sum(len(b) for b in server.files("bench/system").values())
    data = mu2hub.data.get_task("shapes/label_scale", image_size=a.image_size, n_train=256, n_validation=64, n_test=128)
    settings = {"children_per_generation": 2, "batch_size": 16, "num_validations": 1,
                "train_examples_between_validations_max": 64}

    def fresh() -> None:
        shutil.rmtree(root / "hf_home" / "hub", ignore_errors=True)
        server.reset_log()

    rows = []
    fresh()
    t = time.perf_counter()
    from huggingface_hub import snapshot_download

    snapshot_download("bench/system")
    took = time.perf_counter() - t
    rows.append(["download the whole system (snapshot_download)", "-", f"{server.bytes_downloaded('bench/system') / 1e6:.2f}",
                 "1.000", f"{took:.2f}", f"{took:.2f}"])
    for label, cap in (("add_task, no byte cap", None), ("add_task, max_bytes admitting 3 parents", three)):
        fresh()
        t = time.perf_counter()
        r = mu2hub.add_task("bench/system", task=f"new_{len(rows)}", data=data, budget=a.budget, max_bytes=cap,
                            evolution=settings, baseline=False, progress=False, workdir=root / f"run{len(rows)}")
        wall = time.perf_counter() - t
        got = server.bytes_downloaded("bench/system")
        rows.append([label + (f" ({cap / 1e6:.1f} MB)" if cap else ""), f"{len(r.parents)}/{len(r.parents) + len(r.excluded)}",
                     f"{got / 1e6:.2f}", f"{got / repo_bytes:.3f}", f"{r.download_seconds:.2f}", f"{wall:.2f}"])
    print(f"\nbench/add_task.py — {a.variant} dims at {a.image_size}px, {layers} blocks, {a.tasks} tasks "
          f"({a.own_blocks} own blocks each), repo {repo_bytes / 1e6:.1f} MB; add_task budget {a.budget} children of "
          f"{settings['train_examples_between_validations_max'] // settings['batch_size']} steps — {machine()}, "
          f"{jax.devices()[0].platform}, {load_average()}")
    print(table(rows, ["what", "parents admitted", "MB downloaded", "of repo", "download s", "wall s (incl. training)"]))
    server.stop()


if __name__ == "__main__":
    main()
