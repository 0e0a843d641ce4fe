"""`mu2hub serve` over real sockets: the real uvicorn server in a subprocess, driven by `huggingface_hub.InferenceClient`
(and raw HTTP for what the client cannot send). Answers equal each task's `TaskModel.predict`; a load test; every
bad-input and overload answer; eviction under a budget; a corrupt cached component; SIGTERM drains."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

import mu2hub
from mu2hub.cli import main
from mu2hub.format.system import Dims
from mu2hub.inference.probe import probe_images
from mu2hub.testing import mixed_system

REPO = "serve/system"
TASKS = ["adapter", "larger", "shared_a", "shared_b"]


@pytest.fixture(scope="module")
def system(hub, tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    mixed_system(folder, dims=Dims(16, 2, 32, 4), image_size=8, num_layers=3)
    hub.commit_folder(REPO, folder)
    models = {t: mu2hub.from_pretrained(folder, task=t) for t in TASKS}
    images = list(probe_images(11, 8, 10))
    return folder, models, images


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _server(tmp_path, source, *args: str):
    """`mu2hub serve` in a subprocess on a free loopback port; yields (url, process, stderr file)."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mu2hub.cli", "serve", str(source), "--port", str(port), *args],
                                stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url, proc, log
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(url + "/metrics").text
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{(.*)\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(2) or "") for k, v in labels.items()):
            total += float(m.group(3))
    return total


def _same(got, want):
    assert [p["label"] for p in got] == [p["label"] for p in want], (got, want)
    np.testing.assert_allclose([p["score"] for p in got], [p["score"] for p in want], rtol=1e-5, atol=1e-6)


def _as_dicts(out):
    return [{"label": e.label, "score": e.score} for e in out]


