"""`mu2hub` command line: a thin front over the library."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from . import __version__
from .constants import DEFAULT_TOP_K
from .errors import ArgumentError, BaselineNotBeatenError, LocalFilesMissingError, Mu2hubError
from .utils.tables import human_bytes, table


def _hub_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("repo", help="Hub repo id (org/name) or a local folder")
    p.add_argument("--revision", default=None, help="branch, tag or commit (pinned for the whole command)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--token", default=None)
    p.add_argument("--local-files-only", action="store_true", help="never touch the network")


def _hub_kwargs(a: argparse.Namespace) -> dict:
    return dict(revision=a.revision, cache_dir=a.cache_dir, token=a.token, local_files_only=a.local_files_only)


def _warnings_as_notes(fn):
    """Our warnings (an offline listing that covers only cached tasks) as `note:` lines on stderr; others as usual."""
    import functools
    import warnings

    from .errors import PartialListingWarning

    @functools.wraps(fn)
    def run(a: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PartialListingWarning)
            code = fn(a)
        for w in caught:
            if issubclass(w.category, PartialListingWarning):
                print(f"note: {w.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return code

    return run


@_warnings_as_notes
def cmd_tasks(a: argparse.Namespace) -> int:
    from .hub.metadata import list_tasks

    for t in list_tasks(a.repo, **_hub_kwargs(a)):
        print(t)
    return 0


def _tasks_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tasks", help="list a system's tasks")
    _hub_args(p)
    p.set_defaults(fn=cmd_tasks)


@_warnings_as_notes
def cmd_info(a: argparse.Namespace) -> int:
    from .hub.metadata import sharing_text, system_info

    info = system_info(a.repo, tasks=[a.task] if a.task else None, **_hub_kwargs(a))
    rows = []
    for t, s in info["tasks"].items():
        acc = "" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
        rows.append([t, acc, f"{s['activated_params']:,}", f"{s['bytes'] / 1e6:.2f}", sharing_text(s)])
    print(table(rows, ["task", "accuracy", "activated params", "download MB", "shared components (with)"]))
    if not a.task:
        listed = f"{len(info['tasks'])} tasks" + ("" if info["complete"] else " (cached ones only: offline)")
        print(f"\nsystem: {listed}, {info['components']} components, "
              f"{info['params']:,} parameters, {human_bytes(info['bytes'])}")
    return 0


def _info_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="per-task accuracy, activated parameters, download size, sharing")
    _hub_args(p)
    p.add_argument("--task", default=None)
    p.set_defaults(fn=cmd_info)


@_warnings_as_notes
def cmd_download(a: argparse.Namespace) -> int:
    from .hub.metadata import download

    d = download(a.repo, a.task, force_download=a.force_download, **_hub_kwargs(a))
    tf = d.task_file
    print(f"{tf.task}: {d.components} components, {tf.activated_params:,} parameters, "
          f"{human_bytes(d.bytes)}" + (f" at {d.revision}" if d.revision else ""))
    if d.folder:
        print(d.folder)  # the last line is the path, as `hf download` prints it
    return 0


def _download_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch one task's files into the cache")
    _hub_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--force-download", action="store_true")
    p.set_defaults(fn=cmd_download)


def cmd_predict(a: argparse.Namespace) -> int:
    import json

    from .api import from_pretrained
    from .utils.progress import progress_bar
    from .data.images import DATASET_PREFIXES, expand_inputs, predict_in_batches

    expand_inputs([s for s in a.inputs if not s.startswith(DATASET_PREFIXES)])  # a missing file fails before loading
    model = from_pretrained(a.repo, task=a.task, **_hub_kwargs(a))
    # datasets decode images of varying sizes at the task's image size
    inputs = expand_inputs(a.inputs, split=a.split, data_kwargs=_data_kwargs(a), decode_size=model.task_file.image_size)
    failed = 0
    with progress_bar(total=len(inputs), desc=f"predict {model.task}", unit="img", disable=None, file=sys.stderr) as bar:
        for item, preds, error in predict_in_batches(lambda ims: model.predict(ims, top_k=a.top_k), inputs,
                                                     batch_size=a.batch_size, progress=bar.update):
            failed += error is not None
            if a.json:
                print(json.dumps({"input": item.name, "predictions": preds} if error is None else
                                 {"input": item.name, "error": error}))
            elif error is None:
                print(f"{item.name}: " + ", ".join(f"{p['label']} ({p['score']:.3f})" for p in preds))
            else:
                print(f"{item.name}: error: {error}", file=sys.stderr)
    return 2 if failed == len(inputs) else 1 if failed else 0  # 2: nothing answered (as any bad input)


def _predict_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images (files, folders, hf:/imagefolder: datasets) with one task; "
                                       "exit 1 when some inputs could not be read, 2 when none could")
    _hub_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--top-k", type=int, default=DEFAULT_TOP_K)
    p.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="one JSON object per image: {input, predictions} or {input, error}")
    p.add_argument("--split", default="test", help="the split of a dataset input (default: test)")
    _data_args(p)
    p.add_argument("inputs", nargs="+", help="image files, folders of images, hf:<dataset>, imagefolder:<folder>")
    p.set_defaults(fn=cmd_predict)


def cmd_evaluate(a: argparse.Namespace) -> int:
    from .api import from_pretrained

    model = from_pretrained(a.repo, task=a.task, **_hub_kwargs(a))
    result = model.evaluate(a.data, split=a.split, batch_size=a.batch_size, data_kwargs=_data_kwargs(a), progress=True)
    print(result.format())
    return 0


def _evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="accuracy of one task on a dataset split, next to the recorded (card) number")
    _hub_args(p)
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True, help="a registered task (digits), hf:<dataset>, imagefolder:<folder> or a folder")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--batch-size", type=int, default=64)
    _data_args(p)
    p.set_defaults(fn=cmd_evaluate)


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
    p.add_argument("--license", default="apache-2.0", help="license id stated in the model card (default apache-2.0)")


def cmd_export(a: argparse.Namespace) -> int:
    from .publishing.publish import export

    result = export(a.run or a.repo, a.to, tasks=a.tasks.split(",") if a.tasks else None, revision=a.revision,
                    token=a.token, cache_dir=a.cache_dir, repo_id=a.repo_id, dry_run=a.dry_run, prune=a.prune,
                    force=a.force, private=a.private, license=a.license)
    print(result.format())
    for note in (result.plan.notes if result.plan and not a.dry_run else []):
        print(f"note: {note}")
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="publish a run or repo to a Hub repo or folder, uploading only what is missing")
    add_export_arguments(p)
    p.set_defaults(fn=cmd_export)


def cmd_verify(a: argparse.Namespace) -> int:
    from .inference.probe import verify

    report = verify(a.repo, tasks=[a.task] if a.task else None, revision=a.revision, cache_dir=a.cache_dir, token=a.token)
    print(report.format())
    return 0 if report.ok else 1


def _verify_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="download into a fresh cache; check every id and every task's probe (exit 1 on mismatch)")
    p.add_argument("repo", help="Hub repo id (org/name) or a local folder")
    p.add_argument("--task", default=None, help="only this task")
    p.add_argument("--revision", default=None)
    p.add_argument("--cache-dir", default=None, help="download here instead of a fresh temporary cache")
    p.add_argument("--token", default=None)
    p.set_defaults(fn=cmd_verify)


def cmd_republish(a: argparse.Namespace) -> int:
    from .publishing.republish import read_labels_file, republish

    result, exported = republish(a.state_dir, a.to, tasks=a.tasks.split(",") if a.tasks else None,
                                 labels=read_labels_file(a.labels) if a.labels else None, agent_class=a.agent_class,
                                 workdir=a.workdir, token=a.token, private=a.private)
    print(result.format())
    print(exported.format())
    return 0


def _republish_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("republish", help="republish a µ2Net / µ4Net reference state as a mu2hub system (docs/REFERENCE.md)")
    p.add_argument("state_dir", help="a µ2Net state_{loop}_{gen} or experiment folder, or a µ4Net system state folder")
    p.add_argument("--to", required=True, help="a Hub repo id (org/name, created if missing) or a folder path")
    p.add_argument("--tasks", default=None, help="comma-separated tasks (default: every task of the state)")
    p.add_argument("--labels", default=None, help="JSON file {task: [class names]} for tasks the stream's registry does not name")
    p.add_argument("--agent-class", default=None, help="µ4Net: the single-path agent class to read (Vit, VitB, VitT3)")
    p.add_argument("--workdir", default=None, help="staging folder for a Hub target (default under HF_HOME; reruns resume)")
    p.add_argument("--token", default=None)
    p.add_argument("--private", action="store_true", default=None, help="create the repo private")
    p.set_defaults(fn=cmd_republish)


def _parse_bytes(text: str) -> int:
    """`200MB`, `1.5GB`, `5e8`, `1000000` -> bytes (decimal units, as the Hub shows sizes)."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    t = text.strip().upper().replace(" ", "")
    num = t.rstrip("KMGTB")
    try:
        return int(float(num) * units[t[len(num):]])
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 200MB, 1.5GB, 5e8)") from None


