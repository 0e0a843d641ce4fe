"""Warm-cache `from_pretrained` time vs. reading the same files with safetensors.numpy + jax.device_put.

Goal: <= 1.5x. Both sides read every component file of the task once and place it on the default device;
ours also reads the JSON files, verifies every sha256 and checks shapes. Run:
`.venv/bin/python bench/load.py [--variant B/16] [--repeats 5]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
from _common import VARIANTS, loopback_hub, machine, median_seconds
from safetensors.numpy import load_file

import mu2hub
import mu2hub.hub.store
import mu2hub.inference.task
from mu2hub.format.system import Dims
from mu2hub.utils.tables import table
from mu2hub.testing import random_system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="B/16", choices=sorted(VARIANTS))
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    hidden, heads, mlp, patch, layers, size = VARIANTS[a.variant]
    server, root = loopback_hub()
    random_system(root / "system", dims=Dims(hidden, heads, mlp, patch), image_size=size, num_layers=layers, num_tasks=2)
    server.create_repo("bench/load")
    server.commit_folder("bench/load", root / "system")
    model = mu2hub.from_pretrained("bench/load", task="task_0")  # warms the cache
    snapshot = next((root / "hf_home" / "hub").glob("models--bench--load/snapshots/*"))
    files = [snapshot / c.filename for c in {c.id: c for c in model.components}.values()]

    def baseline():
        arrays = [jax.device_put(load_file(f)) for f in files]
        jax.block_until_ready(arrays)

    def ours(**kw):
        m = mu2hub.inference.task.load_task(mu2hub.hub.store.open_store("bench/load", **kw), "task_0")
        jax.block_until_ready(m.params)
        mu2hub.inference.task._LOADED.clear()  # measure a real load, not the in-process sharing cache

    del model
    mu2hub.inference.task._LOADED.clear()
    base = median_seconds(baseline, a.repeats)
    offline = median_seconds(lambda: ours(local_files_only=True), a.repeats)
    online = median_seconds(ours, a.repeats)
    mb = sum(Path(f).stat().st_size for f in files) / 1e6
    print(f"\nbench/load.py — {a.variant}, one task = {len(files)} files, {mb:.1f} MB, median of {a.repeats} — {machine()}")
    print(table([
        ["safetensors.numpy + jax.device_put", f"{base:.3f}", "1.00"],
        ["from_pretrained, warm cache, local_files_only", f"{offline:.3f}", f"{offline / base:.2f}"],
        ["from_pretrained, warm cache, online (1 HEAD)", f"{online:.3f}", f"{online / base:.2f}"],
    ], ["load", "seconds", "x baseline"]))
    server.stop()


if __name__ == "__main__":
    main()