def test_every_task_through_the_inference_client_and_a_load_test(system, tmp_path):
    folder, models, images = system
    with _server(tmp_path, REPO, "--preload", "all", "--max-batch-size", "4", "--max-wait-ms", "5", "--max-body-bytes", "100000",
                 "--cache-dir", str(tmp_path / "cache")) as (url, proc, log):
        health = httpx.get(url + "/health").json()
        assert health["status"] == "ok" and health["ready_s"] > 0 and len(health["revision"]) == 40
        assert "ready in" in log.read_text()
        listed = {t["task"]: t for t in httpx.get(url + "/tasks").json()}
        assert sorted(listed) == TASKS and listed["larger"]["labels"] == ["c0", "c1", "c2"]
        assert all(t["loaded"] and t["available"] for t in listed.values())
        assert listed["adapter"]["activated_params"] == models["adapter"].activated_params
        compiled = _metric(url, "mu2hub_compilations_total")
        client = InferenceClient()
        for t in TASKS:
            raw = _as_dicts(client.image_classification(_png(images[0]), model=f"{url}/models/{t}"))  # raw bytes
            _same(raw, models[t].predict(images[0]))
            two = _as_dicts(client.image_classification(_png(images[1]), model=f"{url}/models/{t}", top_k=2))  # JSON
            _same(two, models[t].predict(images[1], top_k=2))
            plain = client.image_classification(_png(images[2]), model=f"{url}/models/{t}", top_k=9,
                                                function_to_apply="none")
            logits = models[t].logits(models[t].preprocess(images[2]))[0]
            assert len(plain) == len(models[t].labels)  # top_k above the label count: every label
            np.testing.assert_allclose([e.score for e in plain], np.sort(logits)[::-1], rtol=1e-5, atol=1e-5)

        # load: 2,000 requests, 32 at a time, tasks and images drawn at random; every answer checked
        want = {(t, i): models[t].predict(images[i]) for t in TASKS for i in range(len(images))}
        pngs = [_png(im) for im in images]
        rng = random.Random(0)
        jobs = [(rng.choice(TASKS), rng.randrange(len(images))) for _ in range(2000)]
        local = threading.local()

        def one(job):
            t, i = job
            if not hasattr(local, "client"):
                local.client = InferenceClient(timeout=60)
            got = _as_dicts(local.client.image_classification(pngs[i], model=f"{url}/models/{t}"))
            _same(got, want[job])
            return 1

        start = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            done = sum(pool.map(one, jobs))
        elapsed = time.monotonic() - start
        assert done == 2000 and elapsed < 120, elapsed
        assert _metric(url, "mu2hub_requests_total", status="200") == 2000 + 3 * len(TASKS)
        assert sum(_metric(url, "mu2hub_requests_total", status=s) for s in ("400", "404", "500", "503", "504")) == 0
        rows, batches = _metric(url, "mu2hub_batch_rows_sum"), _metric(url, "mu2hub_batch_rows_count")
        assert rows == 2000 + 3 * len(TASKS) and batches < rows  # concurrent requests were batched together
        assert _metric(url, "mu2hub_compilations_total") == compiled  # warm-up compiled every program before
        assert _metric(url, "mu2hub_resident_component_bytes") == 4 * sum(
            {c.id: c.params for m in models.values() for c in m.components}.values())

        # bad input
        r = httpx.post(f"{url}/models/shared_a", content=b"GIF89a not really")
        assert r.status_code == 400 and "not an image" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", content=b"")
        assert r.status_code == 400 and "empty body" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", json={"inputs": "%%%"})
        assert r.status_code == 400 and "base64" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", json={"inputs": base64.b64encode(pngs[0]).decode(),
                                                       "parameters": {"top_k": 0}})
        assert r.status_code == 400 and "top_k" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", json={"inputs": base64.b64encode(pngs[0]).decode(),
                                                       "parameters": {"function_to_apply": "<b>x</b>"}})
        assert r.status_code == 400 and "function_to_apply" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared", content=pngs[0])
        assert r.status_code == 404 and r.json()["tasks"] == TASKS and "shared_a" in r.json()["error"]
        with pytest.raises(HfHubHTTPError) as e:
            client.image_classification(pngs[0], model=f"{url}/models/nope")
        assert e.value.response.status_code == 404
        r = httpx.post(f"{url}/models/shared_a", content=b"\x89PNG" + b"\0" * 200_000)
        assert r.status_code == 413 and "limit" in r.json()["error"]
        r = httpx.post(f"{url}/models/shared_a", content=pngs[0])  # still serving after all that
        assert r.status_code == 200
        _same(r.json(), models["shared_a"].predict(images[0]))
        assert _metric(url, "mu2hub_requests_total", task="", status="404") == 2


def test_every_task_of_the_evolved_demo_system(evolved, tmp_path):
    """The tiny real evolution the everyday-use tests share (a task name with a slash is a route too)."""
    images = list(probe_images(3, 2, 12))
    with _server(tmp_path, evolved.repo, "--preload", "all", "--max-batch-size", "2",
                 "--cache-dir", str(tmp_path / "cache")) as (url, proc, log):
        assert sorted(t["task"] for t in httpx.get(url + "/tasks").json()) == sorted(evolved.tasks)
        client = InferenceClient()
        for t in evolved.tasks:
            model = mu2hub.from_pretrained(evolved.folder, task=t)
            for image in images:
                _same(_as_dicts(client.image_classification(_png(image), model=f"{url}/models/{t}")), model.predict(image))


