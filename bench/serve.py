"""Serving a whole system: shared-prefix execution vs every path, and `mu2hub serve` vs the server a user would build.

1. `predict_all` (one batch of images, every task) with the shared-prefix engine vs every task's own forward (what
   `predict_all` did before: one full pass per task): stage applications, block-rows computed and wall time, on a
   small system whose paths diverge every way (`synthetic.mixed_system`) and on a generated paper-shaped system
   (`--tasks` tasks at ViT-Ti size whose paths clone only their top `--own-blocks` blocks, norm and head).
2. A mixed-task stream over HTTP (`--concurrency` clients, tasks drawn at random, raw image bytes as
   `InferenceClient.image_classification` sends them) against: `mu2hub serve` (micro-batching on), the same with
   batching off (`--max-batch-size 1`), the peer — one `transformers.pipeline` per task from `to_transformers`
   exports, in one FastAPI process, called per request — and `mu2hub serve` under a memory budget of half the
   served tasks' unique bytes. Throughput, p50/p99 latency, resident bytes (ours: unique component bytes; the peer:
   the sum of its models), process RSS, and top-1 agreement with our batched server.

Run: `.venv/bin/python bench/serve.py [--tasks 60] [--http-tasks 8] [--requests 256] [--image-size 224]`.
Every server runs in its own process on loopback; the client threads run here.
"""

import argparse
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import VARIANTS, machine

from mu2hub.format.system import Dims

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# The peer: one transformers pipeline per task, one process (run as `bench/serve.py --peer EXPORTS --port P`)
# ---------------------------------------------------------------------------------------------------


def peer_server(exports: Path, port: int) -> None:
    import torch  # noqa: F401 - the pipelines' backend
    import transformers
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from PIL import Image

    pipes = {p.name: transformers.pipeline("image-classification", model=str(p), device="cpu")
             for p in sorted(exports.iterdir())}
    model_bytes = sum(t.numel() * t.element_size() for pipe in pipes.values() for t in pipe.model.parameters())
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ok", "model_bytes": model_bytes, "tasks": list(pipes)}

    @app.post("/models/{task}")
    async def classify(task: str, request: Request):
        body = await request.body()
        image = Image.open(io.BytesIO(body)).convert("RGB")
        return JSONResponse(pipes[task](image, top_k=5))  # sync call per request, as the pipeline is used

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------------------------------------------
# 1. predict_all: shared prefixes vs every path
# ---------------------------------------------------------------------------------------------------


