"""`mu2hub` command line: a thin front over the library."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from .errors import Mu2hubError
from .report import human_bytes, table


def _hub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="Hub repo id (org/name) or a local folder")
    p.add_argument("--revision", default=None, help="branch, tag or commit (pinned for the whole command)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--token", default=None)
    p.add_argument("--local-files-only", action="store_true", help="never touch the network")


def _hub_kwargs(a: argparse.Namespace) -> dict:
    return dict(revision=a.revision, cache_dir=a.cache_dir, token=a.token, local_files_only=a.local_files_only)


def cmd_tasks(a: argparse.Namespace) -> int:
    from .api import list_tasks

    for t in list_tasks(a.repo, **_hub_kwargs(a)):
        print(t)
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from .api import system_info

    info = system_info(a.repo, tasks=[a.task] if a.task else None, **_hub_kwargs(a))
    rows = []
    for t, s in info["tasks"].items():
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        shared = f"{s['shared_components']}/{s['components']}" + (f" ({', '.join(s['shared_with'])})" if s["shared_with"] else "")
        rows.append([t, acc, f"{s['activated_params']:,}", f"{s['bytes'] / 1e6:.2f}", shared])
    print(table(rows, ["task", "accuracy", "activated params", "download MB", "shared components (with)"]))
    if not a.task:
        print(f"\nsystem: {len(info['tasks'])} tasks, {info['components']} components, "
              f"{info['params']:,} parameters, {human_bytes(info['bytes'])}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from .api import from_pretrained

    m = from_pretrained(a.repo, task=a.task, force_download=a.force_download, **_hub_kwargs(a))
    print(f"{m.task}: {len(m.components)} components, {m.activated_params:,} parameters, "
          f"{human_bytes(m.download_bytes)}" + (f" at {m.revision}" if m.revision else ""))
    return 0


def cmd_predict(a: argparse.Namespace) -> int:
    from PIL import Image

    from .api import from_pretrained

    m = from_pretrained(a.repo, task=a.task, **_hub_kwargs(a))
    images = []
    for f in a.images:
        with Image.open(f) as im:
            images.append(im.copy())
    for f, preds in zip(a.images, m.predict(images, top_k=a.top_k)):
        print(f"{f}: " + ", ".join(f"{p['label']} ({p['score']:.3f})" for p in preds))
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Shared by `mu2hub export` and the `export/export.py` driver."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="a training run directory (its system/ folder is exported)")
    src.add_argument("--repo", help="a published mu2hub repo id or folder to export from")
    p.add_argument("--to", required=True, help="target: a Hub repo id (org/name, created if missing) or a folder path")
    p.add_argument("--tasks", default=None, help="comma-separated tasks to export (default: all)")
    p.add_argument("--revision", default=None, help="revision of the --repo source")
    p.add_argument("--token", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--repo-id", default=None, help="name shown in the card's usage snippet (default: the target)")
    p.add_argument("--dry-run", action="store_true", help="print the plan (files, bytes, commits) and change nothing")
    p.add_argument("--prune", action="store_true", help="delete component files at the target that no task uses")
    p.add_argument("--force", action="store_true", help="replace tasks even where the target's path scores better")
    p.add_argument("--private", action="store_true", default=None, help="create the repo private")


def cmd_export(a: argparse.Namespace) -> int:
    from .publish import export

    result = export(a.run or a.repo, a.to, tasks=a.tasks.split(",") if a.tasks else None, revision=a.revision,
                    token=a.token, cache_dir=a.cache_dir, repo_id=a.repo_id, dry_run=a.dry_run, prune=a.prune,
                    force=a.force, private=a.private)
    print(result.format())
    for note in (result.plan.notes if result.plan and not a.dry_run else []):
        print(f"note: {note}")
    return 0


def cmd_verify(a: argparse.Namespace) -> int:
    from .verify import verify

    report = verify(a.repo, tasks=[a.task] if a.task else None, revision=a.revision, cache_dir=a.cache_dir, token=a.token)
    print(report.format())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mu2hub", description="µ2Net multitask systems on the Hugging Face Hub")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tasks", help="list a system's tasks")
    _hub_args(p)
    p.set_defaults(fn=cmd_tasks)
    p = sub.add_parser("info", help="per-task accuracy, activated parameters, download size, sharing")
    _hub_args(p)
    p.add_argument("--task", default=None)
    p.set_defaults(fn=cmd_info)
    p = sub.add_parser("download", help="fetch one task's files into the cache")
    _hub_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--force-download", action="store_true")
    p.set_defaults(fn=cmd_download)
    p = sub.add_parser("predict", help="classify image files with one task")
    _hub_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("images", nargs="+")
    p.set_defaults(fn=cmd_predict)
    p = sub.add_parser("export", help="publish a run or repo to a Hub repo or folder, uploading only what is missing")
    add_export_arguments(p)
    p.set_defaults(fn=cmd_export)
    p = sub.add_parser("verify", help="download into a fresh cache; check every id and every task's probe (exit 1 on mismatch)")
    p.add_argument("repo", help="Hub repo id (org/name) or a local folder")
    p.add_argument("--task", default=None, help="only this task")
    p.add_argument("--revision", default=None)
    p.add_argument("--cache-dir", default=None, help="download here instead of a fresh temporary cache")
    p.add_argument("--token", default=None)
    p.set_defaults(fn=cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (Mu2hubError, OSError, ValueError) as e:
        print(f"mu2hub {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
