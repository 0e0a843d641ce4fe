"""Hub requests that cannot hang and cannot fail unnamed: a deadline per file, and every huggingface_hub / HTTP
client failure turned into a `HubRequestError` subclass that names the repo and the file (mu2hub/errors.py).

Why hooks on huggingface_hub's own HTTP client: downloads keep going through `hf_hub_download` (its cache, tokens,
offline mode, resumable `.incomplete` files). That client's timeouts are per socket operation, so a server sending
one byte every half second never trips them, and a timed-out transfer is retried five times. Inside `hub_call`, a
request hook caps each request's timeouts at the time left and a response hook checks the deadline on every chunk
that arrives; past it, both stop the transfer with an exception huggingface_hub does not retry. Outside `hub_call`
the hooks do nothing. Xet-backed transfers (`hf_xet`) do not go through this client and get only its own timeouts.

Settings (read on every call, so a test or a long-running Space can change them):
- `MU2HUB_DOWNLOAD_DEADLINE` (seconds, default 60): what any one file (or API call) may take ...
- `MU2HUB_MIN_DOWNLOAD_RATE` (bytes/s, default 1,000,000): ... plus its recorded size at this rate.
- `HF_HUB_DOWNLOAD_TIMEOUT` / `HF_HUB_ETAG_TIMEOUT` (huggingface_hub's, default 10 s): per socket operation.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, TypeVar

try:  # huggingface_hub 2.x ships its client as `httpx2`; 1.x used `httpx`
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx  # type: ignore[no-redef]

from ..errors import (
    DownloadTimeoutError,
    FormatError,
    HubRequestError,
    HubUnavailableError,
    InvalidRepoIdError,
    InvalidSettingError,
    LocalFilesMissingError,
    Mu2hubError,
    RemoteFileNotFoundError,
    RepoNotFoundError,
)

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_DEADLINE = 60.0
DEFAULT_MIN_RATE = 1e6
_RETRY_HINT = "check your connection and retry (files already downloaded are kept)"

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


class _DeadlinePassed(Exception):
    """Raised inside the HTTP client; deliberately not an httpx error, so huggingface_hub does not retry it."""


class _Cancelled(Exception):
    """Raised inside the HTTP client of a `parallel_map` worker once the caller was interrupted (not retried)."""


def _check_cancelled() -> None:
    cancel = getattr(_local, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise _Cancelled()


def _env_float(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        raise InvalidSettingError(name, os.environ.get(name)) from None
    if not value > 0:
        raise InvalidSettingError(name, os.environ.get(name))
    return value


def deadline_for(nbytes: int | None = None) -> float:
    """Seconds one file may take: `MU2HUB_DOWNLOAD_DEADLINE` plus its size at `MU2HUB_MIN_DOWNLOAD_RATE`."""
    seconds = _env_float("MU2HUB_DOWNLOAD_DEADLINE", DEFAULT_DEADLINE)
    return seconds + (nbytes or 0) / _env_float("MU2HUB_MIN_DOWNLOAD_RATE", DEFAULT_MIN_RATE)


# ---------------------------------------------------------------------------------------------------
# Hooks on huggingface_hub's HTTP client
# ---------------------------------------------------------------------------------------------------


class _DeadlineStream(httpx.SyncByteStream):
    """A response body that stops, mid-transfer, once the deadline has passed (a trickling server)."""

    def __init__(self, inner: Any, end: float):
        self._inner, self._end = inner, end

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._inner:
                _check_cancelled()
                if time.monotonic() > self._end:
                    raise _DeadlinePassed()
                yield chunk
        except httpx.HTTPError as e:  # a cut mid-body: remembered for the deadline's message
            _local.last = _first_line(e)
            raise

    def close(self) -> None:
        self._inner.close()


def _on_request(request: Any) -> None:
    end = getattr(_local, "end", None)
    if end is None:
        return
    _check_cancelled()
    left = end - time.monotonic()
    if left <= 0:
        raise _DeadlinePassed()
    timeout = dict(request.extensions.get("timeout") or {})
    request.extensions["timeout"] = {k: left if timeout.get(k) is None else min(timeout[k], left)
                                     for k in ("connect", "read", "write", "pool")}


def _on_response(response: Any) -> None:
    end = getattr(_local, "end", None)
    if end is not None:
        if response.status_code >= 400:
            _local.last = f"HTTP {response.status_code}"
        response.stream = _DeadlineStream(response.stream, end)


def _hooked(client: Any) -> Any:
    hooks = client.event_hooks
    if _on_request not in hooks.get("request", []):
        client.event_hooks = {"request": [*hooks.get("request", []), _on_request],
                              "response": [*hooks.get("response", []), _on_response]}
    return client


def _install() -> None:
    """Every client huggingface_hub makes from now on carries the hooks (it recreates its client after a connect
    error); the factory in place is wrapped, not replaced, so a user's own factory keeps working."""
    global _installed
    from huggingface_hub.utils import _http, get_session, set_client_factory

    with _install_lock:
        if not _installed:
            inner = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or _http.default_client_factory
            set_client_factory(lambda: _hooked(inner()))
            _installed = True
    _hooked(get_session())  # a factory set after ours


