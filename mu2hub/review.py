"""Contribution pull requests: opening one that only adds files, and validating one before merging it.

`open_pull_request(repo, files, ...)` is the contributor's side (used by `push_task` and `push_to_hub(create_pr=True)`).
The maintainer's side, `validate(repo, pr=N)`, checks a pull request before it is merged.

Everything is read through the Hub's API as a maintainer would see it: the discussion (`get_discussion_details`),
the PR ref's tree against the commit it branched from, and the added files downloaded at `refs/pr/N` into a fresh
cache (nothing already cached can hide a bad file). Checks, each with its own verdict:

1. `pull request`: the discussion is an open pull request.
2. `only additions`: no published file is modified or deleted (a new task never rewrites an old one).
3. `file names`: only `tasks/<task>.json` and `components/<id[:2]>/<id>.safetensors`, relative, no `..`/`\\`.
4. `no code or pickle`: nothing executable or unpicklable (`.pkl`, `.bin`, `.pt`, `.py`, ...).
5. `components`: every added component is a complete, canonical safetensors file of a known kind whose sha256 is
   the id in its name.
6. `task files`: each parses; references only components that exist (added, already there, or a pinned
   `source`); every component fits its slot (kind and shapes, read from the safetensors headers).
7. `probe`: the task, loaded from the PR's commit, reproduces its recorded probe.
8. `mergeable`: no file conflicts with the target branch.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from .constants import COMPONENTS_DIR, CONFIG_NAME, KINDS, LIBRARY_NAME, TASKS_DIR, task_filename
from .errors import ContributionError, Mu2hubError
from .format import SystemConfig, TaskFile, check_relpath, check_task_name, dump_json, load_json, sha256_hex
from .report import table

if TYPE_CHECKING:
    from .store import LocalStore

_COMPONENT = re.compile(r"^components/([0-9a-f]{2})/([0-9a-f]{64})\.safetensors$")
#: Suffixes of files that run code when loaded (pickles, framework checkpoints) or are code.
CODE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt", ".joblib", ".npy", ".npz", ".h5", ".keras",
                 ".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe", ".ipynb", ".msgpack", ".onnx")
_PROGRAMS = (".py", ".pyc", ".pyo", ".so", ".dll", ".dylib", ".sh", ".bat", ".exe", ".ipynb")
_DTYPES = {"F32", "F16", "I32"}


# ---------------------------------------------------------------------------------------------------
# Opening a pull request that only adds files
# ---------------------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """What a push sent: the files and their bytes, and the commit or pull request it made."""

    repo_id: str
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    commit: str | None = None
    pr_url: str | None = None
    pr_num: int | None = None
    parent: str | None = None


def pull_request_files(store: LocalStore, tasks: Iterable[str]) -> dict[str, bytes | Path]:
    """`config.json`, the tasks' files and their components without a `source`, from a local folder."""
    files: dict[str, bytes | Path] = {CONFIG_NAME: (store.root / CONFIG_NAME).read_bytes()}
    for t in tasks:
        tf = store.read_task(t)
        files[task_filename(t)] = dump_json(tf.to_json())
        for c in tf.components:
            if c.source is None:
                files[c.filename] = store.root / c.filename
    return files


def _same(entry: Any, data: bytes) -> bool:
    from .targets import git_blob_oid

    if entry.size != len(data):
        return False
    return entry.lfs.sha256 == sha256_hex(data) if entry.lfs is not None else entry.blob_id == git_blob_oid(data)


