"""`mu2hub serve REPO`: open the system at one pinned commit, preload and warm up, then run uvicorn until SIGTERM.

uvicorn's graceful shutdown is the drain: on SIGTERM or Ctrl-C it stops accepting connections, lets every request
in flight finish (the batcher keeps running until then), stops the batcher, and the process exits 0.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, Iterator

from ..inference.compilation import enable_compilation_cache
from ..hub.store import open_store
from .service import Service, Settings, select_tasks


def build_service(repo: str, *, tasks: str = "all", settings: Settings = Settings(), revision: str | None = None,
                  cache_dir: str | None = None, token: str | None = None, local_files_only: bool = False) -> Service:
    """The service for `repo` (a Hub repo id or a folder): task files read, nothing loaded yet."""
    store = open_store(repo, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    names = select_tasks(store.list_tasks(), tasks, str(repo))
    files = {t: store.read_task(t) for t in names}
    return Service(store, store.read_config(), files, settings, repo_id=str(repo), revision=getattr(store, "commit", None))


def serve(repo: str, *, host: str = "127.0.0.1", port: int = 8000, tasks: str = "all", preload: str | None = None,
          settings: Settings = Settings(), started: float | None = None, log_level: str = "warning",
          **hub: Any) -> int:
    """Serve until stopped; 0 after a clean drain. `preload`: "all" or comma-separated tasks to load and compile
    before the port opens (the others load on their first request)."""
    import uvicorn

    from .app import create_app

    started = time.monotonic() if started is None else started
    enable_compilation_cache()
    service = build_service(repo, tasks=tasks, settings=settings, **hub)
    warm = select_tasks(list(service.files), preload, service.repo_id) if preload else []
    programs = service.warm_up(warm)
    service.ready_s = round(time.monotonic() - started, 3)
    bad = service.unavailable()
    print(f"mu2hub serve: {len(service.files)} tasks of {service.repo_id}"
          + (f" at {service.revision[:12]}" if service.revision else "")
          + f"; {len(warm) - len(bad)} preloaded, {programs} programs compiled; ready in {service.ready_s:.1f} s; "
          f"http://{host}:{port}", file=sys.stderr, flush=True)
    for task, reason in bad.items():
        print(f"mu2hub serve: task {task!r} unavailable: {reason}", file=sys.stderr, flush=True)
    config = uvicorn.Config(create_app(service), host=host, port=port, log_level=log_level, access_log=False,
                            lifespan="on")
    _server_class(uvicorn)(config).run()
    print("mu2hub serve: drained and stopped", file=sys.stderr, flush=True)
    return 0


def _server_class(uvicorn: Any) -> type:
    """uvicorn's server, exiting 0 after a drain: uvicorn itself re-raises the SIGTERM once it has drained, so the
    process would end killed by the signal (status -15) although every request was answered."""

    class DrainingServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return DrainingServer