# ---------------------------------------------------------------------------------------------------
# One call to the Hub
# ---------------------------------------------------------------------------------------------------


@contextmanager
def hub_call(repo_id: str, what: str, *, nbytes: int | None = None, local_files_only: bool = False) -> Iterator[None]:
    """Run the Hub requests inside under a deadline; map every client or network failure to a named error.

    Args:
        repo_id (`str`): the repo, for messages. what (`str`): the file or API call, for messages.
        nbytes (`int`, *optional*): the file's recorded size (a larger file gets a longer deadline).
        local_files_only (`bool`): a cache miss is then `LocalFilesMissingError`, not a network failure.
    """
    _install()
    seconds = deadline_for(nbytes)
    outer = getattr(_local, "end", None)
    _local.end = time.monotonic() + seconds if outer is None else min(outer, time.monotonic() + seconds)
    _local.last = None
    try:
        yield
    except _Cancelled:
        raise KeyboardInterrupt from None
    except _DeadlinePassed:
        last = getattr(_local, "last", None)
        raise DownloadTimeoutError(
            repo_id, what, f"no complete answer within the {seconds:.3g} s deadline ("
            + (f"last failure: {last}" if last else "the server stalled, was very slow, or refused the connection")
            + f"); {_RETRY_HINT}, or raise MU2HUB_DOWNLOAD_DEADLINE / MU2HUB_MIN_DOWNLOAD_RATE") from None
    except Mu2hubError:
        raise
    except Exception as e:
        mapped = map_error(e, repo_id, what, local_files_only=local_files_only)
        if mapped is None:
            raise
        raise mapped from e
    finally:
        _local.end = outer


def parallel_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int = 8) -> list[R]:
    """`[fn(x) for x in items]` on up to `workers` daemon threads, in order; the first error is raised.

    Why not `ThreadPoolExecutor`: on Ctrl-C its `with` block, and then the interpreter's exit, wait for every worker,
    and a worker blocked on a stalled server waits out its socket timeout (the last round's ~55 s). Here the caller
    gets `KeyboardInterrupt` at once; workers stop at their next request or chunk (`_Cancelled`) and, being daemon
    threads, never hold up the exit. What they leave is huggingface_hub's `.incomplete` file, which the next
    download resumes.
    """
    todo = list(enumerate(items))
    if not todo:
        return []
    queue_in: "queue.SimpleQueue[tuple[int, T]]" = queue.SimpleQueue()
    for job in todo:
        queue_in.put(job)
    done: "queue.SimpleQueue[tuple[int, Any, BaseException | None]]" = queue.SimpleQueue()
    stop = threading.Event()

    def work() -> None:
        _local.cancel = stop
        while not stop.is_set():
            try:
                i, item = queue_in.get_nowait()
            except queue.Empty:
                return
            try:
                done.put((i, fn(item), None))
            except BaseException as e:  # handed to the caller, who raises it
                done.put((i, None, e))

    for _ in range(min(workers, len(todo))):
        threading.Thread(target=work, daemon=True, name="mu2hub-transfer").start()
    results: list[Any] = [None] * len(todo)
    try:
        for _ in todo:
            while True:
                try:
                    i, value, error = done.get(timeout=0.1)  # a timed wait: Ctrl-C is seen at once
                    break
                except queue.Empty:
                    continue
            if error is not None:
                raise error
            results[i] = value
    finally:
        stop.set()
    return results


