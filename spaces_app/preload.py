"""Regenerate this Space's `preload_from_hub` list (front matter of README.md) from the system it serves.

    python spaces_app/preload.py                    # drafted from the `make demo` export (runs/quickstart/export), no sha
    python spaces_app/preload.py --repo-files       # after pushing: read the repo on the Hub, pin its commit

Thin on purpose: `mu2hub.space.preload_lines` lists exactly the demo tasks' files (config, task files, the
components their paths name) and `write_preload` rewrites the list in place, leaving the rest of README.md alone.
`tests/space/test_space.py` runs this script against an export and checks every listed file against it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # a checkout: use its mu2hub

from mu2hub.space import main as space_main, parse_preload  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--readme", type=Path, default=HERE / "README.md")
    ap.add_argument("--repo", default=None, help="the repo the Space serves (default: the one README.md names)")
    ap.add_argument("--folder", type=Path, default=HERE.parent / "runs" / "quickstart" / "export",
                    help="a local copy of the system (default: the `make demo` export)")
    ap.add_argument("--repo-files", action="store_true", help="read the task files from the Hub instead of --folder")
    ap.add_argument("--revision", default=None, help="with --repo-files: branch, tag or commit (pinned as its sha)")
    ap.add_argument("--task", action="append", dest="tasks", help="a demo task (repeat); default: all")
    a = ap.parse_args(argv)
    repo = a.repo or (parse_preload(a.readme) or ("mu2hub/quickstart",))[0]
    args = ["preload", repo, "--write", str(a.readme)] + [f"--task={t}" for t in a.tasks or []]
    args += ["--revision", a.revision] if a.revision else []
    return space_main(args if a.repo_files else args + ["--folder", str(a.folder)])


if __name__ == "__main__":
    sys.exit(main())