def _data_kwargs(a: argparse.Namespace) -> dict:
    """`--image-size`, `--max-examples` and `--data-kwargs '{"n_test": 64}'` (JSON, never evaluated as code)."""
    import json

    kwargs = {}
    raw = getattr(a, "data_kwargs", None)
    if raw:
        try:
            kwargs = json.loads(raw)
        except ValueError as e:
            raise ArgumentError(f"--data-kwargs: not JSON ({e}); e.g. '{{\"n_test\": 64}}'") from None
        if not isinstance(kwargs, dict):
            raise ArgumentError(f"--data-kwargs: expected a JSON object, got {raw!r}")
    for key in ("image_size", "max_examples"):
        if getattr(a, key, None) is not None:
            kwargs[key] = getattr(a, key)
    if getattr(a, "skip_corrupt_images", False):
        kwargs["skip_corrupt"] = True
    return kwargs


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-size", type=int, default=None, help="resize every image to this size when loading")
    p.add_argument("--max-examples", type=int, default=None, help="keep at most this many examples per split")
    p.add_argument("--data-kwargs", default=None, help='more loader options as JSON, e.g. \'{"n_test": 64, "seed": 0}\'')
    p.add_argument("--skip-corrupt-images", action="store_true",
                   help="leave out (with a warning) image files that cannot be decoded, instead of stopping")


