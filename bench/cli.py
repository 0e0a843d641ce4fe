"""Wall time of the everyday CLI on a warm cache: `mu2hub tasks`, `info`, `download`, `predict` (one image).

Each command runs as a fresh process (the console script, as a user types it) against the loopback Hub, after one
untimed run that warms the cache; the median (and minimum) wall time of `--repeats` runs, and the median CPU time of the process (user + system, which
other jobs on shared cores barely change), is reported next to peers measured in the same
run: the interpreter alone, huggingface_hub's own `hf download` of one cached file, `import jax` (what every
command paid before the metadata commands stopped importing it), and `mu2hub tasks` with JAX imported first.
Goal: `mu2hub tasks` <= 0.5 s. Run: `.venv/bin/python bench/cli.py [--repeats 7] [--folder runs/quickstart/export]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, loopback_hub, machine
from PIL import Image

from mu2hub.format.system import Dims
from mu2hub.utils.tables import table
from mu2hub.testing import random_system


def _time(cmd: list[str], repeats: int, env: dict) -> tuple[float, float, float]:
    """(median wall s, min wall s, median CPU s of the child): CPU time barely moves when other jobs share the cores."""
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)  # warm: cache, page cache, pyc
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
        walls.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--folder", type=Path, default=ROOT / "runs" / "quickstart" / "export",
                    help="system to serve (default: the `make demo` export; a generated one if absent)")
    a = ap.parse_args()
    server, root = loopback_hub()
    folder = a.folder
    if not (folder / "config.json").is_file():  # no `make demo` export: the quickstart's dimensions, random weights
        folder = root / "system"
        random_system(folder, dims=Dims(64, 4, 128, 8), image_size=32, num_layers=3, num_tasks=4, num_classes=10)
    repo = "bench/cli"
    server.commit_folder(repo, folder)
    tasks = sorted(p.relative_to(folder / "tasks").with_suffix("").as_posix() for p in (folder / "tasks").rglob("*.json"))
    image = root / "one.png"
    Image.new("RGB", (32, 32), (120, 40, 200)).save(image)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    py = sys.executable
    mu2hub = shutil.which("mu2hub", path=str(Path(py).parent)) or "mu2hub"
    hf = shutil.which("hf", path=str(Path(py).parent)) or "hf"
    rows = []
    runs = [
        ("python -c pass (interpreter start)", [py, "-c", "pass"]),
        ("python -c 'import jax'", [py, "-c", "import jax"]),
        ("hf download REPO config.json (huggingface_hub CLI, cached)", [hf, "download", repo, "config.json", "--quiet"]),
        ("mu2hub tasks REPO", [mu2hub, "tasks", repo]),
        ("mu2hub tasks REPO, JAX imported first (as before)",
         [py, "-c", f"import jax, sys; from mu2hub.cli import main; sys.exit(main(['tasks', {repo!r}]))"]),
        ("mu2hub info REPO", [mu2hub, "info", repo]),
        (f"mu2hub download REPO --task {tasks[0]}", [mu2hub, "download", repo, "--task", tasks[0]]),
        (f"mu2hub predict REPO --task {tasks[0]} one.png", [mu2hub, "predict", repo, "--task", tasks[0], str(image)]),
    ]
    for name, cmd in runs:
        median, best, cpu = _time(cmd, a.repeats, env)
        rows.append([name, f"{median:.3f}", f"{best:.3f}", f"{cpu:.3f}"])
    load = os.getloadavg()
    print(f"{machine()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; system: {folder} "
          f"({len(tasks)} tasks); median of {a.repeats} runs after one warm-up")
    print(table(rows, ["command (fresh process, warm cache)", "median s", "min s", "CPU s"]))
    server.stop()


if __name__ == "__main__":
    main()