def test_overload_deadline_disconnect_and_an_unavailable_task(system, tmp_path):
    folder, models, images = system
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    head = models["larger"].task_file.component_map()["head"]
    (broken / head.filename).write_bytes(b"\0" * head.bytes)
    png = _png(images[0])
    # a batch waits 5 s to fill 4 rows; a request's deadline is 2 s; 2 rows may wait
    with _server(tmp_path, broken, "--preload", "shared_a", "--max-batch-size", "4", "--max-wait-ms", "5000",
                 "--timeout-s", "2", "--max-queue", "2") as (url, proc, log):
        assert "unavailable" not in log.read_text()
        r = httpx.post(f"{url}/models/larger", content=png)
        assert r.status_code == 503 and head.id in r.json()["error"] and r.headers["retry-after"] == "30"
        listed = {t["task"]: t for t in httpx.get(url + "/tasks").json()}
        assert listed["larger"]["available"] is False and head.id in listed["larger"]["error"]
        assert "larger" in httpx.get(url + "/health").json()["unavailable"]

        # a client that disconnects while its row waits: the row leaves the queue at once
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as s:
            s.sendall(b"POST /models/shared_a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(png) + png)
            _wait_for(lambda: _metric(url, "mu2hub_queue_depth") == 1)
        _wait_for(lambda: _metric(url, "mu2hub_requests_total", status="499") == 1, timeout=1.5)
        assert _metric(url, "mu2hub_queue_depth") == 0 and _metric(url, "mu2hub_dropped_rows_total") == 1

        # two rows queued, the third is refused with Retry-After, the two pass their deadline
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(httpx.post, f"{url}/models/shared_a", content=png, timeout=30) for _ in range(2)]
            _wait_for(lambda: _metric(url, "mu2hub_queue_depth") == 2)
            queued = time.monotonic()
            r = httpx.post(f"{url}/models/shared_b", content=png)
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "overloaded" in r.json()["error"]
            answers = [f.result() for f in waiting]
        assert [a.status_code for a in answers] == [504, 504] and "--timeout-s" in answers[0].json()["error"]
        assert _metric(url, "mu2hub_queue_depth") == 0
        time.sleep(max(0.0, queued + 5.5 - time.monotonic()))  # past the moment their batch would have run
        assert _metric(url, "mu2hub_batch_rows_count") == 0  # no abandoned row was ever computed
        assert proc.poll() is None


def test_budget_eviction_corrupt_cache_refetch_and_sigterm_drain(system, hub, tmp_path):
    folder, models, images = system
    cache = tmp_path / "cache"
    mu2hub.from_pretrained(REPO, tasks="all", cache_dir=cache)
    own = models["shared_b"].task_file.component_map()[f"block.{models['shared_b'].task_file.num_layers - 1}"]
    blob = next(cache.glob(f"models--serve--system/snapshots/*/{own.filename}")).resolve()
    blob.write_bytes(blob.read_bytes()[: own.bytes // 2])  # a damaged cached copy
    unique = {c.id: c.params for m in models.values() for c in m.components}
    budget = 4 * sum(unique.values()) // 2
    hub.reset_log()
    with _server(tmp_path, REPO, "--cache-dir", str(cache), "--device-memory-budget", str(budget),
                 "--max-batch-size", "4", "--max-wait-ms", "1500") as (url, proc, log):
        client = InferenceClient()
        png = [_png(im) for im in images[:2]]
        for round_ in range(2):
            with ThreadPoolExecutor(4) as pool:
                got = dict(zip(TASKS, pool.map(
                    lambda t: _as_dicts(client.image_classification(png[round_], model=f"{url}/models/{t}")), TASKS)))
            for t in TASKS:
                _same(got[t], models[t].predict(images[round_]))
        assert hub.downloaded_files(REPO) == [own.filename]  # the damaged copy was fetched again, nothing else
        assert _metric(url, "mu2hub_component_evictions_total") > 0
        assert _metric(url, "mu2hub_resident_component_bytes") <= budget

        # SIGTERM while a request waits for its batch: it is answered, then the process exits 0
        result = {}
        sender = threading.Thread(target=lambda: result.update(r=httpx.post(f"{url}/models/larger", content=png[0],
                                                                           timeout=30)))
        sender.start()
        _wait_for(lambda: _metric(url, "mu2hub_queue_depth") == 1)
        proc.send_signal(signal.SIGTERM)
        sender.join(30)
        assert result["r"].status_code == 200
        _same(result["r"].json(), models["larger"].predict(images[0]))
        assert proc.wait(30) == 0 and "drained" in log.read_text()


def test_missing_serve_extra_is_named(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if not installed
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "pip install 'mu2hub[serve]'" in err and "fastapi" in err and "Traceback" not in err


def test_importing_the_cli_loads_neither_jax_nor_fastapi():
    code = "import sys, mu2hub.cli; print([m for m in ('jax', 'fastapi', 'uvicorn') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ}).stdout
    assert json.loads(out.replace("'", '"')) == []


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
