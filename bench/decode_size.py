"""Does the size images of varying sizes are decoded to change what `add_task` learns? (accuracy, not speed)

tests/contrib/test_contribute.py's fixture, rebuilt: the tiny system (tests/support/tiny_config.py: 8 px paths) is
evolved and pushed to a loopback Hub, then `mu2hub.add_task` evolves `shapes_png` (generated shapes as PNGs of 8, 12 and 16 px,
mixed modes) with the same settings and budget, once per decode size and seed, each next to its from-scratch
baseline (same structure, same steps, same decoded data). `auto` is the library's own rule (`data.decode.training_decode_size`).
Run: `.venv/bin/python bench/decode_size.py [--sizes auto,8,16,32,64] [--seeds 0,1,2]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from _common import ROOT, load_average, loopback_hub, machine

import mu2hub
from mu2hub.evolution.evolve import evolve
from mu2hub.publishing.publish import export
from mu2hub.utils.tables import table

sys.path[:0] = [str(ROOT / "training"), str(ROOT / "tests" / "contrib")]
from evolve import load_config  # noqa: E402
from test_contribute import SETTINGS, write_imagefolder  # noqa: E402  (the fixture's data and settings)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="auto,8,16,32,64", help="decode sizes; 'auto' = the library's rule")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=int, default=8)
    a = ap.parse_args()
    import jax

    server, root = loopback_hub()
    evolve(load_config(str(ROOT / "tests" / "support" / "tiny_config.py")), root / "run", quiet=True)
    server.create_repo("bench/system")
    export(root / "run", "bench/system")
    folder = write_imagefolder(root / "shapes_png")
    rows, started = [], time.perf_counter()
    for size in a.sizes.split(","):
        evolved, scratch = [], []
        for seed in (int(s) for s in a.seeds.split(",")):
            kwargs = {} if size == "auto" else {"decode_size": int(size)}
            r = mu2hub.add_task("bench/system", task="shapes_png", data=f"imagefolder:{folder}", budget=a.budget,
                                evolution=SETTINGS, data_kwargs=kwargs, seed=seed, progress=False,
                                workdir=root / f"add-{size}-{seed}")
            m = r.task_file.metrics
            evolved.append(m["test_accuracy"])
            scratch.append(m["from_scratch_test_accuracy"])
            print(f"decode {size} seed {seed}: test {evolved[-1]:.4f} vs from scratch {scratch[-1]:.4f}", flush=True)
        rows.append([size, " ".join(f"{x:.4f}" for x in evolved), f"{statistics.mean(evolved):.4f}",
                     " ".join(f"{x:.4f}" for x in scratch), f"{statistics.mean(scratch):.4f}"])
    print(f"\nbench/decode_size.py — add_task shapes_png (budget {a.budget}, 8 px paths, images 8/12/16 px), seeds "
          f"{a.seeds}; {time.perf_counter() - started:.0f} s — {machine()}, {jax.devices()[0].platform}, {load_average()}")
    print(table(rows, ["decode size", "evolved test acc per seed", "mean", "from scratch per seed", "mean"]))
    server.stop()


if __name__ == "__main__":
    main()