def cmd_finetune(a: argparse.Namespace) -> int:
    from .api import from_pretrained

    if not (a.out or a.push_to):
        raise ValueError("say where the variant goes: --out DIR and/or --push-to REPO")
    train = a.train if a.train in ("own", "all") else a.train.split(",")
    model = from_pretrained(a.repo, task=a.task, revision=a.revision, cache_dir=a.cache_dir, token=a.token)
    variant = model.finetune(a.data, steps=a.steps, lr=a.lr, train=train, batch_size=a.batch_size,
                             num_validations=a.num_validations, task=a.new_task, seed=a.seed,
                             data_kwargs=_data_kwargs(a), progress=True)
    tf, m = variant.task_file, variant.task_file.metrics
    new = [c for c in variant.components if c.source is None]
    rows = [["task", f"{tf.task} (from {a.repo} @ {str(model.revision)[:8]}, task {a.task})"],
            ["test accuracy", f"{m['test_accuracy']:.4f}"],
            ["source task, same data", f"{m['source_test_accuracy']:.4f}" if "source_test_accuracy" in m else "(other labels)"],
            ["chance", f"{m['chance']:.4f}"], ["trained slots", ", ".join(tf.lineage["trained_slots"])],
            ["new components", f"{len(new)} ({human_bytes(sum(c.bytes for c in new))})"],
            ["referenced in the source repo", f"{len(variant.components) - len(new)} components"]]
    if a.out:
        rows.append(["saved", str(variant.save_pretrained(a.out))])
    if a.push_to:
        pushed = variant.push_to_hub(a.push_to, token=a.token, create_pr=a.create_pr)
        rows.append(["pushed", f"{a.push_to}: {len(pushed.files)} files, {human_bytes(pushed.bytes)}"
                     + (f", PR #{pushed.pr_num} {pushed.pr_url}" if pushed.pr_num else "")])
    print(table(rows, ["finetune", ""]))
    return 0


