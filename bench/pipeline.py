"""Input pipeline: decoding throughput by mechanism, whether it keeps a training step fed, memory while evolving.

1. images/s at 224 and 384 px of `mu2hub.data.stream` (decode + bilinear resize) from ImageNet-like JPEGs (~400x340,
   q90) in a memory-mapped Arrow dataset, next to the peers it was chosen over, in the same run at 224 px: one
   thread, `datasets`' iterable dataset (`to_iterable_dataset().map(...)`, decoding in the consuming thread) and
   grain (`MapDataset` with 2 read threads; with 2 worker processes).
2. Is the step fed? A child's train step (ViT hidden 64, 2 blocks, 64 px) fed from memory, from the stream with
   background prefetch, and from the same stream read synchronously (prefetch off): steps/s.
3. Peak resident memory while evolving (`training/evolve.py`, 1 generation of 2 children, test evaluation included)
   on a generated 5,000- and 50,000-image task (64x64 JPEGs, a catalog task's local stand-in), streamed and held in
   memory: each in a fresh process, its peak RSS (`ru_maxrss`).

    python bench/pipeline.py [--out BENCH_JSON] [--skip-evolve]
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CLASSES = 10


def make_dataset(path: Path, n: int, size: tuple[int, int], seed: int = 0, splits=("train",)) -> None:
    """n JPEGs per split (q90) whose class (0-9) sets the tint: a `DatasetDict` saved with `save_to_disk`."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (max(size[1] // 8, 2), max(size[0] // 8, 2), 3), dtype=np.uint8)

    def gen(n):
        for i in range(n):
            y = i % CLASSES
            tile = (np.roll(base, i, axis=0).astype(np.int32) // 2 + 12 * y).clip(0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(tile).resize(size, Image.Resampling.BILINEAR).save(buf, "JPEG", quality=90)
            yield {"image": {"bytes": buf.getvalue(), "path": None}, "label": y}

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=CLASSES)})
    datasets.DatasetDict({s: datasets.Dataset.from_generator(gen, features=feats, gen_kwargs={"n": m})
                          for s, m in zip(splits, (n, max(n // 10, 1)))}).save_to_disk(str(path))


# ---------------------------------------------------------------------------------------------------------
# 1. decoding throughput, by mechanism
# ---------------------------------------------------------------------------------------------------------
def _rate(batches, n_batches: int = 12, batch: int = 64) -> float:
    it = iter(batches)
    next(it)  # warm-up (and worker start-up)
    t = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    return n_batches * batch / (time.perf_counter() - t)


def throughput(path: Path, image_size: int, workers: int, batch: int = 64) -> float:
    import datasets

    from mu2hub.data.stream import DatasetSource, Stream, StreamedSplit

    split = StreamedSplit(DatasetSource(datasets.load_from_disk(str(path))["train"]), (image_size, image_size))
    return _rate(Stream(split, batch, seed=0, workers=workers), batch=batch)


def datasets_iterable(path: Path, image_size: int, batch: int = 64) -> float:
    import datasets

    from mu2hub.data.stream import decode

    ds = datasets.load_from_disk(str(path))["train"].to_iterable_dataset(num_shards=4).shuffle(seed=0, buffer_size=256)
    ds = ds.map(lambda r: {"pixels": decode(r["image"], (image_size, image_size)), "label": r["label"]},
                remove_columns=["image"]).with_format("numpy")
    return _rate(ds.iter(batch_size=batch), batch=batch)


class _Rows:
    """A random-access source for grain: (image, label) by index."""

    def __init__(self, path: str):
        import datasets

        self.ds = datasets.load_from_disk(path)["train"]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        row = self.ds[int(i)]
        return row["image"], row["label"]


def grain_rate(path: Path, image_size: int, *, processes: int, batch: int = 64) -> float:
    import grain

    from mu2hub.data.stream import decode

    ds = (grain.MapDataset.source(_Rows(str(path))).shuffle(seed=0).repeat()
          .map(lambda ex: (decode(ex[0], (image_size, image_size)), ex[1])).batch(batch))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4 * batch))
    if processes:
        from absl import flags

        flags.FLAGS.mark_as_parsed()  # grain's worker processes read absl flags; this script has none
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=processes, per_worker_buffer_size=2))
    return _rate(it, batch=batch)


# ---------------------------------------------------------------------------------------------------------
# 2. is the step fed?
# ---------------------------------------------------------------------------------------------------------
def fed_steps(path: Path, steps: int = 16, batch: int = 64, size: int = 64) -> dict[str, float]:
    import datasets
    import jax

    from mu2hub import model as vit
    from mu2hub.train import child as train
    from mu2hub.data.stream import DatasetSource, Stream, StreamedSplit, materialise
    from mu2hub.format.system import Dims, Structure

    split = StreamedSplit(DatasetSource(datasets.load_from_disk(str(path))["train"]), (size, size))
    held = materialise(split)
    structure = Structure(Dims(64, 2, 128, 8), size, 2, CLASSES)
    params = vit.init_path(structure, jax.random.key(0))
    hp = {"opt_lr": 0.01, "opt_momentum": 0.9, "ds_crop": False}
    tx = train.make_optimizer({**hp, "opt_lr": 1.0}, 1000)
    mesh = train.data_parallel_mesh()

    def run(batches) -> float:
        state = train._put_params(params, mesh, copy=True)
        opt = train._put_params(train.init_opt_state(tx, state), mesh)
        it = iter(batches)
        out = None
        for i in range(steps + 2):
            if i == 2:
                jax.block_until_ready(out)
                t = time.perf_counter()
            x, y = train._put_batch(next(it), mesh)
            state, opt, out = train.train_step(structure, {}, state, opt, x, y, jax.random.key(i),
                                               train.data_hparams(hp), tx=tx, lr=jax.numpy.float32(0.01))
        jax.block_until_ready(out)
        return steps / (time.perf_counter() - t)

    return {"in_memory": run(Stream(held, batch, seed=0)),
            "streamed_prefetch": run(Stream(split, batch, seed=0, workers=2, prefetch=4)),
            "streamed_synchronous": run(Stream(split, batch, seed=0, workers=1, prefetch=1))}


# ---------------------------------------------------------------------------------------------------------
# 3. peak memory while evolving
# ---------------------------------------------------------------------------------------------------------
EVOLVE_CONFIG = '''
import ml_collections

def get_config(arg):
    mode, data = arg.split(",", 1)
    c = ml_collections.ConfigDict()
    c.name, c.seed = "bench-pipeline", 0
    c.root = dict(hidden_size=32, num_heads=2, mlp_dim=64, patch_size=8, num_layers=2, image_size=64, init="random")
    c.tasks = ["svhn_cropped"]  # a catalog task (train[:90%] / train[90%:] / test) read from a local stand-in
    c.task_kwargs = {"svhn_cropped": {"sources_dir": data}}
    c.in_memory_max_bytes = {"stream": 0, "memory": 1 << 40}[mode]
    c.num_task_iters, c.space = 1, "mu2net-ti0"
    c.hparams = dict(num_layers=2, ds_image_size=64, ds_crop=False, ds_flip_left_right=False, opt_lr=0.05)
    c.scorer = dict(base=0.95, num_params=None, root_counts=False)
    c.generations, c.children_per_generation = 1, 2
    c.batch_size, c.num_validations = 64, 2
    c.train_examples_between_validations_max = 512
    c.validation_examples_max = 1000
    c.parallelism, c.dtype, c.multihost = "child_per_device", None, False
    return c
'''


def evolve_child(config: str, workdir: str) -> None:
    """Child process: evolve, then print the peak RSS (MB) and the wall time."""
    sys.path.insert(0, str(REPO / "training"))
    from evolve import load_config

    from mu2hub.evolution.evolve import evolve

    t = time.perf_counter()
    run = evolve(load_config(config), workdir, quiet=True)
    tf = run.system.read_task("svhn_cropped")
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "wall_s": round(time.perf_counter() - t, 1), "test_accuracy": tf.metrics["test_accuracy"],
                      "num_test_examples": tf.metrics["num_test_examples"]}))