def predict_all_row(name: str, folder: Path, images, repeats: int) -> dict:
    import numpy as np

    import mu2hub
    from mu2hub.serving.engine import path_stages

    multi = mu2hub.from_pretrained(folder, tasks="all")
    tasks = multi.tasks

    def every_path():
        prepared = {}
        out = {}
        for t in tasks:
            m = multi[t]
            key = json.dumps(m.task_file.preprocessing, sort_keys=True)
            if key not in prepared:
                prepared[key] = m.preprocess(images)
            out[t] = m.predictions(m.logits(prepared[key]))
        return out

    for t in {multi[t].structure: t for t in tasks}.values():  # compile each distinct full-path program
        multi[t].logits(multi[t].preprocess(images))
    multi.predict_all(images)  # compile the engine's programs at this batch size
    before = multi.engine.stats.copy()
    shared_s = _median(lambda: multi.predict_all(images), repeats)
    after = multi.engine.stats.copy()
    every_s = _median(every_path, repeats)
    ours, theirs = multi.predict_all(images), every_path()
    agree = np.mean([ours[t][i][0]["label"] == theirs[t][i][0]["label"] for t in tasks for i in range(len(images))])
    apps = (after.applications - before.applications) / repeats
    rows = (after.row_applications - before.row_applications) / repeats
    every_apps = sum(len(path_stages(tf)) for tf in multi.files.values())
    return {"system": name, "tasks": len(tasks), "images": len(images), "apps_shared": apps, "apps_every": every_apps,
            "rows_shared": rows, "rows_every": every_apps * len(images), "s_shared": shared_s, "s_every": every_s,
            "agree": agree}


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------------
# 2. HTTP stream
# ---------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, str, float]:
    import httpx

    port = _free_port()
    start = time.monotonic()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd + ["--port", str(port)], stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server failed: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url, time.monotonic() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def stream(url: str, jobs: list[tuple[str, int]], pngs: list[bytes], concurrency: int) -> dict:
    import httpx

    latencies: list[float] = [0.0] * len(jobs)
    answers: list[str | None] = [None] * len(jobs)
    errors = []
    client = httpx.Client(timeout=900, limits=httpx.Limits(max_connections=concurrency))

    def one(i: int) -> None:
        task, image = jobs[i]
        t = time.perf_counter()
        try:
            r = client.post(f"{url}/models/{task}", content=pngs[image])
        except httpx.HTTPError as e:
            errors.append(type(e).__name__)
            r = None
        latencies[i] = time.perf_counter() - t
        if r is not None and r.status_code != 200:
            errors.append(r.status_code)
        elif r is not None:
            answers[i] = r.json()[0]["label"]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(jobs))))
    wall = time.perf_counter() - start
    client.close()
    lat = sorted(latencies)
    return {"rps": len(jobs) / wall, "p50": lat[len(lat) // 2], "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))],
            "errors": len(errors), "answers": answers}


def http_rows(folder: Path, tasks: list[str], work: Path, a: argparse.Namespace) -> tuple[list[dict], dict]:
    import httpx
    import numpy as np
    from PIL import Image

    import mu2hub

    exports = work / "exports"
    for t in tasks:
        mu2hub.from_pretrained(folder, task=t).to_transformers(exports / t)
    files = {t: mu2hub.from_pretrained(folder, task=t).task_file for t in tasks}
    unique = 4 * sum({c.id: c.params for tf in files.values() for c in tf.components}.values())
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(16):
        buf = io.BytesIO()
        size = a.http_image_size
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append(buf.getvalue())
    pick = random.Random(1)
    jobs = [(pick.choice(tasks), pick.randrange(len(pngs))) for _ in range(a.requests)]
    ours = [sys.executable, "-m", "mu2hub.cli", "serve", str(folder), "--tasks", ",".join(tasks),
            "--preload", ",".join(tasks), "--max-wait-ms", str(a.max_wait_ms)]
    configs = [
        ("mu2hub serve, batching on", ours + ["--max-batch-size", str(a.max_batch_size)]),
        ("mu2hub serve, batching off", ours + ["--max-batch-size", "1"]),
        ("peer: a transformers.pipeline per task", [sys.executable, str(Path(__file__)), "--peer", str(exports)]),
        ("peer, torch on 1 thread (OMP_NUM_THREADS=1)",
         ["env", "OMP_NUM_THREADS=1", sys.executable, str(Path(__file__)), "--peer", str(exports)]),
        ("mu2hub serve, budget = half", ours + ["--max-batch-size", str(a.max_batch_size),
                                                "--device-memory-budget", str(unique // 2)]),
    ]
    rows = []
    for name, cmd in configs:
        proc, url, ready = _start(cmd, work / f"{len(rows)}.log")
        try:
            stream(url, jobs[: min(64, len(jobs))], pngs, a.concurrency)  # warm the request path
            result = stream(url, jobs, pngs, a.concurrency)
            health = httpx.get(url + "/health").json()
            resident = health.get("model_bytes")
            if resident is None:
                metrics = httpx.get(url + "/metrics").text
                resident = next(float(line.split()[-1]) for line in metrics.splitlines()
                                if line.startswith("mu2hub_resident_component_bytes"))
            result.update(name=name, ready=ready, resident=resident, rss=_rss_bytes(proc.pid))
            rows.append(result)
            print(f"{name}: {result['rps']:.2f} req/s, p50 {result['p50']:.3f} s, p99 {result['p99']:.3f} s, "
                  f"errors {result['errors']}, resident {resident / 1e6:.1f} MB, RSS {result['rss'] / 1e6:.0f} MB, "
                  f"ready {ready:.1f} s", file=sys.stderr, flush=True)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    base = rows[0]["answers"]
    for r in rows:
        r["agree"] = sum(x == y for x, y in zip(r["answers"], base)) / len(base)
    return rows, {"unique": unique, "tasks": len(tasks)}


# ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--peer", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tasks", type=int, default=60, help="tasks of the paper-shaped system")
    ap.add_argument("--own-blocks", type=int, default=2, help="top blocks each task clones")
    ap.add_argument("--variant", default="Ti/16", choices=sorted(VARIANTS))
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--images", type=int, default=2, help="images per predict_all batch")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--http-tasks", type=int, default=8, help="tasks served in the HTTP stream (0: skip it)")
    ap.add_argument("--http-image-size", type=int, default=64, help="image size of the HTTP stream's system")
    ap.add_argument("--skip-predict-all", action="store_true")
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    a = ap.parse_args()
    if a.peer is not None:
        return peer_server(a.peer, a.port)

    from mu2hub.inference.compilation import enable_compilation_cache
    from mu2hub.testing import random_system

    work = Path(tempfile.mkdtemp(prefix="mu2hub-bench-serve-"))
    os.environ.setdefault("MU2HUB_COMPILATION_CACHE", str(work / "compilation"))  # servers share compiled programs
    enable_compilation_cache()
    hidden, heads, mlp, patch, layers, _ = VARIANTS[a.variant]
    print(f"\n{machine()}\n")
    if not a.skip_predict_all:
        predict_all_part(a, work, Dims(hidden, heads, mlp, patch), layers)
    if a.http_tasks:
        random_system(work / "http", dims=Dims(hidden, heads, mlp, patch), image_size=a.http_image_size,
                      num_layers=layers, num_tasks=a.http_tasks, own_blocks=a.own_blocks)
        http_part(a, work)


def predict_all_part(a: argparse.Namespace, work: Path, dims, layers: int) -> None:
    import numpy as np

    from mu2hub.testing import mixed_system, random_system

    t = time.perf_counter()
    mixed_system(work / "small", dims=Dims(16, 2, 32, 4), image_size=8, num_layers=3)
    random_system(work / "paper", dims=dims, image_size=a.image_size, num_layers=layers,
                  num_tasks=a.tasks, own_blocks=a.own_blocks)
    print(f"systems written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    rng = np.random.default_rng(0)
    rows = [predict_all_row("small (mixed_system: adapter, 2 image sizes)", work / "small",
                            rng.integers(0, 256, (a.images, 8, 8, 3), dtype=np.uint8), a.repeats),
            predict_all_row(f"paper-shaped ViT-{a.variant} {a.image_size} px, own top {a.own_blocks} blocks",
                            work / "paper", rng.integers(0, 256, (a.images, a.image_size, a.image_size, 3), dtype=np.uint8),
                            a.repeats)]
    print("| system | tasks | images | stage applications shared / every path | rows through stages | wall s shared / "
          "every path | speed-up | top-1 agree |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['system']} | {r['tasks']} | {r['images']} | {r['apps_shared']:.0f} / {r['apps_every']} "
              f"({r['apps_every'] / r['apps_shared']:.1f}x) | {r['rows_shared']:.0f} / {r['rows_every']} | "
              f"{r['s_shared']:.3f} / {r['s_every']:.3f} | {r['s_every'] / r['s_shared']:.2f}x | {r['agree']:.3f} |")
    sys.stdout.flush()


def http_part(a: argparse.Namespace, work: Path) -> None:
    from mu2hub.hub.store import LocalStore

    served = LocalStore(work / "http").list_tasks()
    http, info = http_rows(work / "http", served, work, a)
    print(f"\nHTTP: {info['tasks']} tasks, ViT-{a.variant} at {a.http_image_size} px, each cloning its top "
          f"{a.own_blocks} blocks; {a.requests} requests, concurrency {a.concurrency}, "
          f"{a.http_image_size}x{a.http_image_size} PNG bodies; unique component bytes {info['unique'] / 1e6:.1f} MB\n")
    print("| server | req/s | × peer | p50 ms | p99 ms | errors | resident MB (params) | RSS MB | ready s | "
          "top-1 = batched |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    peer = next(r for r in http if r["name"].startswith("peer"))
    for r in http:
        print(f"| {r['name']} | {r['rps']:.1f} | {r['rps'] / peer['rps']:.2f} | {1000 * r['p50']:.0f} | "
              f"{1000 * r['p99']:.0f} | {r['errors']} | {r['resident'] / 1e6:.1f} | {r['rss'] / 1e6:.0f} | "
              f"{r['ready']:.1f} | {r['agree']:.3f} |")


if __name__ == "__main__":
    main()
