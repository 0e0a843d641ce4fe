"""A loopback server that speaks the Hugging Face Hub's HTTP protocol, for tests.

Why: the project's tests must exercise the *real* ``huggingface_hub`` client (cache layout, ETags, revisions,
ranges, commits, pull requests) over real sockets without network access. This module is a small but faithful
implementation of the Hub endpoints that client (2.4.0) uses, backed by content-addressed blobs on disk. It is a
protocol implementation, not a mock of project code. Standard library only.

Wiring (tests/conftest.py; this file is in tests/support)::

    import os, sys
    import pytest
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
    from hubserver import HubServer, configure_hf_env

    @pytest.fixture(scope="session")
    def hub(tmp_path_factory):
        root = tmp_path_factory.mktemp("hub")
        with HubServer(root / "server") as server:
            restore = configure_hf_env(server.url, root / "hf_home")
            try:
                yield server
            finally:
                restore()

``configure_hf_env`` works whether or not ``huggingface_hub`` was already imported: it sets the environment
variables (seen by a later import and by subprocesses) *and* patches the constants frozen at import time, including
the module-level ``HfApi`` behind ``huggingface_hub.upload_folder`` & co. Calls nest: ``restore()`` puts back
whatever was configured before.

Data model: a repo is a set of commits (sha, parents, message, date, full ``{path: sha256}`` file map); refs are
branches (``main``...), tags, and ``refs/pr/N``; discussions/PRs are records with events. A new repo starts with
a ``.gitattributes`` commit, like on the real Hub. Files named like LFS files (``*.safetensors``...) or larger
than ``LFS_THRESHOLD`` are reported as LFS (ETag = sha256); uploads are always accepted inline ("regular").
PR merges are squash commits titled ``"<PR title> (#N)"``; a path changed differently on both sides is a conflict.
State lives in memory; with ``persist=True`` it is mirrored to ``<root>/state.json`` after every change and
reloaded by the next ``HubServer(..., persist=True)`` on the same root.

Fault injection (``fault(kind, ...)``, ``clear_faults()``; ``fail_next(status)`` is the one-shot ``status`` kind): a
matching request can be answered with an error status, stalled (nothing sent), trickled (one byte per interval), cut
(the connection closed before or during the body), corrupted, or preceded by a callback (``hook``) that changes the
repo at an exact moment, e.g. a push to a pull request while it is being validated.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".npz", ".onnx", ".zip")
LFS_THRESHOLD = 1024 * 1024
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
STALE_PARENT_MESSAGE = "A commit has happened since. Please refresh and try again."
AUTHOR = "hubserver"
_TYPE_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
Headers = dict[str, str]
Response = tuple[int, Headers, bytes]


class HubError(Exception):
    """An HTTP error answered the way the Hub does: status, ``X-Error-Code`` and a JSON ``{"error": ...}``."""

    def __init__(self, status: int, code: str | None, message: str, headers: Headers | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class LoggedRequest(NamedTuple):
    """One served request; ``repo_file`` is set for ``/resolve/`` requests so tests can count downloads."""

    method: str
    path: str
    query: str
    status: int
    body_bytes: int
    repo_id: str | None = None
    repo_file: str | None = None
    request_body: bytes = b""  # kept for commit POSTs only: tests count the operations and bytes sent


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    date: str
    files: dict[str, str]  # path -> sha256 of the content
    author: str = AUTHOR


@dataclass
class Discussion:
    num: int
    title: str
    is_pr: bool
    created_at: str
    status: str = "open"
    target_branch: str = "main"
    base_oid: str | None = None  # commit the PR branched from; its changes are computed against it
    merge_oid: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    author: str = AUTHOR


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)  # PR number -> head commit of refs/pr/N
    discussions: dict[int, Discussion] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_oid(data: bytes) -> str:
    """Git's blob id (what the Hub calls ``oid``/``blobId`` and the ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[0].lower() in ("1", "true", "yes")


