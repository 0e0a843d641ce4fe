"""Input pipeline throughput and memory: `mu2hub.data.stream` on generated JPEG datasets (memory-mapped Arrow).

images/s at 224 and 384 px (decode + bilinear resize, 2 threads) from ImageNet-like JPEGs (~400x340, q90), and
peak resident memory while streaming a whole epoch of a generated 5,000- and a 50,000-image dataset (is it flat in
the dataset's size?). Peak memory *while evolving* needs the pipeline wired into training (issue 10's rewrite of
`mu2hub.train`); until then this measures the pipeline alone.

    python bench/pipeline.py [--workers 2] [--out BENCH_JSON]
"""

from __future__ import annotations

import argparse
import io
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


def make_dataset(path: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)  # smooth-ish content: JPEG-typical sizes

    def gen():
        for i in range(n):
            im = Image.fromarray(np.roll(base, i, axis=0)).resize(size, Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=90)
            yield {"image": {"bytes": buf.getvalue(), "path": None}, "label": i % 1000}

    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=1000)})
    datasets.Dataset.from_generator(gen, features=feats).save_to_disk(str(path))


def throughput(path: Path, image_size: int, workers: int, batches: int = 12, batch: int = 64) -> float:
    import datasets

    from mu2hub.data.stream import DatasetSource, Stream

    stream = iter(Stream(DatasetSource(datasets.load_from_disk(str(path))), batch, image_size, seed=0, workers=workers))
    next(stream)  # warm-up
    t = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * batch / (time.perf_counter() - t)


def epoch_peak_rss(path: str, image_size: int, workers: int) -> None:
    """Child process: stream one epoch, print peak RSS (MB) before and after."""
    import datasets

    from mu2hub.data.stream import DatasetSource, Stream

    ds = datasets.load_from_disk(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = 0
    for images, _ in Stream(DatasetSource(ds), 64, image_size, seed=0, workers=workers, repeat=False):
        n += len(images)
    print(json.dumps({"examples": n, "rss_before_mb": before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--epoch-child", nargs=2)
    ap.add_argument("--out")
    a = ap.parse_args()
    import datasets

    datasets.disable_progress_bars()
    if a.epoch_child:
        return epoch_peak_rss(a.epoch_child[0], 32, a.workers)
    out = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(), "load": os.getloadavg(),
           "date": time.strftime("%Y-%m-%d"), "python": platform.python_version()}
    with tempfile.TemporaryDirectory() as tmp:
        make_dataset(Path(tmp) / "jpeg", 1000, (400, 340))
        for s in (224, 384):
            out[f"images_per_s_{s}"] = round(throughput(Path(tmp) / "jpeg", s, a.workers), 1)
        for n in (5_000, 50_000):
            make_dataset(Path(tmp) / f"small{n}", n, (64, 48), seed=n)
            proc = subprocess.run([sys.executable, __file__, "--workers", str(a.workers), "--epoch-child", str(Path(tmp) / f"small{n}"), "x"],
                                  capture_output=True, text=True, check=True)
            out[f"epoch_{n}"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
