"""The mu2hub demo Space: pick a task, classify an image, see the task's path through the shared system.

A thin front on purpose: the logic lives in `mu2hub.space` (importable and tested without a server).
What it serves, first match wins:
  1. `MU2HUB_REPO=org/name` (optionally `MU2HUB_REVISION`, `MU2HUB_TASKS=a,b`, `MU2HUB_LOCAL_FILES_ONLY=1`);
  2. a local folder: `MU2HUB_DEMO_DIR`, else `runs/quickstart/export` of this checkout (`make demo`, then `make space`);
  3. on the Hub: the repo, tasks and commit pinned by `preload_from_hub` in this folder's README.md, whose files
     the Space build already put in the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # a checkout: use its mu2hub (the Space installs it from requirements.txt)

from mu2hub.space import CSS, build_demo, parse_preload  # noqa: E402


def target() -> tuple[str, dict]:
    """(repo or folder, build_demo options) from the environment, the checkout, or the README's preload line."""
    tasks = [t for t in os.environ.get("MU2HUB_TASKS", "").split(",") if t] or None
    offline = os.environ.get("MU2HUB_LOCAL_FILES_ONLY", "") in ("1", "true", "True")
    if os.environ.get("MU2HUB_REPO"):
        return os.environ["MU2HUB_REPO"], dict(revision=os.environ.get("MU2HUB_REVISION"), tasks=tasks,
                                               local_files_only=offline)
    folder = Path(os.environ.get("MU2HUB_DEMO_DIR", HERE.parent / "runs" / "quickstart" / "export"))
    if (folder / "config.json").is_file():
        return str(folder), dict(tasks=tasks)
    pinned = parse_preload(HERE / "README.md")
    if pinned is None:
        sys.exit(f"nothing to serve: {folder} has no config.json (run `make demo` first), MU2HUB_REPO is unset "
                 "and README.md has no preload_from_hub line")
    repo, preloaded, revision = pinned
    return repo, dict(revision=revision, tasks=tasks or preloaded or None, local_files_only=offline)


if __name__ == "__main__":
    repo, options = target()
    demo = build_demo(repo, **options)
    demo.launch(css=CSS)  # host/port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (Spaces sets them)
