"""Peak memory of republishing one task from a large µ2Net state: bounded by the largest component, not the system.

Generates a µ2Net state folder of ViT-L/16 components at 384 px (hidden 1024, MLP 4096: one encoder block is
50.4 MB) — a 24-block root, tasks with blocks of their own, bf16 momentum traces — written the way
`flax.training.checkpoints.save_checkpoint` writes its msgpack file (the top-level map streamed entry by entry
with `flax.serialization.msgpack_serialize`: the same bytes, without holding the state in memory), and pandas
CSVs. Then, each in a fresh process, measures peak RSS (`ru_maxrss`) of:

- `republish_reference(state, out, tasks=[TASK])` from the large state (a 24-block path: 1.2 GB of parameters);
- the same from a one-block state of the same architecture (the fixed overhead: interpreter, JAX, compiled
  forward, probe activations, and the one component it must hold);
- the peer: the notebook's own loader, `flax.training.checkpoints.restore_checkpoint(state, target=None)`.

The claim holds when `peak(large) - peak(one block) < 2 × largest component`. The generated state and the
outputs are deleted at the end. Run: `.venv/bin/python bench/republish.py [--gb 2.2] [--keep DIR]`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import numpy as np
from _common import ROOT, load_average, machine
from flax import serialization

import reference_states as R  # tests/support/: the notebook's CSV writers

HIDDEN, HEADS, MLP, PATCH, SIZE = 1024, 16, 4096, 16, 384
TASK = "cifar10"
TOKENS = (SIZE // PATCH) ** 2 + 1


def _component(name: str, rng: np.random.Generator, classes: int = 1) -> dict:
    """A vit_jax-named component tree with small random values (the values do not matter here; the sizes do)."""
    def w(*shape):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)

    def dense(din, dout):
        return {"kernel": w(din, dout), "bias": w(dout)}

    def ln():
        return {"scale": np.ones(HIDDEN, np.float32), "bias": np.zeros(HIDDEN, np.float32)}

    if name == "embedding":
        return {"kernel": w(PATCH, PATCH, 3, HIDDEN), "bias": w(HIDDEN)}
    if name == "cls":
        return w(1, 1, HIDDEN)
    if name == "posembed_input":
        return {"pos_embedding": w(1, TOKENS, HIDDEN)}
    if name == "encoder_norm":
        return ln()
    if name == "head":
        return dense(HIDDEN, classes)
    hd = HIDDEN // HEADS
    attn = {p: {"kernel": w(HIDDEN, HEADS, hd), "bias": w(HEADS, hd)} for p in ("query", "key", "value")}
    attn["out"] = {"kernel": w(HEADS, hd, HIDDEN), "bias": w(HIDDEN)}
    return {"LayerNorm_0": ln(), "MultiHeadDotProductAttention_0": attn, "LayerNorm_1": ln(),
            "MlpBlock_0": {"Dense_0": dense(HIDDEN, MLP), "Dense_1": dense(MLP, HIDDEN)}}


def write_state(state: Path, num_layers: int, tasks: dict[str, tuple[int, int]]) -> dict:
    """`state_0_0/` with a root of `num_layers` blocks and `tasks` = {task: (own top blocks, classes)}.

    Returns sizes: state bytes, largest component bytes, the task's path bytes.
    """
    state.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["embedding", "cls", "posembed_input", *[f"encoderblock_{i}" for i in range(num_layers)], "encoder_norm", "head"]
    entries: list[tuple[str, str, int]] = [(n, f"{n}:{i}", 1) for i, n in enumerate(names)]  # (name, key, classes)
    rows = [R.mu2net_row(R.NOT_TRAINABLE, 0, -1, None, list(range(len(names))), _hparams(num_layers, 1), {"quality": None}, None, None)]
    next_id = len(names)
    for pid, (task, (own, classes)) in enumerate(tasks.items(), start=1):
        path = list(range(len(names) - 2 - own))  # shares the root's embedding and bottom blocks
        for name in [*names[len(names) - 2 - own:-2], "encoder_norm", "head"]:
            entries.append((name, f"{name}:{next_id}", classes))
            path.append(next_id)
            next_id += 1
        rows.append(R.mu2net_row(task, pid, 0, R.NOT_TRAINABLE, path, _hparams(num_layers, classes),
                                 {"quality": 0.9, "test_quality": 0.89}, 0.9, 1.0))
    R.to_csv(rows, state / "population.csv")
    trained = [e for e in entries if int(e[1].split(":")[1]) >= len(names)]
    sizes: dict[str, int] = {}
    with open(state / "checkpoint_0_0", "wb") as f:
        f.write(msgpack.Packer().pack_map_header(len(entries) + len(trained)))
        for name, key, classes in [*entries, *[(n, f"opt_state:{k}", c) for n, k, c in trained]]:
            tree = _component(name, rng, classes)
            data = serialization.msgpack_serialize(R.bf16_trace(tree) if key.startswith("opt_state:") else tree)
            f.write(msgpack.packb(key) + data)  # what save_checkpoint writes for this entry
            sizes[key] = len(data)
    path_ids = {int(v) for v in next(r for r in rows if r["task_name"] == TASK)["components"].split("_")}
    path_bytes = sum(sizes[key] for _, key, _ in entries if int(key.split(":")[1]) in path_ids)
    return {"state_bytes": (state / "checkpoint_0_0").stat().st_size, "path_bytes": path_bytes,
            "largest": max(v for k, v in sizes.items() if not k.startswith("opt_state:"))}


def _hparams(num_layers: int, classes: int) -> dict:
    return {"num_layers": num_layers, "ds_image_size": SIZE, "num_classes": classes, "adapter_layers": "", "adapter_dim": -1}


CHILD = r"""
import json, resource, sys, time
def rss_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) / 1024
kind, state, out = sys.argv[1:4]
import jax; jax.devices()
if kind == "republish":
    from mu2hub.publishing.republish import republish_reference