def evolving_memory(tmp: Path, sizes=(5_000, 50_000)) -> dict[str, dict]:
    (tmp / "cfg.py").write_text(EVOLVE_CONFIG)
    out = {}
    for n in sizes:
        data = tmp / f"data{n}"
        t = time.perf_counter()
        make_dataset(data / "svhn_cropped", n, (64, 64), seed=n, splits=("train", "test"))
        made = time.perf_counter() - t
        for mode in ("stream", "memory"):
            cmd = [sys.executable, __file__, "--evolve-child", f"{tmp / 'cfg.py'}:{mode},{data}", str(tmp / f"run-{n}-{mode}")]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            out[f"{mode}_{n}"] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "dataset_made_s": round(made, 1)}
            print(f"{mode} {n}: {out[f'{mode}_{n}']}", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--evolve-child", nargs=2)
    ap.add_argument("--skip-evolve", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()
    if a.evolve_child:
        return evolve_child(*a.evolve_child)
    import grain  # noqa: F401  (fail before minutes of work, not after)

    out = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load_before": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
           "versions": {m: __import__(m).__version__ for m in ("jax", "datasets", "PIL", "grain")}}
    with tempfile.TemporaryDirectory() as tmp:
        jpeg = Path(tmp) / "jpeg"
        make_dataset(jpeg, 1000, (400, 340))
        for s in (224, 384):
            out[f"images_per_s_{s}"] = round(throughput(jpeg, s, 2), 1)
        out["mechanisms_224"] = {
            "threads_1": round(throughput(jpeg, 224, 1), 1), "threads_2": out["images_per_s_224"],
            "datasets_iterable": round(datasets_iterable(jpeg, 224), 1),
            "grain_2_threads": round(grain_rate(jpeg, 224, processes=0), 1),
            "grain_2_processes": round(grain_rate(jpeg, 224, processes=2), 1)}
        print(json.dumps(out["mechanisms_224"]), file=sys.stderr)
        out["steps_per_s_64px"] = {k: round(v, 2) for k, v in fed_steps(jpeg).items()}
        print(json.dumps(out["steps_per_s_64px"]), file=sys.stderr)
        if not a.skip_evolve:
            out["evolving"] = evolving_memory(Path(tmp))
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