def _finetune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune a task on your data; the variant stores only its new components")
    _contribution_args(p, batch_size=32)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--train", default="own", help="own (created components + head), all, or slots/kinds: head,block.2")
    p.add_argument("--num-validations", type=int, default=1)
    p.add_argument("--new-task", default=None, help="the variant's task name (default: the source task's)")
    p.add_argument("--out", default=None, help="save the variant into this folder")
    p.add_argument("--push-to", default=None, help="push the variant to this Hub repo")
    p.add_argument("--create-pr", action="store_true", help="push as a pull request that only adds files")
    p.set_defaults(fn=cmd_finetune)


def cmd_add_task(a: argparse.Namespace) -> int:
    from .contrib.contribute import add_task

    evolution = {k: v for k, v in (("space", a.space), ("children_per_generation", a.children_per_generation),
                                   ("batch_size", a.batch_size)) if v is not None}
    if a.scorer_base is not None:
        evolution["scorer"] = {"base": a.scorer_base}
    result = add_task(a.repo, task=a.task, data=a.data, budget=a.budget, revision=a.revision, max_bytes=a.max_bytes,
                      revisit=a.revisit, evolution=evolution, data_kwargs=_data_kwargs(a), baseline=not a.no_baseline,
                      workdir=a.workdir, seed=a.seed, cache_dir=a.cache_dir, token=a.token)
    rows = result.summary_rows()
    if not a.push:
        rows.append(["not pushed", f"kept in {result.workdir}; push it without evolving again: "
                                   f"mu2hub push-task {result.workdir}"])
    print(table(rows, ["add-task", ""]))
    return _push(result, a) if a.push else 0


def _add_task_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("add-task", help="evolve a new task on a published system; --push opens a pull request")
    _contribution_args(p, batch_size=None)  # None: the evolution's default (32)
    p.add_argument("--budget", type=int, default=16, help="children to train")
    p.add_argument("--max-bytes", type=_parse_bytes, default=None, help="cap on component bytes downloaded (200MB)")
    p.add_argument("--revisit", action="store_true", help="evolve an existing task again (must beat its score)")
    p.add_argument("--space", default=None, help="search space (default: inferred from the system's paths)")
    p.add_argument("--children-per-generation", type=int, default=None)
    p.add_argument("--scorer-base", type=float, default=None, help="size penalty base of the score (default 1.0)")
    p.add_argument("--no-baseline", action="store_true", help="skip training the baselines (the same ViT from scratch, plain fine-tuning)")
    p.add_argument("--workdir", default=None, help="keep the run (and the new components) here")
    p.add_argument("--push", action="store_true", help="open a pull request with the task file and new components")
    _push_args(p)
    p.set_defaults(fn=cmd_add_task)


def cmd_push_task(a: argparse.Namespace) -> int:
    from .contrib.contribute import AddTaskResult

    result = AddTaskResult.load(a.workdir)
    print(table(result.summary_rows(), ["push-task", ""]))
    return _push(result, a)


def _push_task_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("push-task", help="push a finished add-task result from its workdir (no evolving again)")
    p.add_argument("workdir", help="the --workdir of an earlier add-task (it holds add_task_result.json)")
    p.add_argument("--token", default=None)
    _push_args(p)
    p.set_defaults(fn=cmd_push_task)


