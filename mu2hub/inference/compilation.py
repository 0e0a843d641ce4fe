"""The compilation cache: each distinct compiled step is compiled once per machine, not once per process.

XLA compiles every distinct jitted step (a child's train step, its evaluation) before it first runs; on a CPU
that is seconds per step, and the quickstart spent 46% of its evolution compiling. `enable_compilation_cache`
turns on JAX's persistent compilation cache, so a second run, a `--resume`, another agent on the same machine,
and even a second child whose program is identical to an earlier one in the same process (JAX's in-memory
cache is keyed on the Python-level arguments, the persistent one on the program) load the executable instead.

Where (first that applies): the `directory` argument; `$MU2HUB_COMPILATION_CACHE` (`0`, `false`, `off` or `no`
disable it); `$MU2HUB_CACHE/compilation`; `$XDG_CACHE_HOME/mu2hub/compilation`; `~/.cache/mu2hub/compilation`.
Inside it, one folder per jaxlib version and host CPU (`jaxlib-0.10.2-cpu-1a2b3c4d5e6f`): JAX's own key covers the
program, jaxlib version, backend and its version, XLA flags, compile options and device topology, but not which
instruction set the host CPU has, and a CPU executable is machine code for the CPU that compiled it (a home
folder shared by machines of different CPU generations must not hand one's code to the other). A user's own
JAX cache (`JAX_COMPILATION_CACHE_DIR` / `jax_compilation_cache_dir`) is left as it is and used instead.

Safety. JAX executes what it loads from this folder, so it is trusted only when the whole chain is: the folder is
created `0700`; it and every folder above it up to the filesystem root (or the user's home) must be owned by this
user or root and not writable by others — a sticky, world-writable parent such as `/tmp` is allowed, since the
cache folder itself is private. Anything else is refused (`CompilationCacheError` when the folder was chosen
explicitly; one warning and no cache for the default one). Every entry is written atomically (temp file +
rename) and authenticated with an HMAC-SHA256 over its key and bytes under a per-user secret (`<base>/hmac.key`,
32 random bytes, `0600`, created once with an exclusive link): a plain hash anyone could compute would let
whoever can put a file there hand JAX code. A truncated, corrupted or foreign entry (another key's bytes, another
tool's file, another user's key) is ignored with a `CompilationCacheWarning`, deleted and compiled afresh, never
executed. The folder is bounded (`max_bytes`, least recently used entries first out).

Every compilation is cached (`jax_persistent_cache_min_compile_time_secs = 0`): JAX's default (1 s) would skip
most of a CPU run's programs. On a GPU, XLA's autotuning cache (`jax_persistent_cache_enable_xla_caches`, JAX's
default) lives in a subfolder; it passes its path to XLA as a compile option, which JAX hashes into every key, so
there a moved folder starts cold. Elsewhere it is off: it holds nothing for a CPU and would only do the same.
docs/PERFORMANCE.md ("Compilation") has the measurements.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import platform
import secrets
import stat
import threading
import time
import warnings
from pathlib import Path

import jax
from jax._src import compilation_cache as jax_cache
from jax._src.compilation_cache_interface import CacheInterface
from jax._src.lib import version_str as jaxlib_version

from ..errors import CompilationCacheError, CompilationCacheWarning

ENV_FOLDER = "MU2HUB_COMPILATION_CACHE"
ENV_BASE = "MU2HUB_CACHE"
_OFF = ("0", "false", "off", "no")
_MAGIC = b"mu2hub-xla-cache-2\n"  # 2: HMAC under the user's key (1 was a plain sha256)
_DIGEST = hashlib.sha256().digest_size
KEY_NAME = "hmac.key"
_KEY_BYTES = 32
_SUFFIX = ".xla"
DEFAULT_MAX_BYTES = 4 << 30
_XLA_CACHES = "xla_gpu_per_fusion_autotune_cache_dir"  # JAX's default for jax_persistent_cache_enable_xla_caches
_STALE_TMP_S = 3600.0  # a temp file this old belongs to a writer that was killed

_state: dict[str, object] = {"folder": None}
_lock = threading.Lock()


# ---------------------------------------------------------------------------------------------------
# Where
# ---------------------------------------------------------------------------------------------------


def default_base() -> Path:
    """`$MU2HUB_CACHE/compilation`, else `$XDG_CACHE_HOME/mu2hub/compilation` (`~/.cache/mu2hub/compilation`)."""
    base = os.environ.get(ENV_BASE)
    if base:
        return Path(base).expanduser() / "compilation"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "mu2hub" / "compilation"


def host_key() -> str:
    """`jaxlib-<version>-<machine>-<12 hex>`: the hex digest covers the CPU model and its instruction-set flags."""
    cpu = [platform.machine(), platform.processor()]
    try:  # Linux: the model and the ISA flags (avx512f, amx, ...) decide what code the CPU runs
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu += sorted({line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))})
    except OSError:
        pass
    digest = hashlib.sha256("\n".join(cpu).encode()).hexdigest()[:12]
    return f"jaxlib-{jaxlib_version}-{platform.machine().lower() or 'cpu'}-{digest}"


def _resolve(directory: str | os.PathLike | bool | None) -> tuple[Path | None, bool]:
    """(base folder or None when disabled, whether the user chose it)."""
    if directory is False:
        return None, True
    if directory is None or directory is True:
        env = os.environ.get(ENV_FOLDER)
        if env is None:
            return default_base(), False
        if env.strip().lower() in _OFF:
            return None, True
        return Path(env).expanduser(), True
    return Path(directory).expanduser(), True


def _private_folder(path: Path) -> None:
    """Create `path` (mode 0700) and check nobody else can write it: JAX runs the code it loads from there.

    Raises:
        CompilationCacheError: the folder is not a folder, belongs to another user, or group/others may write it.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.stat()
    except OSError as e:
        raise CompilationCacheError(path, f"cannot create it ({e.strerror or e})") from e
    if not stat.S_ISDIR(st.st_mode):
        raise CompilationCacheError(path, "it is not a folder")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise CompilationCacheError(path, f"it belongs to user id {st.st_uid}, not to you ({os.getuid()})")
    if hasattr(os, "getuid") and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CompilationCacheError(path, f"others may write it (mode {stat.S_IMODE(st.st_mode):04o}); "
                                          f"`chmod go-w {path}` makes it private")


