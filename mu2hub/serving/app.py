"""The HTTP face of a `Service` (FastAPI): the Hub's inference protocol per task, task list, health, metrics.

`POST /models/{task}` takes what `huggingface_hub.InferenceClient(...).image_classification(image, model=<url>)`
sends (raw image bytes, or JSON with base64 `inputs` and `parameters`) and answers its list of `{"label", "score"}`.
Failures answer `{"error": ...}`: 400 not an image or a malformed body, 404 an unknown task (with the task list),
413 a body over the limit, 503 a full queue or an unavailable task (with `Retry-After`), 504 past the deadline.
A client that disconnects while its row waits takes the row out of the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .batcher import QueueFullError, TaskUnavailableError
from .service import RETRY_AFTER_S, RequestError, Service

_CLIENT_GONE = 499  # nginx's code for a client that closed the connection (recorded in metrics only)


class _ServiceCollector:
    """Gauges and counters read from the service when scraped."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        s = self.service
        yield GaugeMetricFamily("mu2hub_queue_depth", "rows waiting for a batch",
                                value=s.batcher.depth if s.batcher else 0)
        yield GaugeMetricFamily("mu2hub_resident_component_bytes", "bytes of the components held on the device (each "
                                "component once)", value=s.pool.resident_bytes)
        yield CounterMetricFamily("mu2hub_compilations", "distinct programs compiled (stage kind x sizes x batch bucket)",
                                  value=s.engine.compiled_programs)
        yield CounterMetricFamily("mu2hub_component_loads", "components placed on the device", value=s.pool.loads)
        yield CounterMetricFamily("mu2hub_component_evictions", "components evicted under the memory budget",
                                  value=s.pool.evictions)
        yield CounterMetricFamily("mu2hub_stage_applications", "stages applied (each shared stage once per batch)",
                                  value=s.engine.stats.applications)
        yield CounterMetricFamily("mu2hub_dropped_rows", "queued rows dropped because their request went away",
                                  value=s.batcher.dropped if s.batcher else 0)
        yield GaugeMetricFamily("mu2hub_tasks_unavailable", "tasks whose components could not be read",
                                value=len(s.unavailable()))


def create_app(service: Service) -> FastAPI:
    """The FastAPI application serving `service` (its batcher starts and stops with the app)."""
    registry = CollectorRegistry()
    requests = Counter("mu2hub_requests", "requests by task and HTTP status", ["task", "status"], registry=registry)
    latency = Histogram("mu2hub_request_seconds", "request latency", ["task"], registry=registry,
                        buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
    batch_rows = Histogram("mu2hub_batch_rows", "rows per engine batch", registry=registry,
                           buckets=tuple(float(b) for b in service.engine.buckets))
    batch_seconds = Histogram("mu2hub_batch_seconds", "engine time per batch", registry=registry,
                              buckets=(.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5))
    registry.register(_ServiceCollector(service))

    def observe(rows: int, seconds: float) -> None:
        batch_rows.observe(rows)
        batch_seconds.observe(seconds)

    service.batch_observers.append(observe)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start_batcher()
        yield
        await service.batcher.stop()

    app = FastAPI(title="mu2hub serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "repo": service.repo_id, "revision": service.revision, "tasks": len(service.files),
                "ready_s": service.ready_s, "unavailable": service.unavailable()}

    @app.get("/tasks")
    async def tasks() -> list[dict[str, Any]]:
        return service.task_list()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/models/{task:path}")
    async def classify(task: str, request: Request) -> Response:
        start = time.monotonic()
        known = task in service.files
        try:
            body = await _answer(service, task, request, start)
            status, response = 200, JSONResponse(body)
        except RequestError as e:
            status, response = e.status, JSONResponse({"error": e.message, **e.extra}, e.status, headers=e.headers)
        requests.labels(task if known else "", str(status)).inc()
        if known:
            latency.labels(task).observe(time.monotonic() - start)
        return response

    return app


async def _answer(service: Service, task: str, request: Request, start: float) -> list[dict[str, Any]]:
    service.check_task(task)
    body = await _read_body(request, service.settings.max_body_bytes)
    image, top_k, function = service.parse(task, body, request.headers.get("content-type", ""))
    await service.ensure_loaded(task)
    x = await asyncio.to_thread(service.prepare, task, image)
    try:
        pending = service.batcher.submit(task, x)
    except QueueFullError as e:
        raise RequestError(503, f"overloaded: {e}; retry shortly", headers={"Retry-After": "1"}) from None
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        remaining = service.settings.timeout_s - (time.monotonic() - start)
        done, _ = await asyncio.wait({pending.future, gone}, timeout=max(remaining, 0),
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if pending.future not in done:
        service.batcher.abandon(pending)
        if gone in done:
            raise RequestError(_CLIENT_GONE, "client disconnected")
        raise RequestError(504, f"not answered within {service.settings.timeout_s:g} s (--timeout-s); the server is "
                                "busy or --max-wait-ms is too long")
    try:
        logits = pending.future.result()
    except TaskUnavailableError as e:
        raise RequestError(503, str(e), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    except asyncio.CancelledError:
        raise RequestError(503, "the server is shutting down", headers={"Retry-After": "1"}) from None
    except Exception as e:  # noqa: BLE001 - a failed batch: this request fails, the server keeps serving
        raise RequestError(500, f"internal error: {type(e).__name__}: {e}"[:500]) from None
    return service.answer(task, logits, top_k, function)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` (header or stream)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"body of {int(declared):,} bytes is over the {limit:,}-byte limit (--max-body-bytes)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, f"body is over the {limit:,}-byte limit (--max-body-bytes)")
    return bytes(body)


async def _disconnected(request: Request) -> None:
    """Returns when the client goes away (the ASGI server's `http.disconnect`, after the body was read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