def _push(result, a: argparse.Namespace) -> int:
    """Push an add-task result (refused, exit 2, when it lost to a baseline and --force is not given)."""
    from .contrib.contribute import push_task

    try:
        pushed = push_task(result, create_pr=not a.no_pr, token=a.token, force=a.force)
    except BaselineNotBeatenError as e:  # say the exact command that pushes it anyway
        raise BaselineNotBeatenError(e.task, e.accuracy, e.baseline, e.steps, against=e.against,
                                     retry=f"mu2hub push-task {result.workdir} --force") from None
    print(f"pushed: {len(pushed.files)} files, {human_bytes(pushed.bytes)}"
          + (f": PR #{pushed.pr_num} {pushed.pr_url}" if pushed.pr_num else f": commit {pushed.commit}"))
    return 0


def cmd_validate(a: argparse.Namespace) -> int:
    from .contrib.review import validate

    report = validate(a.repo, a.pr, merge=a.merge, token=a.token, cache_dir=a.cache_dir, probe=not a.no_probe,
                      progress=True, refresh=not a.no_refresh)
    print(report.format())
    return 0 if report.ok else 1


def _validate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check a contribution pull request (exit 1 on rejection); --merge merges it")
    p.add_argument("repo", help="Hub repo id (org/name)")
    p.add_argument("--pr", type=int, required=True, help="pull request number")
    p.add_argument("--merge", action="store_true", help="merge when every check passes")
    p.add_argument("--no-probe", action="store_true", help="skip running the new tasks' probes")
    p.add_argument("--no-refresh", action="store_true", help="with --merge: do not re-render the card and figures after it")
    p.add_argument("--cache-dir", default=None, help="download here instead of a fresh temporary cache")
    p.add_argument("--token", default=None)
    p.set_defaults(fn=cmd_validate)


def _contribution_args(p: argparse.ArgumentParser, *, batch_size: int | None) -> None:
    p.add_argument("repo", help="the published system's Hub repo id (org/name)")
    p.add_argument("--task", required=True)
    p.add_argument("--data", required=True, help="an imagefolder path, a Hugging Face dataset id, hf:<id>, imagefolder:<path>")
    _data_args(p)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--revision", default=None)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--token", default=None)
    p.add_argument("--seed", type=int, default=0)


def _push_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-pr", action="store_true", help="commit to main on the pinned parent instead of a pull request")
    p.add_argument("--force", action="store_true", help="push even if the task lost to a baseline (scratch or fine-tuning)")


def _positive(kind: type, *, zero: bool = False):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or value != value:
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if zero else 'positive'}, got {text}")
        return value

    return parse


def cmd_serve(a: argparse.Namespace) -> int:
    import time

    from .utils.extras import require

    started = time.monotonic()
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module)
    from .serving.server import serve
    from .serving.service import Settings

    settings = Settings(max_batch_size=a.max_batch_size, max_wait_ms=a.max_wait_ms, max_queue=a.max_queue,
                        timeout_s=a.timeout_s, max_body_bytes=a.max_body_bytes, budget_bytes=a.device_memory_budget,
                        dtype=a.dtype)
    return serve(a.repo, host=a.host, port=a.port, tasks=a.tasks, preload=a.preload, settings=settings,
                 started=started, **_hub_kwargs(a))