def _trusted_chain(folder: Path) -> None:
    """Every folder from `folder` up to the root (or the user's home) is owned by this user or root and not writable
    by others; a world-writable parent must be sticky (`/tmp`). Why: whoever can rename a parent can swap the
    private cache folder for one of theirs.

    Raises:
        CompilationCacheError: naming the first folder that breaks the chain.
    """
    if not hasattr(os, "getuid"):
        return
    uid, gid, home = os.getuid(), os.getgid(), Path.home().resolve()
    real = folder.resolve()
    for p in (real, *real.parents):
        try:
            st = p.stat()
        except OSError as e:
            raise CompilationCacheError(folder, f"cannot check {p} above it ({e.strerror or e})") from e
        if st.st_uid not in (uid, 0):
            raise CompilationCacheError(folder, f"{p} above it belongs to user id {st.st_uid}, who could replace it")
        writable = st.st_mode & stat.S_IWOTH or (st.st_mode & stat.S_IWGRP and not (st.st_uid == uid and st.st_gid == gid))
        if writable and not st.st_mode & stat.S_ISVTX:
            raise CompilationCacheError(folder, f"{p} above it may be written by others (mode "
                                                f"{stat.S_IMODE(st.st_mode):04o}), who could replace it")
        if p == home:
            break


def user_key(base: Path) -> bytes:
    """The per-user secret entries are authenticated with: `<base>/hmac.key`, made once (written to a temp file,
    then linked into place, so no reader ever sees half a key), and refused unless private to this user."""
    try:
        return _read_key(base, base / KEY_NAME)
    except OSError as e:
        raise CompilationCacheError(base, f"cannot make or read its key ({e.strerror or e})") from e


def _read_key(base: Path, path: Path) -> bytes:
    if not os.path.lexists(path):
        tmp = base / f".{KEY_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(_KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process made it first: use theirs
        finally:
            tmp.unlink(missing_ok=True)
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size != _KEY_BYTES:
        raise CompilationCacheError(base, f"its key {path} is not a {_KEY_BYTES}-byte file")
    if hasattr(os, "getuid") and (st.st_uid != os.getuid() or st.st_mode & 0o077):
        raise CompilationCacheError(base, f"its key {path} is readable or owned by others (mode "
                                          f"{stat.S_IMODE(st.st_mode):04o}, user id {st.st_uid})")
    return path.read_bytes()


# ---------------------------------------------------------------------------------------------------
# The verified folder JAX reads and writes
# ---------------------------------------------------------------------------------------------------