def open_pull_request(repo_id: str, files: Mapping[str, bytes | Path], *, title: str, description: str,
                      parent_commit: str | None = None, token: str | bool | None = None,
                      create_pr: bool = True) -> PushResult:
    """One commit (a pull request by default) on `parent_commit` adding the files `repo_id` lacks there.

    A file the repo holds with the same content is skipped; one it holds with *other* content is refused
    (`ContributionError`): a contribution never modifies what is published.
    """
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.hf_api import RepoFile

    api = HfApi(token=token)
    head = api.repo_info(repo_id).sha
    parent = parent_commit or head

    def listing(rev: str) -> dict[str, Any]:
        return {e.path: e for e in api.get_paths_info(repo_id, list(files), revision=rev) if isinstance(e, RepoFile)}

    there, now = listing(parent), listing(head) if head != parent else None
    ops, sent, changed, current = [], [], [], 0
    for path, content in files.items():
        data = content.read_bytes() if isinstance(content, Path) else content
        latest = (now or there).get(path)
        if latest is not None and not _same(latest, data):  # also: added on main since `parent` (a conflict)
            changed.append(path)
        current += latest is not None
        if path in there:
            if not _same(there[path], data):
                changed.append(path)
            continue
        if path.startswith("components/") and sha256_hex(data) != Path(path).stem:
            raise ContributionError(f"{path}: its content does not match its id; refusing to upload it")
        ops.append(CommitOperationAdd(path, data))
        sent.append((path, len(data)))
    if changed:
        raise ContributionError(f"{repo_id} already has {', '.join(dict.fromkeys(changed))} with other content; a "
                                "contribution only adds files (rename the task with task=...)")
    if not ops or current == len(files):
        raise ContributionError(f"{repo_id}@{parent[:8]} already has every file of this contribution: nothing to add")
    info = api.create_commit(repo_id, ops, commit_message=title, commit_description=description, create_pr=create_pr,
                             parent_commit=parent)
    return PushResult(repo_id, [p for p, _ in sent], sum(n for _, n in sent), info.oid, info.pr_url, info.pr_num, parent)


# ---------------------------------------------------------------------------------------------------
# Validating one
# ---------------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    details: list[str] = field(default_factory=list)


@dataclass
class ValidationReport:
    """Verdicts of `validate`: `.ok` (every check passed), `.format()` for display, `.merged` after `merge=True`."""

    repo_id: str
    pr: int
    base: str | None = None
    head: str | None = None
    added: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    merged: bool = False
    refreshed: list[str] = field(default_factory=list)  # card / figures re-rendered after the merge
    refresh_error: str | None = None  # the merge happened; re-rendering the card failed (rerun it alone)
    progress: Any = field(default=None, repr=False)  # a tqdm bar advanced per check (the CLI's display)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def check(self, name: str, problems: list[str], passed: str = "") -> bool:
        self.checks.append(Check(name, not problems, problems or ([passed] if passed else [])))
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix_str(f"{name}: {'pass' if not problems else 'REJECT'}")
        return not problems

    def format(self) -> str:
        rows = []
        for c in self.checks:
            rows.append([c.name, "pass" if c.ok else "REJECT", c.details[0] if c.details else ""])
            rows.extend(["", "", d] for d in c.details[1:])
        at = f" ({(self.base or '?')[:8]} -> {(self.head or '?')[:8]}, {len(self.added)} files added)"
        verdict = ("MERGED" if self.merged else "ACCEPT: every check passed") if self.ok else "REJECT"
        if self.merged and self.refresh_error:
            verdict += (f"; the card was NOT refreshed ({self.refresh_error}): run `mu2hub export --repo {self.repo_id} "
                        f"--to {self.repo_id}`")
        elif self.merged:
            verdict += (f"; card and figures refreshed ({', '.join(self.refreshed)})" if self.refreshed
                        else "; card and figures already list every task")
        return f"{self.repo_id} PR #{self.pr}{at}\n" + table(rows, ["check", "verdict", "details"]) + f"\n{verdict}"


