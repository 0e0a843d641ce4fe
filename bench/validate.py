"""What the trust checks cost on a system shaped like the paper's: `validate` on a pull request, `info`, Space start-up.

A generated system (random weights: this measures time, not accuracy) with the µ2Net paper's structure — 69 tasks,
24 blocks (ViT-L/16 depth), 224 px, patch 16, one task file with a probe per task; each task clones its top 2 blocks,
`norm` and `head` — is pushed to the loopback Hub. The width is shrunk (hidden 64 by default) so the run fits a
laptop; the file count and JSON sizes are the real ones. A contribution (task_0's path with 2 new blocks, a new
`norm` and `head`, an honest probe) is opened as a pull request.

Timed, each from a fresh cache through the real huggingface_hub client, median of `--repeats`, peers in the same run:
- `validate` (every check, probe included) vs. its peer: `hf_hub_download` of the files validate reads, no checks;
- `validate(probe=False)`;
- `system_info` (`mu2hub info`) vs. its peer: downloading the same 69 task files and `json.loads` them (no schema);
- `SpaceSystem` start-up (reads and validates every task file, builds the summary);
- the schema alone: `TaskFile.from_json` of the 69 task files vs. `json.loads`, in memory.

Run: `.venv/bin/python bench/validate.py [--tasks 69] [--hidden 64] [--repeats 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from dataclasses import replace

import numpy as np
from _common import loopback_hub, machine, median_seconds

import mu2hub
import mu2hub.format.system
from mu2hub.inference.task import TaskModel
from mu2hub.constants import component_filename, task_filename
from mu2hub.format.system import ComponentRef, Dims, TaskFile, component_bytes, component_id, num_params
from mu2hub.inference.probe import make_probe
from mu2hub.utils.tables import table
from mu2hub.space import SpaceSystem
from mu2hub.hub.store import LocalStore
from mu2hub.testing import random_system


def with_probes(folder, tasks) -> None:
    """Every task file gets what an export writes: metrics and a probe (one compile: all paths share a structure)."""
    store = LocalStore(folder)
    for t in tasks:
        tf = store.read_task(t)
        tf.metrics = {"test_accuracy": 0.5, "validation_accuracy": 0.5, "chance": 0.01, "score": 0.5}
        tf.probe = make_probe(mu2hub.from_pretrained(folder, task=t))
        store.write_task(tf)


def contribution(folder, name: str, own: list[str], seed: int = 1) -> dict[str, bytes]:
    """task_0's path with fresh copies of `own` slots: the new task file and its new components."""
    store = LocalStore(folder)
    config, tf = store.read_config(), store.read_task("task_0")
    comps = store.read_components(tf.components)
    params = {r.slot: dict(comps[r.id][1]) for r in tf.components}
    rng = np.random.default_rng(seed)
    files, refs = {}, []
    for r in tf.components:
        if r.slot in own:
            params[r.slot] = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in params[r.slot].items()}
            data = component_bytes(params[r.slot], r.kind)
            files[component_filename(component_id(data))] = data
            r = ComponentRef(r.slot, component_id(data), num_params(params[r.slot]), len(data))
        refs.append(r)
    new = replace(tf, task=name, components=refs, metrics={"test_accuracy": 0.6, "chance": 0.01}, sizes={})
    new.probe = make_probe(TaskModel(config, new, params))
    files[task_filename(name)] = json.dumps(new.to_json()).encode()
    return files


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=69)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

    server, root = loopback_hub()
    dims = Dims(a.hidden, max(1, a.hidden // 16), 4 * a.hidden, 16)
    start = time.perf_counter()
    files = random_system(root / "system", dims=dims, image_size=a.image_size, num_layers=a.layers,
                          num_tasks=a.tasks, own_blocks=2, num_classes=a.classes)
    with_probes(root / "system", files)
    repo = "bench/paper-shaped"
    server.commit_folder(repo, root / "system")
    added = contribution(root / "system", "contributed", [f"block.{a.layers - 2}", f"block.{a.layers - 1}", "norm", "head"])
    pr = HfApi().create_commit(repo, [CommitOperationAdd(p, d) for p, d in added.items()], commit_message="Add task",
                               create_pr=True).pr_num
    setup = time.perf_counter() - start
    repo_files = server.files(repo)
    task_paths = sorted(p for p in repo_files if p.startswith("tasks/"))
    components = sum(p.startswith("components/") for p in repo_files)
    cache = root / "hf_home" / "hub"

    def fresh() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    def check() -> None:
        report = mu2hub.validate(repo, pr, cache_dir=str(root / "validate-cache"))
        assert report.ok, report.format()

    def check_no_probe() -> None:
        assert mu2hub.validate(repo, pr, probe=False, cache_dir=str(root / "validate-cache")).ok

    def fetch_what_validate_reads() -> None:
        head = server.head(repo, f"refs/pr/{pr}")
        for p in ["config.json", *added, *task_paths]:
            hf_hub_download(repo, p, revision=head, cache_dir=str(root / "validate-cache"))

    def fresh_validate() -> None:
        shutil.rmtree(root / "validate-cache", ignore_errors=True)

    def peer_info() -> None:
        for p in ["config.json", *task_paths]:
            with open(hf_hub_download(repo, p)) as f:
                json.load(f)

    texts = {p: repo_files[p] for p in task_paths}
    rows = [
        ["validate (all 8 checks, probe included)", median_seconds(check, a.repeats, fresh_validate)],
        ["  peer: hf_hub_download of the files validate reads", median_seconds(fetch_what_validate_reads, a.repeats, fresh_validate)],
        ["validate(probe=False)", median_seconds(check_no_probe, a.repeats, fresh_validate)],
        ["system_info (mu2hub info), fresh cache", median_seconds(lambda: mu2hub.system_info(repo), a.repeats, fresh)],
        ["  peer: download the same task files + json.loads", median_seconds(peer_info, a.repeats, fresh)],
        ["system_info, warm cache", median_seconds(lambda: mu2hub.system_info(repo), a.repeats, lambda: None)],
        ["SpaceSystem start-up, fresh cache", median_seconds(lambda: SpaceSystem(repo), a.repeats, fresh)],
        ["SpaceSystem start-up, warm cache", median_seconds(lambda: SpaceSystem(repo), a.repeats, lambda: None)],
        [f"schema only: TaskFile.from_json x {len(texts)}", median_seconds(
            lambda: [TaskFile.from_json(mu2hub.format.system.load_json(t, p), p) for p, t in texts.items()], a.repeats, lambda: None)],
        [f"  peer: json.loads x {len(texts)}", median_seconds(lambda: [json.loads(t) for t in texts.values()], a.repeats,
                                                     lambda: None)],
    ]
    load = os.getloadavg()[0]
    print(f"\nbench/validate.py — {a.tasks} tasks + 1 contributed, {a.layers} blocks, hidden {a.hidden}, "
          f"{a.image_size} px, {a.classes} classes; {len(repo_files)} files ({components} components, "
          f"{sum(map(len, repo_files.values())) / 1e6:.1f} MB); task file {statistics.median(map(len, texts.values())):,.0f} B "
          f"median; PR adds {len(added)} files — {machine()}, load {load:.1f}; setup {setup:.0f} s")
    print(table([[name, f"{sec:.3f}"] for name, sec in rows], ["what", "seconds (median)"]))
    server.stop()


if __name__ == "__main__":
    main()