else:
    from flax.training import checkpoints
imports = rss_mb()
t = time.perf_counter()
if kind == "republish":
    r = republish_reference(state, out, tasks=["cifar10"], progress=False)
    assert r.decoded and r.tasks["cifar10"].probe
else:
    checkpoints.restore_checkpoint(state, target=None)
print(json.dumps({"imports_mb": imports, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t}))
"""


def measure(kind: str, state: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, kind, str(state), str(out)], capture_output=True, text=True,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gb", type=float, default=2.2, help="approximate size of the large state")
    ap.add_argument("--keep", default=None, help="generate into this folder and keep it")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="mu2hub-bench-republish-"))
    try:
        # the task clones the root's top 2 blocks; "imagenet2012" owns 12 blocks and a 1000-class head; more
        # tasks of 12 own blocks are added until the state reaches the requested size (traces included)
        block_mb, own_mb = 50.4, 50.4 * 1.5  # a task's own block comes with its bf16 momentum trace
        extra = max(0, math.ceil((a.gb * 1000 - 24 * block_mb - 14 * own_mb) / (12 * own_mb)))
        tasks = {TASK: (2, 10), "imagenet2012": (12, 1000), **{f"sun397_{i}": (12, 397) for i in range(extra)}}
        t = time.perf_counter()
        big = write_state(work / "big" / "state_0_0", 24, tasks)
        small = write_state(work / "small" / "state_0_0", 1, {TASK: (0, 10)})
        print(f"generated {big['state_bytes'] / 1e9:.2f} GB and {small['state_bytes'] / 1e6:.0f} MB states in "
              f"{time.perf_counter() - t:.0f} s")
        runs = {
            "republish 1 task, large state": measure("republish", work / "big" / "state_0_0", work / "out_big"),
            "republish 1 task, one-block state": measure("republish", work / "small" / "state_0_0", work / "out_small"),
            "peer: flax restore_checkpoint(target=None), large state": measure("restore", work / "big" / "state_0_0", work / "x"),
        }
        c = big["largest"] / 1e6
        print(f"\n{machine()}, {load_average()}")
        print(f"large state {big['state_bytes'] / 1e9:.2f} GB; the task's path {big['path_bytes'] / 1e9:.2f} GB; "
              f"largest component {c:.1f} MB")
        print("| run | RSS after imports MB | peak RSS MB | seconds |\n|---|---|---|---|")
        for name, r in runs.items():
            print(f"| {name} | {r['imports_mb']:.0f} | {r['peak_mb']:.0f} | {r['seconds']:.1f} |")
        big_peak, small_peak = runs["republish 1 task, large state"]["peak_mb"], runs["republish 1 task, one-block state"]["peak_mb"]
        print(f"\npeak(large) - peak(one block) = {big_peak - small_peak:.0f} MB = {(big_peak - small_peak) / c:.2f} x the "
              f"largest component (goal < 2); peak(large) - RSS after imports = {(big_peak - runs['republish 1 task, large state']['imports_mb']) / c:.2f} x")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