def _json(obj: Any, status: int = 200, headers: Headers | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


def _split_rev(args: list[str]) -> tuple[str, list[str]]:
    """Split ``<rev>/<rest...>``; a revision arrives URL-quoted as one segment, but tolerate ``refs/pr/N`` unquoted."""
    if not args:
        raise HubError(404, None, "Missing revision")
    if args[0] == "refs" and len(args) >= 3:
        return "/".join(args[:3]), args[3:]
    return args[0], args[1:]


@dataclass
class Fault:
    """One injected network fault (see ``HubServer.fault``); ``times=None`` repeats until ``clear_faults``."""

    kind: str
    method: str | None = None
    path_contains: str | None = None
    times: int | None = 1
    skip: int = 0  # let this many matching requests through first
    status: int = 500
    message: str = "Injected failure"
    seconds: float = 30.0
    interval: float = 0.5
    after_bytes: int = 0
    data: bytes | None = None
    action: Callable[[], None] | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (self.path_contains is None or self.path_contains in path)


FAULT_KINDS = ("status", "stall", "trickle", "cut", "corrupt", "hook")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    hub: HubServer


class _Handler(BaseHTTPRequestHandler):
    """Thin HTTP layer: read the request, let ``HubServer`` answer, write the response, log it."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.hub._connections.add(self.connection)

    def finish(self) -> None:
        self.server.hub._connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access logs
        pass

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        segs = [unquote(s) for s in parts.path.split("/")[1:]]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # httpx sends bytes bodies sized
        hub = self.server.hub
        ctx: dict[str, str] = {}
        fault = hub._take_fault(self.command, "/" + "/".join(segs))
        if fault is not None and fault.kind == "hook":
            fault.action()
            fault = None
        if fault is not None and (fault.kind == "stall" or (fault.kind == "cut" and fault.after_bytes == 0)):
            if fault.kind == "stall":
                hub._stopping.wait(fault.seconds)  # send nothing at all; the client must give up by itself
            self._drop(hub, parts, 0)
            return
        try:
            if fault is not None and fault.kind == "status":
                raise HubError(fault.status, None, fault.message)
            status, headers, payload = hub._route(self.command, segs, parse_qs(parts.query), body, self.headers, ctx)
        except HubError as e:
            status, headers, payload = _json({"error": e.message}, e.status, e.headers)
            if e.code:
                headers["X-Error-Code"] = e.code
            headers["X-Error-Message"] = e.message.encode("ascii", "replace").decode()
        except Exception as e:  # a server bug must surface as a 500, not hang the client
            status, headers, payload = _json({"error": f"{type(e).__name__}: {e}"}, 500)
        if fault is not None and fault.kind == "corrupt" and payload:
            payload = fault.data if fault.data is not None else bytes(b ^ 0xFF for b in payload[:64]) + payload[64:]
        self.send_response(status)
        headers.setdefault("Content-Length", str(len(payload)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        sent = 0 if self.command == "HEAD" else len(payload)
        if sent and fault is not None and fault.kind == "cut":
            self.wfile.write(payload[: fault.after_bytes])
            self._drop(hub, parts, min(sent, fault.after_bytes), status)
            return
        if sent and fault is not None and fault.kind == "trickle":
            try:
                for i in range(sent):
                    if hub._stopping.is_set():
                        break
                    self.wfile.write(payload[i : i + 1])
                    self.wfile.flush()
                    hub._stopping.wait(fault.interval)
            except OSError:  # the client gave up: what a trickle is for
                sent = i
            self.close_connection = True
        elif sent:
            self.wfile.write(payload)
        kept = body if self.command == "POST" and "/commit/" in parts.path else b""
        hub._record(LoggedRequest(self.command, unquote(parts.path), parts.query, status, sent,
                                  ctx.get("repo_id"), ctx.get("repo_file"), kept))

    def _drop(self, hub: HubServer, parts: Any, sent: int, status: int = 0) -> None:
        """Close the connection abruptly (no response, or a partial one), as a dying proxy or server would."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        hub._record(LoggedRequest(self.command, unquote(parts.path), parts.query, status, sent))

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle


class HubServer:
    """A Hub stand-in bound to ``127.0.0.1`` (port 0 = any free port, kept across ``stop``/``start``)."""

    def __init__(self, root_dir: str | os.PathLike[str], *, port: int = 0, persist: bool = False) -> None:
        self.root = Path(root_dir)
        self.persist = persist
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self._port = port
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], Repo] = {}
        self._blob_meta: dict[str, tuple[int, str]] = {}
        self._faults: list[Fault] = []
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.log: list[LoggedRequest] = []
        if persist:
            self._load()

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> HubServer:
        self._stopping.clear()
        self._httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        self._httpd.hub = self
        self._port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut open keep-alive connections, so clients really see the Hub go away."""
        if self._httpd is None:
            return
        self._stopping.set()  # ends injected stalls and trickles
        self._httpd.shutdown()
        self._httpd.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    # ----------------------------------------------------------------- in-process API for tests
    def create_repo(self, repo_id: str, *, repo_type: str = "model", exist_ok: bool = True) -> str:
        """Create a repo with its initial ``.gitattributes`` commit; returns the repo URL."""
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                if not exist_ok:
                    raise HubError(409, None, f"You already created this {repo_type} repo")
                return self._repo_url(repo_type, repo_id)
            repo = Repo(repo_id, repo_type, _now())
            init = self._new_commit(repo, [], {".gitattributes": self._put_blob(GITATTRIBUTES)}, "initial commit", "")
            repo.branches["main"] = init.oid
            self._repos[(repo_type, repo_id)] = repo
            self._save()
            return self._repo_url(repo_type, repo_id)

    def commit_folder(self, repo_id: str, folder: str | os.PathLike[str], message: str = "Add files",
                      revision: str = "main", *, repo_type: str = "model") -> str:
        """Add/overwrite every file of ``folder`` in one commit on branch ``revision`` (repo created if missing)."""
        self.create_repo(repo_id, repo_type=repo_type)
        base = Path(folder)
        ops = [{"key": "file", "value": {"path": p.relative_to(base).as_posix(), "encoding": "base64",
                                         "content": base64.b64encode(p.read_bytes()).decode()}}
               for p in sorted(base.rglob("*")) if p.is_file()]
        return self._commit(self._repo(repo_type, repo_id), revision, ops, message, "", None, False)["commitOid"]

    def write_file(self, repo_id: str, path: str, data: bytes, *, revision: str = "main",
                   message: str | None = None, repo_type: str = "model") -> str:
        """Write one file in a new commit (e.g. to corrupt a file server-side); returns the commit sha."""
        op = {"key": "file", "value": {"path": path, "encoding": "base64", "content": base64.b64encode(data).decode()}}
        repo = self._repo(repo_type, repo_id)
        return self._commit(repo, revision, [op], message or f"Update {path}", "", None, False)["commitOid"]

    def head(self, repo_id: str, ref: str = "main", *, repo_type: str = "model") -> str:
        with self._lock:
            return self._resolve(self._repo(repo_type, repo_id), ref)

    def files(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> dict[str, bytes]:
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            tree = dict(repo.commits[self._resolve(repo, revision)].files)
        return {p: self._read_blob(s) for p, s in sorted(tree.items())}

    def pr_files(self, repo_id: str, num: int, *, repo_type: str = "model") -> dict[str, list[str]]:
        """What PR ``num`` changes relative to the commit it branched from."""
        with self._lock:
            repo = self._repo(repo_type, repo_id)
            disc = self._discussion(repo, num)
            base = repo.commits[disc.base_oid or ""].files
            head = repo.commits[repo.prs[num]].files
        return {"added": sorted(set(head) - set(base)),
                "modified": sorted(p for p in head if p in base and head[p] != base[p]),
                "deleted": sorted(set(base) - set(head))}

    def fail_next(self, status: int, *, method: str | None = None, path_contains: str | None = None,
                  message: str = "Injected failure") -> None:
        """Answer the next matching request with ``status`` (fault injection; one-shot, FIFO)."""
        self.fault("status", status=status, method=method, path_contains=path_contains, message=message)

    def fault(self, kind: str, *, method: str | None = None, path_contains: str | None = None, times: int | None = 1,
              **params: Any) -> Fault:
        """Inject a network fault into the next ``times`` matching requests (``None``: all, until ``clear_faults``).

        Kinds: ``status`` (answer ``status`` with ``message``), ``stall`` (read the request, send nothing for
        ``seconds`` or until ``stop()``, then close), ``trickle`` (the real response, its body one byte every
        ``interval`` seconds), ``cut`` (close the connection after ``after_bytes`` bytes of the real body; 0: before
        any response), ``corrupt`` (the real headers with a damaged body, or ``data`` instead), ``hook`` (call
        ``action()`` first, then answer normally: a concurrent change at an exact moment). ``skip=k`` lets the first
        ``k`` matching requests through untouched. FIFO among matches.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; kinds: {FAULT_KINDS}")
        fault = Fault(kind, method, path_contains, times, **params)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.matches(method, path):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            del self._faults[i]
                    return fault
        return None

    def fail_next_commit_with(self, status: int, message: str = "Injected failure") -> None:
        self.fail_next(status, method="POST", path_contains="/commit/", message=message)

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def downloaded_files(self, repo_id: str | None = None) -> list[str]:
        """Repo paths whose content was sent by a ``GET /resolve/`` (HEADs and empty bodies excluded)."""
        return [r.repo_file for r in list(self.log) if r.method == "GET" and r.repo_file is not None
                and r.body_bytes > 0 and (repo_id is None or r.repo_id == repo_id)]

    def bytes_downloaded(self, repo_id: str | None = None) -> int:
        return sum(r.body_bytes for r in list(self.log) if r.method == "GET" and r.repo_file is not None
                   and (repo_id is None or r.repo_id == repo_id))

    def committed_operations(self, repo_id: str) -> list[tuple[str, int | None]]:
        """(path, bytes) of every file operation in successful commit requests to `repo_id`, in order.

        Bytes are what the client sent for an added file (None for deletions and copies): tests use this to
        prove an upload carried only what the Hub lacked.
        """
        ops: list[tuple[str, int | None]] = []
        for r in list(self.log):
            if r.method == "POST" and "/commit/" in r.path and r.repo_id == repo_id and r.status == 200 and r.request_body:
                for line in r.request_body.splitlines():
                    entry = json.loads(line)
                    value = entry["value"]
                    if entry["key"] == "file":
                        ops.append((value["path"], len(base64.b64decode(value["content"]))))
                    elif entry["key"] == "lfsFile":
                        ops.append((value["path"], value["size"]))
                    elif entry["key"] != "header":
                        ops.append((value["path"], None))
        return ops

    # ----------------------------------------------------------------- storage
    def _put_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / sha
        if not path.exists():
            tmp = path.with_name(f".{sha}.{uuid.uuid4().hex}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._blob_meta[sha] = (len(data), git_blob_oid(data))
        return sha

    def _read_blob(self, sha: str) -> bytes:
        return (self.root / "blobs" / sha).read_bytes()

    def _meta(self, sha: str) -> tuple[int, str]:
        if sha not in self._blob_meta:
            data = self._read_blob(sha)
            self._blob_meta[sha] = (len(data), git_blob_oid(data))
        return self._blob_meta[sha]

    def _save(self) -> None:
        if not self.persist:  # opt-in: every commit rewrites the whole state
            return
        state = [asdict(r) for r in self._repos.values()]
        tmp = self.root / f".state.{uuid.uuid4().hex}"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.root / "state.json")

    def _load(self) -> None:
        path = self.root / "state.json"
        if not path.exists():
            return
        for d in json.loads(path.read_text()):
            repo = Repo(**{**d, "commits": {k: Commit(**c) for k, c in d["commits"].items()},
                           "prs": {int(k): v for k, v in d["prs"].items()},
                           "discussions": {int(k): Discussion(**x) for k, x in d["discussions"].items()}})
            self._repos[(repo.repo_type, repo.repo_id)] = repo

    # ----------------------------------------------------------------- model helpers
    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_TYPE_PREFIX[repo_type]}{repo_id}"

    def _repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository not found: {repo_id}")
        return repo

    def _split_repo(self, repo_type: str, segs: list[str]) -> tuple[Repo, list[str]]:
        """Repo ids are ``ns/name`` or ``name``: take the longest prefix of the path that names a known repo."""
        for n in (2, 1):
            if len(segs) >= n and (repo_type, "/".join(segs[:n])) in self._repos:
                return self._repos[(repo_type, "/".join(segs[:n]))], segs[n:]
        raise HubError(404, "RepoNotFound", f"Repository not found: {'/'.join(segs[:2])}")

    def _resolve(self, repo: Repo, rev: str) -> str:
        """Branch, ``refs/heads/x``, tag, ``refs/tags/x``, ``refs/pr/N``, full or >=7-char abbreviated sha."""
        for name, refs in (("refs/heads/", repo.branches), ("refs/tags/", repo.tags), ("", repo.branches),
                           ("", repo.tags)):
            if rev.startswith(name) and rev[len(name):] in refs:
                return refs[rev[len(name):]]
        if rev.startswith("refs/pr/") and rev[8:].isdigit() and int(rev[8:]) in repo.prs:
            return repo.prs[int(rev[8:])]
        if len(rev) >= 7 and all(c in "0123456789abcdef" for c in rev.lower()):
            found = [oid for oid in repo.commits if oid.startswith(rev.lower())]
            if len(found) == 1:
                return found[0]
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev}")

    def _new_commit(self, repo: Repo, parents: list[str], files: dict[str, str], title: str, message: str) -> Commit:
        seed = f"{repo.repo_id}|{parents}|{title}|{time.time_ns()}|{uuid.uuid4()}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), parents, title, message, _now(), dict(files))
        repo.commits[commit.oid] = commit
        return commit

    def _is_lfs(self, path: str, size: int) -> bool:
        return path.endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD

    def _file_entry(self, path: str, sha: str) -> dict[str, Any]:
        size, oid = self._meta(sha)
        entry: dict[str, Any] = {"type": "file", "oid": oid, "size": size, "path": path}
        if self._is_lfs(path, size):
            pointer = _lfs_pointer(sha, size)
            entry["oid"] = git_blob_oid(pointer)
            entry["lfs"] = {"oid": sha, "size": size, "pointerSize": len(pointer)}
        return entry

    def _dir_entry(self, files: dict[str, str], path: str) -> dict[str, Any]:
        items = sorted((p, s) for p, s in files.items() if p.startswith(path + "/"))
        return {"type": "directory", "oid": hashlib.sha1(repr(items).encode()).hexdigest(), "path": path}

    def _last_commit(self, repo: Repo, head: str, path: str) -> dict[str, str]:
        """Newest first-parent commit that changed ``path`` (file or folder), as ``expand=True`` reports it."""
        def state(c: Commit) -> Any:
            return c.files.get(path) or sorted((p, s) for p, s in c.files.items() if p.startswith(path + "/"))
        commit = repo.commits[head]
        while commit.parents and state(repo.commits[commit.parents[0]]) == state(commit):
            commit = repo.commits[commit.parents[0]]
        return {"id": commit.oid, "title": commit.title, "date": commit.date}

    def _discussion(self, repo: Repo, num: int) -> Discussion:
        if num not in repo.discussions:
            raise HubError(404, None, f"Discussion #{num} not found")
        return repo.discussions[num]

    def _event(self, disc: Discussion, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        event = {"id": uuid.uuid4().hex[:24], "type": kind, "createdAt": _now(), "author": {"name": AUTHOR},
                 "data": data}
        disc.events.append(event)
        return event

    def _comment(self, disc: Discussion, text: str) -> dict[str, Any]:
        latest = {"raw": text, "html": f"<p>{text}</p>", "updatedAt": _now(), "author": {"name": AUTHOR}}
        return self._event(disc, "comment", {"edited": False, "hidden": False, "latest": latest, "numEdits": 0,
                                             "editors": [AUTHOR], "history": [latest]})

    # ----------------------------------------------------------------- commits
    def _apply_ops(self, files: dict[str, str], ops: list[dict[str, Any]]) -> dict[str, str]:
        files = dict(files)
        for op in ops:
            key, value = op.get("key"), op.get("value") or {}
            path = str(value.get("path", "")).lstrip("/")
            if not path or ".." in path.split("/"):
                raise HubError(400, None, f"Invalid path: {path!r}")
            if key == "file":
                content = value.get("content", "")
                is_b64 = str(value.get("encoding", "")).lower() == "base64"
                files[path] = self._put_blob(base64.b64decode(content) if is_b64 else content.encode())
            elif key == "lfsFile":
                if not (self.root / "blobs" / str(value.get("oid"))).exists():
                    raise HubError(422, None, f"LFS pointer for {path} points to a missing object {value.get('oid')}")
                files[path] = str(value["oid"])
            elif key == "deletedFile":
                if files.pop(path, None) is None:
                    raise HubError(404, "EntryNotFound", f"A file with this name doesn't exist: {path}")
            elif key == "deletedFolder":
                prefix = path.rstrip("/") + "/"
                doomed = [p for p in files if p.startswith(prefix)]
                if not doomed:
                    raise HubError(404, "EntryNotFound", f"A folder with this name doesn't exist: {path}")
                for p in doomed:
                    del files[p]
            else:
                raise HubError(400, None, f"Unknown commit operation: {key!r}")
        return files

    def _commit(self, repo: Repo, rev: str, ops: list[dict[str, Any]], title: str, description: str,
                parent_commit: str | None, create_pr: bool) -> dict[str, Any]:
        """Apply ``ops`` on branch/PR ``rev``: the Hub's compare-and-swap (412) and ``create_pr`` semantics."""
        with self._lock:
            pr_num = int(rev[8:]) if rev.startswith("refs/pr/") and rev[8:].isdigit() else None
            branch = rev.removeprefix("refs/heads/")
            if pr_num is not None and pr_num not in repo.prs or pr_num is None and branch not in repo.branches:
                raise HubError(404, "RevisionNotFound", f"Invalid rev id: {rev} (commits go to a branch or a PR)")
            head = repo.prs[pr_num] if pr_num is not None else repo.branches[branch]
            parent = self._resolve(repo, parent_commit) if parent_commit else None
            if create_pr:
                if pr_num is not None:
                    raise HubError(400, None, "Cannot open a pull request on a pull request ref")
                base = parent or head
                commit = self._new_commit(repo, [base], self._apply_ops(repo.commits[base].files, ops), title,
                                          description)
                pr_num = max(repo.discussions, default=0) + 1
                repo.prs[pr_num] = commit.oid
                disc = Discussion(pr_num, title, True, _now(), target_branch=branch, base_oid=base)
                repo.discussions[pr_num] = disc
                self._comment(disc, description)
                self._event(disc, "commit", {"subject": title, "oid": commit.oid})
            else:
                if parent is not None and parent != head:
                    raise HubError(412, None, STALE_PARENT_MESSAGE)
                commit = self._new_commit(repo, [head], self._apply_ops(repo.commits[head].files, ops), title,
                                          description)
                if pr_num is not None:
                    repo.prs[pr_num] = commit.oid
                    disc = repo.discussions[pr_num]
                    disc.status = "open" if disc.status == "draft" else disc.status
                    self._event(disc, "commit", {"subject": title, "oid": commit.oid})
                else:
                    repo.branches[branch] = commit.oid
            self._save()
            url = self._repo_url(repo.repo_type, repo.repo_id)
            return {"success": True, "commitOid": commit.oid, "commitUrl": f"{url}/commit/{commit.oid}",
                    "commitMessage": title, "hookOutput": "",
                    "pullRequestUrl": f"{url}/discussions/{pr_num}" if create_pr else None}

    def _pr_changes(self, repo: Repo, disc: Discussion) -> tuple[dict[str, str | None], list[str]]:
        """(changes the PR makes vs. its base, paths also changed differently on the target branch since)."""
        base = repo.commits[disc.base_oid or ""].files
        head = repo.commits[repo.prs[disc.num]].files
        target = repo.commits[repo.branches.get(disc.target_branch, disc.base_oid or "")].files
        ours = {p: head.get(p) for p in set(base) | set(head) if base.get(p) != head.get(p)}
        theirs = {p: target.get(p) for p in set(base) | set(target) if base.get(p) != target.get(p)}
        return ours, sorted(p for p in ours if p in theirs and theirs[p] != ours[p])

    def _diff(self, repo: Repo, disc: Discussion) -> str:
        """A git-style diff of the PR against its base: text files in full, others as "Binary files ... differ"."""
        base = repo.commits[disc.base_oid or ""].files
        out: list[str] = []
        for path, new in sorted(self._pr_changes(repo, disc)[0].items()):
            old = base.get(path)
            a, b = "/dev/null" if old is None else f"a/{path}", "/dev/null" if new is None else f"b/{path}"
            out.append(f"diff --git a/{path} b/{path}\n")
            try:
                texts = [self._read_blob(sha).decode().splitlines(True) if sha else [] for sha in (old, new)]
            except UnicodeDecodeError:
                texts = []
            if not texts or self._is_lfs(path, 0):
                out.append(f"Binary files {a} and {b} differ\n")
            else:
                out.extend(difflib.unified_diff(texts[0], texts[1], a, b))
        return "".join(out)

    def _merge(self, repo: Repo, disc: Discussion, comment: str | None) -> None:
        """Squash-merge a PR onto its target branch, refusing (409) when both sides changed the same path."""
        if not disc.is_pr or disc.status in ("merged", "closed"):
            raise HubError(400, None, f"Discussion #{disc.num} is not an open pull request")
        ours, conflicts = self._pr_changes(repo, disc)
        if conflicts:
            raise HubError(409, None, f"Cannot merge: conflicting files: {', '.join(conflicts)}")
        target = repo.branches[disc.target_branch]
        files = dict(repo.commits[target].files)
        for path, sha in ours.items():
            if sha is None:
                files.pop(path, None)
            else:
                files[path] = sha
        commit = self._new_commit(repo, [target], files, f"{disc.title} (#{disc.num})", "")
        repo.branches[disc.target_branch] = commit.oid
        disc.status, disc.merge_oid = "merged", commit.oid
        if comment:
            self._comment(disc, comment)
        self._event(disc, "status-change", {"status": "merged"})

    # ----------------------------------------------------------------- HTTP routing
    def _record(self, rec: LoggedRequest) -> None:
        with self._lock:
            self.log.append(rec)

    def _route(self, method: str, segs: list[str], query: dict[str, list[str]], body: bytes, headers: Any,
               ctx: dict[str, str]) -> Response:
        path = "/" + "/".join(segs)
        if segs[:1] == ["api"]:
            return self._api(method, segs[1:], query, body, headers.get("Content-Type") or "", ctx)
        repo_type = segs[0][:-1] if segs[:1] in (["datasets"], ["spaces"]) else "model"
        with self._lock:
            repo, rest = self._split_repo(repo_type, segs[1:] if repo_type != "model" else segs)
        if rest[:1] == ["resolve"] and method in ("GET", "HEAD"):
            rev, file_parts = _split_rev(rest[1:])
            ctx["repo_id"], ctx["repo_file"] = repo.repo_id, "/".join(file_parts)
            return self._serve_file(repo, rev, "/".join(file_parts), headers.get("Range"))
        raise HubError(404, None, f"Not found: {path}")

    def _serve_file(self, repo: Repo, rev: str, path: str, range_header: str | None) -> Response:
        with self._lock:
            sha = self._resolve(repo, rev)
            blob = repo.commits[sha].files.get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"Entry not found: {path}", {"X-Repo-Commit": sha})
        data = self._read_blob(blob)
        size, oid = self._meta(blob)
        etag = blob if self._is_lfs(path, size) else oid
        headers = {"Content-Type": "application/octet-stream", "X-Repo-Commit": sha, "ETag": f'"{etag}"',
                   "Accept-Ranges": "bytes", "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"'}
        if self._is_lfs(path, size):
            headers.update({"X-Linked-Etag": f'"{blob}"', "X-Linked-Size": str(size)})
        if not range_header:
            return 200, headers, data
        try:
            unit, _, spec = range_header.partition("=")
            start_s, _, end_s = spec.split(",")[0].strip().partition("-")
            if unit.strip() != "bytes":
                raise ValueError(unit)
            start, end = (size - int(end_s), size - 1) if not start_s else (int(start_s), int(end_s or size - 1))
            start, end = max(start, 0), min(end, size - 1)
            if start > end:
                raise ValueError(range_header)
        except ValueError:
            raise HubError(416, None, "Range Not Satisfiable", {"Content-Range": f"bytes */{size}"}) from None
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        return 206, headers, data[start : end + 1]

    def _api(self, method: str, segs: list[str], query: dict[str, list[str]], body: bytes, ctype: str,
             ctx: dict[str, str]) -> Response:
        payload: Any = {}
        if "x-www-form-urlencoded" in ctype:  # paths-info posts a form: paths=a&paths=b&expand=False
            payload = {k: v if k == "paths" else v[0] for k, v in parse_qs(body.decode()).items()}
        elif body and "ndjson" not in ctype:
            payload = json.loads(body)
        if segs == ["repos", "create"] and method == "POST":
            name, org = payload.get("name", ""), payload.get("organization")
            repo_id, repo_type = f"{org}/{name}" if org else name, payload.get("type") or "model"
            with self._lock:
                exists = (repo_type, repo_id) in self._repos
                url = self.create_repo(repo_id, repo_type=repo_type)
            if exists:  # the client reads "url" from a 409 too (create_repo(exist_ok=True))
                return _json({"error": f"You already created this {repo_type} repo", "url": url}, 409)
            return _json({"url": url, "name": repo_id, "id": repo_id})
        if segs == ["validate-yaml"]:
            return _json({"errors": [], "warnings": []})
        if segs == ["agent-harnesses"]:
            return _json({"standardEnvVars": [], "harnesses": {}})
        if not segs or segs[0] not in ("models", "datasets", "spaces"):
            raise HubError(404, None, "Not found")
        with self._lock:
            repo, rest = self._split_repo(segs[0][:-1], segs[1:])
            ctx["repo_id"] = repo.repo_id
            return self._repo_api(repo, method, rest[0] if rest else "", rest[1:], query, payload, body)

    def _repo_api(self, repo: Repo, method: str, action: str, args: list[str], query: dict[str, list[str]],
                  payload: Any, body: bytes) -> Response:
        if method == "GET" and action in ("", "revision"):
            return _json(self._info(repo, "/".join(args) or "main", _truthy(query.get("blobs"))))
        if method == "GET" and action == "tree":
            rev, rest = _split_rev(args)
            return _json(self._tree(repo, rev, "/".join(rest).strip("/"), _truthy(query.get("recursive")),
                                    _truthy(query.get("expand"))))
        if method == "POST" and action == "paths-info":
            head = self._resolve(repo, _split_rev(args)[0])
            files, paths = repo.commits[head].files, payload.get("paths", [])
            expand = str(payload.get("expand", "")).lower() in ("1", "true")
            out = []
            for p in [paths] if isinstance(paths, str) else paths:
                p = p.strip("/")
                if p in files or any(f.startswith(p + "/") for f in files):
                    entry = self._file_entry(p, files[p]) if p in files else self._dir_entry(files, p)
                    out.append({**entry, "lastCommit": self._last_commit(repo, head, p)} if expand else entry)
            return _json(out)
        if method == "GET" and action == "refs":
            def ref(name: str, full: str, oid: str) -> dict[str, str]:
                return {"name": name, "ref": full, "targetCommit": oid}
            data = {"branches": [ref(b, f"refs/heads/{b}", o) for b, o in repo.branches.items()], "converts": [],
                    "tags": [ref(t, f"refs/tags/{t}", o) for t, o in repo.tags.items()]}
            if _truthy(query.get("include_prs")):
                data["pullRequests"] = [ref(f"refs/pr/{n}", f"refs/pr/{n}", o) for n, o in sorted(repo.prs.items())]
            return _json(data)
        if method == "GET" and action == "commits":
            oid: str | None = self._resolve(repo, _split_rev(args)[0])
            items = []
            while oid:
                c = repo.commits[oid]
                items.append({"id": c.oid, "title": c.title, "message": c.message, "date": c.date,
                              "authors": [{"user": c.author, "avatar": ""}],
                              "formatted": {"title": c.title, "message": c.message}})
                oid = c.parents[0] if c.parents else None
            return _json(items)
        if method == "POST" and action == "preupload":
            files = repo.commits[self._resolve(repo, _split_rev(args)[0])].files
            return _json({"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                     "oid": self._meta(files[f["path"]])[1] if f["path"] in files else None}
                                    for f in payload.get("files", [])]})
        if method == "POST" and action == "commit":
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            header = next((x["value"] for x in lines if x.get("key") == "header"), {})
            ops = [x for x in lines if x.get("key") != "header"]
            return _json(self._commit(repo, _split_rev(args)[0], ops, header.get("summary") or "Update",
                                      header.get("description") or "", header.get("parentCommit"),
                                      _truthy(query.get("create_pr"))))
        if action in ("branch", "tag") and args:
            return self._refs_api(repo, method, action, "/".join(args), payload)
        if action == "discussions":
            return self._discussions_api(repo, method, args, query, payload)
        raise HubError(404, None, f"Not found: {action}")

    def _info(self, repo: Repo, rev: str, blobs: bool) -> dict[str, Any]:
        sha = self._resolve(repo, rev)
        commit = repo.commits[sha]
        siblings = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = self._file_entry(path, blob)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        info = {"_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24], "id": repo.repo_id,
                "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else AUTHOR, "sha": sha,
                "lastModified": commit.date, "createdAt": repo.created_at, "private": False, "gated": False,
                "disabled": False, "downloads": 0, "likes": 0, "tags": [], "siblings": siblings,
                "usedStorage": sum(self._meta(b)[0] for b in set(commit.files.values()))}
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
        return info

    def _tree(self, repo: Repo, rev: str, path: str, recursive: bool, expand: bool) -> list[dict[str, Any]]:
        head = self._resolve(repo, rev)
        files = repo.commits[head].files
        prefix = path + "/" if path else ""
        under = sorted(p for p in files if p.startswith(prefix))
        if path and not under:
            raise HubError(404, "EntryNotFound", f"Folder not found: {path}")
        dirs: set[str] = set()
        entries = []
        for p in under:
            parts = p[len(prefix):].split("/")
            dirs.update(prefix + "/".join(parts[:i]) for i in range(1, len(parts) if recursive else min(2, len(parts))))
            if recursive or len(parts) == 1:
                entries.append(self._file_entry(p, files[p]))
        entries = [self._dir_entry(files, d) for d in sorted(dirs)] + entries
        if expand:
            entries = [{**e, "lastCommit": self._last_commit(repo, head, e["path"])} for e in entries]
        return entries

    def _refs_api(self, repo: Repo, method: str, kind: str, name: str, payload: Any) -> Response:
        refs = repo.branches if kind == "branch" else repo.tags
        if method == "DELETE":
            if name not in refs or (kind == "branch" and name == "main"):
                raise HubError(404 if name not in refs else 403, "RevisionNotFound", f"Cannot delete {kind} {name}")
            del refs[name]
        elif method == "POST":
            # create_branch posts to branch/{name} {startingPoint}; create_tag posts to tag/{revision} {tag}
            if kind == "branch":
                new, start = name, payload.get("startingPoint") or "main"
            else:
                new, start = payload.get("tag"), name
            if not new:
                raise HubError(400, None, f"Missing {kind} name")
            if new in refs:
                raise HubError(409, None, f"{kind.capitalize()} {new} already exists")
            refs[new] = self._resolve(repo, start)
        else:
            raise HubError(405, None, "Method not allowed")
        self._save()
        return _json({})

    def _disc_summary(self, repo: Repo, d: Discussion) -> dict[str, Any]:
        return {"num": d.num, "title": d.title, "status": d.status, "createdAt": d.created_at,
                "isPullRequest": d.is_pr, "author": {"name": d.author}, "pinned": False,
                "repo": {"name": repo.repo_id, "type": repo.repo_type},
                "numComments": sum(e["type"] == "comment" for e in d.events), "topReactions": []}

    def _discussions_api(self, repo: Repo, method: str, args: list[str], query: dict[str, list[str]],
                         payload: Any) -> Response:
        if not args and method == "GET":
            kind, status = (query.get("type") or ["all"])[0], (query.get("status") or ["all"])[0]
            found = [self._disc_summary(repo, d) for d in sorted(repo.discussions.values(), key=lambda d: -d.num)
                     if kind == "all" or (kind == "pull_request") == d.is_pr
                     if status == "all" or (status == "open") == (d.status in ("open", "draft"))]
            page = int((query.get("p") or ["0"])[0])
            return _json({"discussions": found if page == 0 else [], "count": len(found),
                          "start": 0 if page == 0 else len(found), "numClosedDiscussions": 0})
        if not args and method == "POST":
            num = max(repo.discussions, default=0) + 1
            is_pr = bool(payload.get("pullRequest"))
            disc = Discussion(num, str(payload.get("title", "")), is_pr, _now(), status="draft" if is_pr else "open")
            if is_pr:
                disc.base_oid = repo.prs[num] = repo.branches["main"]
            repo.discussions[num] = disc
            self._comment(disc, str(payload.get("description") or ""))
            self._save()
            return _json({"num": num, "url": f"{self._repo_url(repo.repo_type, repo.repo_id)}/discussions/{num}"})
        if not args[0].isdigit():
            raise HubError(404, None, "Not found")
        disc = self._discussion(repo, int(args[0]))
        if len(args) == 1 and method == "GET":
            data = {**self._disc_summary(repo, disc), "events": disc.events, "locked": False}
            if disc.is_pr:
                data["changes"] = {"base": f"refs/heads/{disc.target_branch}"}
                if disc.merge_oid:
                    data["changes"]["mergeCommitId"] = disc.merge_oid
                data["filesWithConflicts"] = [] if disc.status == "merged" else self._pr_changes(repo, disc)[1]
                data["diff"] = self._diff(repo, disc)
            return _json(data)
        resource = args[1] if len(args) == 2 and method == "POST" else ""
        if resource == "merge":
            self._merge(repo, disc, payload.get("comment"))
            out: dict[str, Any] = {}
        elif resource == "status":
            if payload.get("comment"):
                self._comment(disc, payload["comment"])
            disc.status = payload["status"]
            out = {"newStatus": self._event(disc, "status-change", {"status": disc.status})}
        elif resource == "comment":
            out = {"newMessage": self._comment(disc, payload["comment"])}
        elif resource == "title":
            old, disc.title = disc.title, payload["title"]
            out = {"newTitle": self._event(disc, "title-change", {"from": old, "to": disc.title})}
        else:
            raise HubError(404, None, "Not found")
        self._save()
        return _json(out)