def _serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve every task over HTTP (the Hub's inference protocol), shared blocks computed "
                       "once; needs the 'serve' extra (docs/SERVING.md)")
    _hub_args(p)
    p.add_argument("--tasks", default="all", help="'all' or comma-separated task names to serve (default: all)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in a container)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--preload", default=None, metavar="all|a,b",
                   help="load and compile these tasks before the port opens (default: none; each task loads on its "
                        "first request)")
    p.add_argument("--max-batch-size", type=_positive(int), default=32, help="rows per device batch (default 32)")
    p.add_argument("--max-wait-ms", type=_positive(float, zero=True), default=5.0,
                   help="how long the first queued request waits for others to batch with (default 5)")
    p.add_argument("--max-queue", type=_positive(int), default=1024, help="queued rows before 503 (default 1024)")
    p.add_argument("--timeout-s", type=_positive(float), default=30.0, help="a request's deadline; past it, 504 (default 30)")
    p.add_argument("--max-body-bytes", type=_parse_bytes, default=10 * 2**20, help="larger bodies get 413 (default 10MiB)")
    p.add_argument("--device-memory-budget", type=_parse_bytes, default=None,
                   help="bytes of components to keep (e.g. 200MB); least recently used ones not in flight are evicted "
                        "and reloaded from the local cache (default: keep all)")
    p.add_argument("--dtype", default=None, help="compute dtype: float32 (default) or bfloat16")
    p.set_defaults(fn=cmd_serve)


# in the order `mu2hub --help` lists them
_COMMANDS = (_tasks_parser, _info_parser, _download_parser, _predict_parser, _evaluate_parser, _export_parser,
             _verify_parser, _republish_parser, _finetune_parser, _add_task_parser, _push_task_parser, _validate_parser,
             _serve_parser)


def build_parser() -> argparse.ArgumentParser:
    """The `mu2hub` parser: each command adds itself (`_<command>_parser`, beside its handler `cmd_<command>`)."""
    parser = argparse.ArgumentParser(prog="mu2hub", description="µ2Net multitask systems on the Hugging Face Hub")
    parser.add_argument("--version", action="version", version=f"mu2hub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in _COMMANDS:
        add(sub)
    return parser


#: Python keyword hints in error messages, as the command line spells them (errors are written for both).
_CLI_WORDS = {"force_download=True": "--force-download", "local_files_only=True": "--local-files-only",
              "without local_files_only": "without --local-files-only", "revisit=True": "--revisit",
              "force=True": "--force", "max_bytes": "--max-bytes", "skip_corrupt=True": "--skip-corrupt-images"}


def _in_cli_words(text: str) -> str:
    for python, flag in _CLI_WORDS.items():
        text = text.replace(python, flag)
    return text


def _one_line(e: BaseException) -> str:
    """The error in the command line's words: one line, except a list of files (one per line, as the error has it)."""
    if isinstance(e, LocalFilesMissingError):
        return _in_cli_words(str(e))
    return _in_cli_words(" ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__)


def _interrupted(process: bool) -> int:
    """130; as the `mu2hub` process (`process`), exit now. Threads of huggingface_hub's own pools (upload workers)
    may sit in a socket read that no signal reaches, and Python's exit would wait for them; every file mu2hub writes
    is atomic and huggingface_hub resumes its `.incomplete` downloads, so leaving them keeps the cache and any
    target consistent. Called with arguments (from Python), it only returns."""
    import threading

    if process and any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every failure is one line on stderr and a non-zero exit, never a traceback: 2 for a named
    error (bad input, the Hub, files), 130 when interrupted, 3 for an unexpected one (a bug: `MU2HUB_TRACEBACK=1`
    shows where)."""
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print(f"mu2hub {args.command}: interrupted", file=sys.stderr)
        return _interrupted(process=argv is None)
    except Exception as e:
        if os.environ.get("MU2HUB_TRACEBACK"):
            raise
        from .utils.extras import missing_extra

        e = missing_extra(e) or e  # an optional package we did not wrap: still named, with its extra
        if isinstance(e, (Mu2hubError, OSError, ValueError)):
            print(f"mu2hub {args.command}: error: {_one_line(e)}", file=sys.stderr)
            return 2
        print(f"mu2hub {args.command}: internal error: {type(e).__name__}: {_one_line(e)} (a bug in mu2hub: rerun "
              "with MU2HUB_TRACEBACK=1 to see where, and please report it)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