def _status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def map_error(e: BaseException, repo_id: str, what: str, *, local_files_only: bool = False) -> Mu2hubError | None:
    """The named error for a failure of huggingface_hub or its HTTP client, or None (not a Hub failure)."""
    from huggingface_hub import errors as hf

    status = _status(e)
    if isinstance(e, (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled)):
        if local_files_only or isinstance(e, hf.OfflineModeIsEnabled):
            return LocalFilesMissingError(repo_id, [what])
        cause = e.__cause__ or e.__context__
        if isinstance(cause, (hf.HfHubHTTPError, httpx.HTTPError)):  # the Hub answered, or the network failed
            return map_error(cause, repo_id, what)
        return HubUnavailableError(repo_id, what, "the Hub could not be reached and the file is not in the cache"
                                   + (f" ({_first_line(cause)})" if cause else "") + f"; {_RETRY_HINT}")
    if isinstance(e, hf.RepositoryNotFoundError):  # also GatedRepoError
        return RepoNotFoundError(repo_id, what, "repository not found, or not accessible with this token (check "
                                 "the repo id; if it is private or gated, pass token=... or run `hf auth login`)",
                                 status=status)
    if isinstance(e, hf.RevisionNotFoundError):
        return RepoNotFoundError(repo_id, what, "revision not found (check the branch, tag or commit)", status=status)
    if isinstance(e, hf.EntryNotFoundError):
        return RemoteFileNotFoundError(repo_id, what, "the repo has no such file at this revision", status=status)
    if isinstance(e, hf.HFValidationError):
        return InvalidRepoIdError(f"{repo_id!r} is neither a local folder nor a valid Hub repo id (org/name): "
                                  f"{str(e).splitlines()[0]}")
    if isinstance(e, hf.HfHubHTTPError):
        reason = f"HTTP {status} from the Hub: {str(e).splitlines()[0]}"
        if status is not None and (status >= 500 or status in (408, 429)):
            return HubUnavailableError(repo_id, what, f"{reason}; {_RETRY_HINT}", status=status)
        return HubRequestError(repo_id, what, reason, status=status)
    if isinstance(e, httpx.TimeoutException):
        return DownloadTimeoutError(repo_id, what, f"the Hub did not answer in time ({_first_line(e)}); {_RETRY_HINT}, "
                                    "or raise HF_HUB_DOWNLOAD_TIMEOUT / MU2HUB_DOWNLOAD_DEADLINE")
    if isinstance(e, (httpx.TransportError, httpx.HTTPError, hf.XetDownloadError)):
        return HubUnavailableError(repo_id, what, f"the connection failed ({_first_line(e)}); {_RETRY_HINT}")
    if isinstance(e, (hf.SafetensorsParsingError, hf.NotASafetensorsRepoError)):
        return FormatError(f"not a valid safetensors file: {_first_line(e)}", path=f"{repo_id}/{what}")
    if isinstance(e, hf.FileMetadataError):
        return HubUnavailableError(repo_id, what, f"not a Hub answer ({_first_line(e)}); check HF_ENDPOINT and proxies")
    if isinstance(e, OSError) and "Consistency check failed" in str(e):
        return HubUnavailableError(repo_id, what, f"the download came back incomplete; {_RETRY_HINT}")
    if isinstance(e, OSError):
        return HubRequestError(repo_id, what, f"cannot store the download: {_first_line(e)}")
    return None