def _set_env(values: dict[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def configure_hf_env(server_url: str, hf_home: str | os.PathLike[str], *, disable_xet: bool = False
                     ) -> Callable[[], None]:
    """Point ``huggingface_hub`` at ``server_url`` with a private ``HF_HOME``; returns a function that undoes it.

    Why both env and patches: ``huggingface_hub`` reads its settings once, at import. Environment variables cover a
    later import (and subprocesses); if it is already imported, the frozen constants, the module-level ``HfApi``
    instance behind ``huggingface_hub.upload_folder`` & co, and a few ``from constants import X`` copies are patched.
    Also forces ``HF_HUB_OFFLINE`` off (a blanket offline switch would block loopback too) and drops ``HF_TOKEN``.
    """
    url, home = server_url.rstrip("/"), str(hf_home)
    values: dict[str, Any] = {
        "ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": home, "HF_HUB_CACHE": os.path.join(home, "hub"), "HUGGINGFACE_HUB_CACHE": os.path.join(home, "hub"),
        "HF_ASSETS_CACHE": os.path.join(home, "assets"), "HUGGINGFACE_ASSETS_CACHE": os.path.join(home, "assets"),
        "HF_XET_CACHE": os.path.join(home, "xet"), "HF_TOKEN_PATH": os.path.join(home, "token"),
        "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
        "HF_HUB_DISABLE_TELEMETRY": True, "HF_HUB_OFFLINE": False, "HF_HUB_DISABLE_UPDATE_CHECK": True,
    }
    if disable_xet:
        values["HF_HUB_DISABLE_XET"] = True
    env = {"HF_ENDPOINT": url, "HF_HOME": home, "HF_HUB_CACHE": values["HF_HUB_CACHE"],
           "HF_XET_CACHE": values["HF_XET_CACHE"], "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_TOKEN": None, **({"HF_HUB_DISABLE_XET": "1"} if disable_xet else {})}
    old_env = {k: os.environ.get(k) for k in env}
    _set_env(env)

    patched: list[tuple[Any, str, Any]] = []

    def patch(obj: Any, attr: str, value: Any) -> None:
        if obj is not None and hasattr(obj, attr):
            patched.append((obj, attr, getattr(obj, attr)))
            setattr(obj, attr, value)

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        for attr, value in values.items():
            patch(constants, attr, value)
        patch(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
        hf_api = sys.modules.get("huggingface_hub.hf_api")
        patch(getattr(hf_api, "api", None), "endpoint", url)
        http = sys.modules.get("huggingface_hub.utils._http")
        if http is not None and hasattr(http, "_HUB_ORIGINS"):
            patch(http, "_HUB_ORIGINS", http._HUB_ORIGINS | {http._url_origin(url)})
        patch(sys.modules.get("huggingface_hub.utils._cache_manager"), "HF_HUB_CACHE", values["HF_HUB_CACHE"])
        patch(sys.modules.get("huggingface_hub.utils._cache_assets"), "HF_ASSETS_CACHE", values["HF_ASSETS_CACHE"])

    def restore() -> None:
        for obj, attr, old in reversed(patched):
            setattr(obj, attr, old)
        _set_env(old_env)

    return restore
