"""What mu2hub keeps beside huggingface_hub's cache: verification stamps and task listings.

Both live under huggingface_hub's *assets* cache (`HF_ASSETS_CACHE`, by default `~/.cache/huggingface/assets/mu2hub/`),
never inside `HF_HUB_CACHE`: that folder belongs to huggingface_hub, and anything foreign in it makes
`scan_cache_dir()` / `hf cache ls` report a corrupted cache.

- `stamps/<cache>/<id>`: a component file verified once (size, inode, mtime, ctime), so a warm load skips the hash.
  One folder per hub cache (keyed by its path), so two caches never overwrite each other's stamps.
- `listings/<org--name>/<commit>.json`: the task names a repo holds at one commit (immutable, so never stale),
  saved whenever they are listed online; an offline listing at that commit is then complete.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..utils.atomic import atomic_write

LIBRARY = "mu2hub"


def _assets(namespace: str, subfolder: str) -> Path:
    from huggingface_hub import cached_assets_path, constants

    return cached_assets_path(LIBRARY, namespace=namespace, subfolder=subfolder, assets_dir=constants.HF_ASSETS_CACHE)


def _hub_cache(cache_dir: str | os.PathLike | None) -> str:
    from huggingface_hub import constants

    return str(Path(cache_dir or constants.HF_HUB_CACHE).expanduser().resolve())


def stamp_dir(cache_dir: str | os.PathLike | None) -> Path:
    """Where verification stamps of the files in this hub cache go (outside it)."""
    key = hashlib.sha256(_hub_cache(cache_dir).encode()).hexdigest()[:16]
    return _assets("stamps", key)


def _listing_file(repo_id: str, commit: str) -> Path:
    return _assets("listings", repo_id) / f"{commit}.json"


def save_listing(repo_id: str, commit: str, tasks: list[str]) -> None:
    """Remember the tasks `repo_id` holds at `commit` (a commit never changes, so neither does this)."""

    atomic_write(_listing_file(repo_id, commit), json.dumps(sorted(tasks)).encode())


def cached_listing(repo_id: str, commit: str) -> list[str] | None:
    """The task names saved for `repo_id` at `commit`, or None if it was never listed online."""
    f = _listing_file(repo_id, commit)
    try:
        names = json.loads(f.read_bytes())
    except (OSError, ValueError):
        return None
    return names if isinstance(names, list) and all(isinstance(n, str) for n in names) else None
