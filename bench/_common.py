"""Shared set-up for benchmarks: a loopback Hub (tests/support/hubserver.py) and the machine description."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))

from hubserver import HubServer, configure_hf_env  # noqa: E402

VARIANTS = {  # name -> (hidden, heads, mlp, patch, layers, image size): the ViT paper's table
    "Ti/16": (192, 3, 768, 16, 12, 224),
    "S/16": (384, 6, 1536, 16, 12, 224),
    "B/16": (768, 12, 3072, 16, 12, 224),
    "L/16": (1024, 16, 4096, 16, 24, 224),
    # bench/gpu_session.py --smoke: the same code paths at toy sizes on any machine
    "smoke-B": (32, 2, 64, 8, 4, 32),
    "smoke-L": (48, 2, 96, 8, 4, 32),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} (Python {platform.python_version()}), {date.today()}"


def median_seconds(fn, repeats: int, before=lambda: None) -> float:
    """Median wall time of `fn()` over `repeats` runs, `before()` (e.g. emptying a cache) untimed before each."""
    times = []
    for _ in range(repeats):
        before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def loopback_hub() -> tuple[HubServer, Path]:
    """A started loopback Hub with a private HF_HOME; both live until the process ends."""
    root = Path(tempfile.mkdtemp(prefix="mu2hub-bench-"))
    server = HubServer(root / "server").start()
    configure_hf_env(server.url, root / "hf_home")
    return server, root


def vit_forward_flops(hidden: int, mlp: int, patch: int, layers: int, image_size: int, num_classes: int = 1000,
                      *, channels: int = 3) -> float:
    """Multiply-adds × 2 of one image's ViT forward: patch embedding, per block q/k/v/out and the MLP
    (2·n·(4d² + 2·d·mlp)) plus attention scores and mixing (4·n²·d), the head. B/16 at 224: 35.1 GFLOP,
    as gpu_notes.md. A training step is counted as 3× the forward (backward = 2× forward)."""
    n = (image_size // patch) ** 2 + 1
    per_block = 2 * n * (4 * hidden * hidden + 2 * hidden * mlp) + 4 * n * n * hidden
    return 2 * (n - 1) * patch * patch * channels * hidden + layers * per_block + 2 * hidden * num_classes


def median_rate(fn, items_per_call: int, *, calls: int, repeats: int = 5, warmup: int = 2, sync=lambda out: None) -> float:
    """items/s of `fn()`: `warmup` untimed calls (compilation), then the median over `repeats` of `calls` calls,
    each repeat ended by `sync(last output)` so queued device work is inside the timing."""
    return interleaved_rates({"fn": (fn, items_per_call, sync)}, calls=calls, repeats=repeats, warmup=warmup)["fn"]


def interleaved_rates(fns: dict, *, calls: int, repeats: int = 5, warmup: int = 2) -> dict[str, float]:
    """`median_rate` of several `name: (fn, items_per_call, sync)`, their repeats taken in turn (a, b, a, b,
    ...) so that a change in the machine's load during the run (a shared CPU) hits all of them alike."""
    import statistics
    import time

    for fn, _, sync in fns.values():
        out = None
        for _ in range(warmup):
            out = fn()
        sync(out)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, _, sync) in fns.items():
            t = time.perf_counter()
            for _ in range(calls):
                out = fn()
            sync(out)
            times[name].append(time.perf_counter() - t)
    return {name: items * calls / statistics.median(times[name]) for name, (_, items, _) in fns.items()}


def load_average() -> str:
    """The 1-minute load average: other processes on the machine skew CPU numbers; it is printed with them."""
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load average unknown"