def _inspect_component(path: str, data: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """Structure first (so a truncated file says so), then the id; returns (header, problems)."""
    m = _COMPONENT.match(path)
    cid = m.group(2) if m else ""
    if len(data) < 8:
        return None, [f"{path}: truncated: {len(data)} bytes, shorter than the 8-byte header length"]
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        return None, [f"{path}: truncated: the header alone claims {n:,} bytes, the file has {len(data):,}"]
    try:
        header = json.loads(data[8 : 8 + n])
        meta = header.pop("__metadata__", None) or {}
        end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return None, [f"{path}: not a safetensors file (header: {e})"]
    if 8 + n + end > len(data):
        return None, [f"{path}: truncated: its tensors need {8 + n + end:,} bytes, the file has {len(data):,}"]
    problems = []
    if 8 + n + end < len(data):
        problems.append(f"{path}: {len(data) - 8 - n - end:,} bytes after the last tensor (not canonical)")
    if meta.get("format") != f"{LIBRARY_NAME}/1" or meta.get("kind") not in KINDS:
        problems.append(f"{path}: __metadata__ {meta} is not a mu2hub component (format mu2hub/1, kind in {KINDS})")
    bad = sorted(k for k, t in header.items() if t.get("dtype") not in _DTYPES)
    if bad:
        problems.append(f"{path}: tensors {bad} have dtypes outside {sorted(_DTYPES)}")
    actual = sha256_hex(data)
    if actual != cid:
        problems.append(f"{path}: content sha256 {actual} does not match the id {cid} in its name")
    if not problems:
        from .format import parse_component

        try:
            parse_component(data, expected_id=cid, filename=path)  # the real safetensors reader agrees
        except Mu2hubError as e:
            problems.append(str(e))
    return {"kind": meta.get("kind"), "shapes": {k: tuple(t["shape"]) for k, t in header.items()}}, problems


def _tree(api: Any, repo_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    return {e.path: e for e in api.list_repo_tree(repo_id, recursive=True, revision=revision) if isinstance(e, RepoFile)}


def _base_commit(api: Any, repo_id: str, pr: int, details: Any) -> tuple[str, str]:
    """(base, head): the PR ref's newest commit, and the first commit in its history that is not one of the PR's."""
    ours = {e.oid for e in details.events if getattr(e, "type", None) == "commit"}
    commits = api.list_repo_commits(repo_id, revision=f"refs/pr/{pr}")
    head = commits[0].commit_id
    base = next((c.commit_id for c in commits if c.commit_id not in ours), None)
    if base is None:
        raise Mu2hubError(f"{repo_id} PR #{pr}: cannot find the commit it branched from")
    return base, head


def _names(added: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(name problems, code/pickle problems, paths safe to download)."""
    problems, code, safe = [], [], []
    for path in added:
        try:
            check_relpath(path)
        except Mu2hubError as e:
            problems.append(f"{path!r}: {e} (path traversal)")
            continue
        low = path.lower()
        if low.endswith(CODE_SUFFIXES):
            code.append(f"{path}: " + ("code" if low.endswith(_PROGRAMS) else
                                        "a pickle or framework checkpoint (loading it can run code)"))
        m = _COMPONENT.match(path)
        if path.startswith(f"{TASKS_DIR}/") and path.endswith(".json"):
            try:
                check_task_name(path[len(TASKS_DIR) + 1 : -5])
                safe.append(path)
            except Mu2hubError as e:
                problems.append(f"{path}: {e}")
        elif m and m.group(1) == m.group(2)[:2]:
            safe.append(path)
        else:
            problems.append(f"{path}: unexpected file (a contribution adds tasks/<task>.json and "
                            f"{COMPONENTS_DIR}/<id[:2]>/<id>.safetensors only)")
    return problems, code, safe


def _task_problems(api: Any, repo_id: str, head: str, rel: str, raw: bytes, config: SystemConfig,
                   tree: dict[str, Any], added: dict[str, dict[str, Any]]) -> tuple[TaskFile | None, list[str]]:
    """Parse one added task file and check every component it names exists and fits its slot."""
    from . import model as vit

    try:
        tf = TaskFile.from_json(load_json(raw, rel), rel)
    except Mu2hubError as e:
        return None, [str(e)]
    problems = []
    if tf.filename != rel:
        problems.append(f"{rel} names task {tf.task!r} (its file would be {tf.filename})")
    if not isinstance(tf.metrics.get("test_accuracy"), (int, float)):
        problems.append(f"{rel}: no metrics.test_accuracy")
    structure = tf.structure(config.dims)
    params, kinds = {}, {}
    for ref in tf.components:
        if ref.source is not None:
            where = f"{ref.source.repo_id}@{ref.source.revision[:8]}"
            try:
                there = api.get_paths_info(ref.source.repo_id, [ref.filename], revision=ref.source.revision)
            except Exception as e:  # no such repo or revision: the Hub answers 404
                there, why = [], f" ({type(e).__name__})"
            else:
                why = ""
            if not there:
                problems.append(f"{rel}: {ref.slot} references {ref.filename} in {where}, which does not have it{why}")
            continue
        if ref.filename in added:
            info = added[ref.filename]
        elif ref.filename in tree:
            meta = api.parse_safetensors_file_metadata(repo_id, ref.filename, revision=head)
            info = {"kind": (meta.metadata or {}).get("kind"), "shapes": {k: tuple(t.shape) for k, t in meta.tensors.items()}}
        else:
            problems.append(f"{rel}: {ref.slot} names {ref.filename}, which is neither in the repo nor added")
            continue
        if tree.get(ref.filename) is not None and tree[ref.filename].size != ref.bytes:
            problems.append(f"{rel}: {ref.slot} records {ref.bytes:,} bytes, {ref.filename} has {tree[ref.filename].size:,}")
        kinds[ref.slot] = info["kind"]
        params[ref.slot] = {k: _Shape(s) for k, s in info["shapes"].items()}
    problems += [f"{rel}: {s} holds a {k!r} component" for s, k in kinds.items() if k != s.split(".")[0]]
    problems += [f"{rel}: {p}" for p in vit.check_shapes(structure, params) if p.split(":")[0] in params]
    return tf, problems


class _Shape:
    """A tensor known by its shape only (`np.shape` reads `.shape`): shape checks without the bytes."""

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape


def validate(repo_id: str, pr: int, *, merge: bool = False, token: str | bool | None = None,
             cache_dir: str | None = None, probe: bool = True, progress: bool = False,
             max_file_bytes: int = 2**31, refresh: bool = True) -> ValidationReport:
    """Check a contribution pull request; with `merge=True`, merge it if every check passes.

    Args:
        repo_id (`str`): the system's Hub repo.
        pr (`int`): the pull request number (`refs/pr/<pr>`).
        merge (`bool`, defaults to `False`): merge when every check passes (`HfApi.merge_pull_request`).
        token (`str`, *optional*): as in huggingface_hub (merging needs write access).
        cache_dir (`str`, *optional*): where to download; defaults to a fresh temporary cache, deleted after.
        probe (`bool`, defaults to `True`): also run each added task's probe (downloads its components).
        progress (`bool`, defaults to `False`): a progress bar over the checks.
        max_file_bytes (`int`, defaults to 2 GiB): added files larger than this are rejected without downloading.
        refresh (`bool`, defaults to `True`): after a merge, re-render the model card and figures from every task
            (one more commit, card and figures only; `publish.refresh_card`).

    Returns:
        `ValidationReport`: one verdict per check (the module docstring lists them); `.ok`, `.format()`.

    Example:
        >>> report = mu2hub.validate("org/system", pr=3)
        >>> print(report.format())
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    report = ValidationReport(repo_id, pr)
    if progress:
        from tqdm.auto import tqdm

        report.progress = tqdm(total=8, desc=f"validating {repo_id} PR #{pr}", unit="check")
    try:
        _validate(api, report, merge=merge, token=token, cache_dir=cache_dir, probe=probe,
                  max_file_bytes=max_file_bytes)
        if report.merged and refresh:
            from .publish import refresh_card

            try:
                report.refreshed = refresh_card(repo_id, token=token, cache_dir=cache_dir)
            except Exception as e:  # the merge stands; say how to finish the refresh
                report.refresh_error = f"{type(e).__name__}: {e}"
        return report
    finally:
        if report.progress is not None:
            report.progress.close()
            report.progress = None


def _validate(api: Any, report: ValidationReport, *, merge: bool, token: Any, cache_dir: str | None,
              probe: bool, max_file_bytes: int) -> ValidationReport:
    from huggingface_hub import hf_hub_download

    repo_id, pr = report.repo_id, report.pr
    details = api.get_discussion_details(repo_id, pr)
    if not report.check("pull request", [] if details.is_pull_request and details.status in ("open", "draft") else
                        [f"#{pr} is {'a pull request' if details.is_pull_request else 'a discussion'} with status {details.status!r}"],
                        f"open, targets {details.target_branch}"):
        return report
    report.base, report.head = _base_commit(api, repo_id, pr, details)
    base, head = _tree(api, repo_id, report.base), _tree(api, repo_id, report.head)
    report.added = sorted(set(head) - set(base))
    changed = [f"modifies {p}" for p in sorted(p for p in head if p in base and head[p].blob_id != base[p].blob_id)]
    changed += [f"deletes {p}" for p in sorted(set(base) - set(head))]
    report.check("only additions", changed, f"{len(report.added)} files added, nothing published changed")
    name_problems, code, safe = _names(report.added)
    too_big = [p for p in safe if head[p].size > max_file_bytes]
    name_problems += [f"{p}: {head[p].size:,} bytes, over the {max_file_bytes:,}-byte limit (not downloaded)" for p in too_big]
    safe = [p for p in safe if p not in too_big]
    report.check("file names", name_problems, "tasks/<task>.json and content-addressed components only")
    report.check("no code or pickle", code, "JSON and safetensors only")
    tmp = None if cache_dir else tempfile.mkdtemp(prefix="mu2hub-validate-")
    cache = cache_dir or tmp
    try:
        def fetch(path: str) -> bytes:
            return Path(hf_hub_download(repo_id, path, revision=report.head, cache_dir=cache, token=token)).read_bytes()

        config = SystemConfig.from_json(load_json(fetch(CONFIG_NAME), CONFIG_NAME), CONFIG_NAME)
        added_components, comp_problems = {}, []
        for path in (p for p in safe if p.startswith(f"{COMPONENTS_DIR}/")):
            info, problems = _inspect_component(path, fetch(path))
            comp_problems += problems
            if info is not None:
                added_components[path] = info
        report.check("components", comp_problems, f"{len(added_components)} added, each canonical safetensors matching its id")
        tasks, task_problems = [], []
        for rel in (p for p in safe if p.startswith(f"{TASKS_DIR}/")):
            tf, problems = _task_problems(api, repo_id, report.head, rel, fetch(rel), config, head, added_components)
            task_problems += problems
            if tf is not None and not problems:
                tasks.append(tf)
        if not [p for p in safe if p.startswith(f"{TASKS_DIR}/")]:
            task_problems.append("the pull request adds no task file")
        report.check("task files", task_problems, ", ".join(t.task for t in tasks) + ": components exist and fit their slots")
        if probe:
            report.check("probe", _probe_problems(repo_id, report.head, tasks, cache, token) if report.ok else
                         ["not run: fix the checks above first"], f"{len(tasks)} task(s) reproduce their probe")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    conflicts = details.conflicting_files if isinstance(details.conflicting_files, list) else []
    report.check("mergeable", [f"conflicts with {details.target_branch}: {p}" for p in conflicts] +
                 (["the Hub reports conflicts"] if details.conflicting_files is True else []), "no conflicts")
    if merge and report.ok:
        api.merge_pull_request(repo_id, pr, comment="Validated with `mu2hub validate`:\n\n```\n" + report.format() + "\n```")
        report.merged = True
    return report


def _probe_problems(repo_id: str, head: str, tasks: list[TaskFile], cache: str, token: Any) -> list[str]:
    from .api import load_task
    from .store import HubStore
    from .probe import check_probe

    store = HubStore.open(repo_id, revision=head, cache_dir=cache, token=token)
    problems = []
    for tf in tasks:
        try:
            result = check_probe(load_task(store, tf.task), tf.probe)
        except Mu2hubError as e:
            problems.append(f"{tf.task}: {e}")
            continue
        problems += [f"{tf.task}: {p}" for p in result.problems]
    return problems