class VerifiedFolderCache(CacheInterface):
    """A folder of executables, one file per key: atomic writes, a sha256 over key and bytes, LRU-bounded.

    Implements JAX's `CacheInterface` (`get(key) -> bytes | None`, `put(key, bytes)`); what JAX stores is already
    compressed. Entries that do not verify are deleted and reported, then JAX compiles afresh.
    """

    def __init__(self, folder: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, key: bytes | None = None):
        self.folder, self.max_bytes, self._path = folder, int(max_bytes), folder
        self._key = key if key is not None else user_key(folder.parent)

    def file(self, key: str) -> Path:
        """`<module name>-<sha256 of the key>.xla`: the key (module name + JAX's hash) never names a path itself."""
        name = "".join(c if c.isalnum() or c in "_-" else "_" for c in key.split("-")[0])[:48]
        return self.folder / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:40]}{_SUFFIX}"

    def _digest(self, key: str, value: bytes) -> bytes:
        return hmac.new(self._key, key.encode() + b"\0" + value, hashlib.sha256).digest()

    def get(self, key: str) -> bytes | None:
        f = self.file(key)
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            _warn(f"cannot read compilation cache entry {f} ({e.strerror or e}); compiling instead")
            return None
        head, digest, value = data[:len(_MAGIC)], data[len(_MAGIC):len(_MAGIC) + _DIGEST], data[len(_MAGIC) + _DIGEST:]
        if head != _MAGIC or not hmac.compare_digest(digest, self._digest(key, value)):
            _warn(f"ignored compilation cache entry {f}: truncated, corrupted or not written for this program; "
                  "deleted, compiling afresh")
            f.unlink(missing_ok=True)
            return None
        try:
            os.utime(f)  # least recently *used* goes first
        except OSError:
            pass
        return value

    def put(self, key: str, value: bytes) -> None:
        from ..utils.atomic import atomic_write

        data = _MAGIC + self._digest(key, value) + value
        if len(data) > self.max_bytes:
            return
        try:
            self._evict(len(data))
            atomic_write(self.file(key), data)
        except OSError as e:  # a full disk costs the cache, not the run
            _warn(f"cannot write compilation cache entry into {self.folder} ({e.strerror or e}); continuing without it")

    def _evict(self, incoming: int) -> None:
        """Delete least recently used entries until `incoming` more bytes fit; drop killed writers' temp files."""
        entries, now = [], time.time()
        for f in self.folder.iterdir():
            try:
                st = f.stat()
            except OSError:
                continue
            if f.name.endswith(_SUFFIX):
                entries.append((st.st_mtime, st.st_size, f))
            elif f.name.endswith(".tmp") and now - st.st_mtime > _STALE_TMP_S:
                f.unlink(missing_ok=True)
        total = sum(size for _, size, _ in entries)
        for _, size, f in sorted(entries, key=lambda e: e[0]):
            if total + incoming <= self.max_bytes:
                break
            f.unlink(missing_ok=True)
            total -= size

    def clear(self) -> None:
        for f in self.folder.glob(f"*{_SUFFIX}"):
            f.unlink(missing_ok=True)


def _warn(message: str) -> None:
    warnings.warn(message, CompilationCacheWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------------
# Turning it on and off
# ---------------------------------------------------------------------------------------------------


def enable_compilation_cache(directory: str | os.PathLike | bool | None = None, *,
                             max_bytes: int = DEFAULT_MAX_BYTES) -> Path | None:
    """Turn on the persistent compilation cache for this process (idempotent); returns the folder in use.

    Args:
        directory (`str`, `os.PathLike` or `bool`, *optional*): the base folder; None or True: the environment's
            or the default (module docstring); False: turn the cache off (also one this function turned on).
        max_bytes (`int`, defaults to 4 GiB): the folder's bound; least recently used entries are deleted first.

    Returns:
        The folder executables go to (`<base>/<host_key()>`), or None when the cache is off. When the user has
        configured JAX's own cache (`jax_compilation_cache_dir`), that folder, untouched.

    Raises:
        CompilationCacheError: an explicitly chosen folder cannot be created, or is not private to this user.
    """
    base, explicit = _resolve(directory)
    with _lock:
        ours = _state["folder"]
        theirs = jax.config.jax_compilation_cache_dir
        if theirs and theirs != str(ours):
            return Path(theirs)  # the user's own JAX cache
        if base is None:
            if ours is not None:
                _install(None)
            return None
        folder = base / host_key()
        if folder == ours:
            return folder
        try:
            _private_folder(base)
            _private_folder(folder)
            _trusted_chain(folder)
            key = user_key(base)
        except CompilationCacheError as e:
            if explicit:
                raise
            _warn(f"{e}; training without a compilation cache")
            return None
        _install(VerifiedFolderCache(folder, max_bytes=max_bytes, key=key))
        return folder


def _install(cache: VerifiedFolderCache | None) -> None:
    """Point JAX's persistent cache at `cache` (None: off). JAX has no public hook for its storage, so this sets
    the module's cache object as `jax.experimental.compilation_cache.set_cache_dir` + first use would."""
    jax_cache.reset_cache()
    jax.config.update("jax_compilation_cache_dir", None if cache is None else str(cache.folder))
    if cache is not None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        if jax.default_backend() != "gpu" and jax.config.jax_persistent_cache_enable_xla_caches == _XLA_CACHES:
            # XLA's own caches are GPU autotuning results; elsewhere they only put the folder's path into every
            # key (as a compile option), so a copied or moved folder would miss
            jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
        with jax_cache._cache_initialized_mutex:
            jax_cache._cache = cache
            jax_cache._cache_initialized = True
    _state["folder"] = None if cache is None else cache.folder
