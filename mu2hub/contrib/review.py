"""Contribution pull requests: opening one that only adds files, and validating one before merging it.

`mu2hub.hub.pulls.open_pull_request(repo, files, ...)` is the contributor's side (used by `push_task` and `push_to_hub(create_pr=True)`).
The maintainer's side, `validate(repo, pr=N)`, checks a pull request before it is merged.

Everything is read through the Hub's API as a maintainer would see it: the discussion (`get_discussion_details`),
the PR ref's tree against the commit it branched from, and the added files downloaded at `refs/pr/N` into a fresh
cache (nothing already cached can hide a bad file). Checks, each with its own verdict:

1. `pull request`: the discussion is an open pull request whose commits sit on the target branch's history (a PR
   built on another PR's unmerged commit is refused: those files would be merged unchecked).
2. `only additions`: no published file is modified or deleted (a new task never rewrites an old one).
3. `file names`: only `tasks/<task>.json` and `components/<id[:2]>/<id>.safetensors`, relative, no `..`/`\\`; task
   names safe on every OS and unique case-insensitively; at most `max_files` files of bounded size.
4. `no code or pickle`: nothing executable or unpicklable (`.pkl`, `.bin`, `.pt`, `.py`, ...).
5. `components`: every added component is a canonical, finite float32 safetensors file of a known kind whose sha256
   is the id in its name, and some added task uses it.
6. `task files`: each passes the one schema (mu2hub/format/schema.py); references only components that exist (added,
   already there, or a pinned `source`); every component fits its slot (kind, shapes, params, bytes); a probe.
7. `probe`: the task, loaded from the PR's commit, reproduces its recorded probe within the library's tolerance.
8. `mergeable`: no file conflicts with the target branch, and the card and system summary read every task file
   of the target plus the added ones.

`merge=True` then commits exactly the validated bytes onto the target head the checks ran against
(`parent_commit`), and closes the pull request: a commit pushed to the PR after the checks is never merged.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..constants import COMPONENTS_DIR, CONFIG_NAME, TASKS_DIR, task_filename
from ..errors import ArgumentError, HubRequestError, Mu2hubError, ValidationError
from ..format.system import SystemConfig, TaskFile, load_json, sha256_hex
from ..hub.store import hub_download
from ..hub.transfer import hub_call
from ..utils.tables import table
from ..utils.text import md_fence, one_line
from .checks import (
    MAX_PR_FILES,
    Header,
    component_problems,
    name_problems,
    system_problems,
    task_of,
    task_problems,
    unreferenced,
)

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
    """Verdicts of `validate`: `.ok` (every check passed), `.format()` for display, `.merged` after `merge=True`.

    `base` is the target-branch commit the PR branched from, `head` the PR commit that was checked, `target` the
    target-branch head the checks ran against, `merge_commit` the commit a merge landed.
    """

    repo_id: str
    pr: int
    base: str | None = None
    head: str | None = None
    target: str | None = None
    added: list[str] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    merged: bool = False
    refreshed: list[str] = field(default_factory=list)  # card / figures re-rendered after the merge
    refresh_error: str | None = None  # the merge happened; re-rendering the card failed (rerun it alone)
    merge_commit: str | None = None
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
        verdict = ("MERGED" + (f" as {self.merge_commit[:8]}" if self.merge_commit else "") if self.merged
                   else "ACCEPT: every check passed") if self.ok else "REJECT"
        if self.merged and self.refresh_error:
            verdict += (f"; the card was NOT refreshed ({self.refresh_error}): run `mu2hub export --repo {self.repo_id} "
                        f"--to {self.repo_id}`")
        elif self.merged:
            verdict += (f"; card and figures refreshed ({', '.join(self.refreshed)})" if self.refreshed
                        else "; card and figures already list every task")
        return f"{self.repo_id} PR #{self.pr}{at}\n" + table(rows, ["check", "verdict", "details"]) + f"\n{verdict}"


def validate(repo_id: str, pr: int, *, merge: bool = False, token: str | bool | None = None,
             cache_dir: str | None = None, probe: bool = True, progress: bool = False,
             max_file_bytes: int = 2**31, max_files: int = MAX_PR_FILES, refresh: bool = True) -> ValidationReport:
    """Check a contribution pull request; with `merge=True`, land exactly the checked files if every check passes.

    Args:
        repo_id (`str`): the system's Hub repo.
        pr (`int`): the pull request number (`refs/pr/<pr>`).
        merge (`bool`, defaults to `False`): when every check passes, commit the validated files (the bytes that
            were checked, not whatever the PR ref points to by then) onto the target branch with `parent_commit`
            pinned to the head the checks ran against, then close the pull request with the report. Refused
            (`ValidationError`, nothing merged) if the target branch or the pull request moved meanwhile.
        token (`str`, *optional*): as in huggingface_hub (merging needs write access).
        cache_dir (`str`, *optional*): where to download; defaults to a fresh temporary cache, deleted after.
        probe (`bool`, defaults to `True`): also run each added task's probe (downloads its components). A merge
            always runs it: `merge=True, probe=False` is refused.
        progress (`bool`, defaults to `False`): a progress bar over the checks.
        max_file_bytes (`int`, defaults to 2 GiB): added files larger than this are rejected without downloading.
        max_files (`int`, defaults to 1,000): pull requests adding more files are rejected.
        refresh (`bool`, defaults to `True`): after a merge, re-render the model card and figures from every task
            (one more commit, card and figures only; `publish.refresh_card`).

    Returns:
        `ValidationReport`: one verdict per check (the module docstring lists them); `.ok`, `.format()`.

    Raises:
        `HubRequestError` (and subclasses): the Hub could not be read. `ValidationError`: a merge could not land.

    Example:
        >>> report = mu2hub.validate("org/system", pr=3)
        >>> print(report.format())
    """
    from huggingface_hub import HfApi

    if merge and not probe:
        raise ArgumentError("merge=True needs the probe (probe=True): a merge never trusts a task's recorded answers")
    api = HfApi(token=token)
    report = ValidationReport(repo_id, pr)
    if progress:
        from ..utils.progress import progress_bar

        report.progress = progress_bar(total=8, desc=f"validating {repo_id} PR #{pr}", unit="check")
    tmp = None if cache_dir else tempfile.mkdtemp(prefix="mu2hub-validate-")
    try:
        report = _validate(api, report, merge=merge, token=token, cache=cache_dir or tmp, probe=probe,
                           max_file_bytes=max_file_bytes, max_files=max_files)
        if report.merged and refresh:
            from ..publishing.publish import refresh_card

            try:
                report.refreshed = refresh_card(repo_id, token=token, cache_dir=cache_dir or tmp)
            except Exception as e:  # the merge stands; say how to finish the refresh
                report.refresh_error = f"{type(e).__name__}: {e}"
        return report
    finally:
        if report.progress is not None:
            report.progress.close()
            report.progress = None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


class _PullRequest:
    """The Hub's view of one pull request, read once: every later read is pinned to these commits."""

    def __init__(self, api: Any, repo_id: str, pr: int):
        self.api, self.repo_id, self.pr = api, repo_id, pr
        with hub_call(repo_id, f"pull request #{pr}"):
            self.details = api.get_discussion_details(repo_id, pr)
        self.branch = (self.details.target_branch or "refs/heads/main").removeprefix("refs/heads/")

    def call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with hub_call(self.repo_id, what):
            return fn(*args, **kwargs)

    def commits(self) -> tuple[str | None, str, str, list[str]]:
        """(base, head, target head, problems): base is where the PR's own commits start from the target's history."""
        ours = {e.oid for e in self.details.events if getattr(e, "type", None) == "commit"}
        history = [c.commit_id for c in self.call("PR history", self.api.list_repo_commits, self.repo_id,
                                                  revision=f"refs/pr/{self.pr}")]
        target = self.call(f"{self.branch} history", self.api.list_repo_commits, self.repo_id, revision=self.branch)
        on_target = {c.commit_id for c in target}
        base = next((c for c in history if c in on_target), None)
        if base is None:
            return None, history[0], target[0].commit_id, [f"no commit of the PR is on {self.branch}'s history"]
        foreign = [c for c in history[: history.index(base)] if c not in ours]
        problems = [f"builds on commit {c[:8]}, which is neither on {self.branch} nor one of this PR's commits "
                    "(e.g. another PR's unmerged commit): rebase it on the target branch" for c in foreign]
        return base, history[0], target[0].commit_id, problems

    def tree(self, revision: str) -> dict[str, Any]:
        from huggingface_hub.hf_api import RepoFile

        entries = self.call(f"listing files at {revision[:8]}", self.api.list_repo_tree, self.repo_id,
                            recursive=True, revision=revision)
        return {e.path: e for e in entries if isinstance(e, RepoFile)}

    def source_problem(self, ref: Any) -> str | None:
        """A component pinned in another repo: that repo has it at that commit, with the content its id names."""
        from huggingface_hub.hf_api import RepoFile

        where = f"{ref.source.repo_id}@{ref.source.revision[:8]}"
        try:
            with hub_call(ref.source.repo_id, ref.filename):
                there = self.api.get_paths_info(ref.source.repo_id, [ref.filename], revision=ref.source.revision)
        except Mu2hubError as e:
            return f"references {ref.filename} in {where}, which cannot be read ({e})"
        files = [e for e in there if isinstance(e, RepoFile)]
        if not files:
            return f"references {ref.filename} in {where}, which does not have it"
        if files[0].lfs is None or files[0].lfs.sha256 != ref.id or files[0].size != ref.bytes:
            return f"references {ref.filename} in {where}, whose content is not the id it names"
        return None


def _validate(api: Any, report: ValidationReport, *, merge: bool, token: Any, cache: str, probe: bool,
              max_file_bytes: int, max_files: int) -> ValidationReport:
    repo_id = report.repo_id
    req = _PullRequest(api, repo_id, report.pr)
    if not _check_pull_request(req, report):
        return report
    # trees at the three pinned commits: what the PR adds, and what the target has now
    base, head, target = req.tree(report.base), req.tree(report.head), req.tree(report.target)
    report.added = sorted(set(head) - set(base))
    changed = [f"modifies {p}" for p in sorted(p for p in head if p in base and head[p].blob_id != base[p].blob_id)]
    changed += [f"deletes {p}" for p in sorted(set(base) - set(head))]
    report.check("only additions", changed, f"{len(report.added)} files added, nothing published changed")
    target_tasks = [task_of(p) for p in target if p.startswith(f"{TASKS_DIR}/") and p.endswith(".json")]
    sizes = {p: e.size for p, e in head.items()}
    name_problems_, code, safe = name_problems(report.added, sizes, target_tasks, max_files=max_files,
                                               max_file_bytes=max_file_bytes)
    report.check("file names", name_problems_, "tasks/<task>.json and content-addressed components only")
    report.check("no code or pickle", code, "JSON and safetensors only")

    # the added files, downloaded at the PR's commit into a cache nothing else wrote
    def fetch(path: str, revision: str = report.head) -> Path:
        return Path(hub_download(repo_id, path, revision=revision, cache_dir=cache, token=token, force_download=False,
                              local_files_only=False, nbytes=sizes.get(path)))

    config = SystemConfig.from_json(load_json(fetch(CONFIG_NAME, report.target).read_bytes(), CONFIG_NAME), CONFIG_NAME)
    validated: dict[str, tuple[Path, str]] = {}  # path -> (local copy, sha256 checked)
    headers, comp_problems = _added_components(safe, fetch, validated)
    existing = _ExistingHeaders(req, report.head, set(head) & set(target))
    tasks, task_problems_ = _added_tasks(req, safe, fetch, config, headers, existing, sizes, validated)
    comp_problems += unreferenced(headers, tasks) if not task_problems_ else []
    report.check("components", comp_problems, f"{len(headers)} added, each canonical, finite and matching its id")
    if not [p for p in safe if p.startswith(f"{TASKS_DIR}/")]:
        task_problems_.append("the pull request adds no task file")
    report.check("task files", task_problems_, ", ".join(t.task for t in tasks) + ": components exist and fit their slots")
    if probe:
        report.check("probe", _probe_problems(repo_id, report.head, tasks, cache, token) if report.ok else
                     ["not run: fix the checks above first"], f"{len(tasks)} task(s) reproduce their probe")
    # mergeable: no conflict with the target now, and every reader still reads the whole system
    conflicts = _conflicts(req, report.added, head, target)
    if report.ok and not conflicts:
        conflicts += _system_problems(req, report.target, target_tasks, tasks, config, fetch)
    report.check("mergeable", conflicts, f"no conflicts with {req.branch}; card and summary read every task")
    if merge and report.ok:
        _merge(req, report, validated, target)
    return report


def _check_pull_request(req: _PullRequest, report: ValidationReport) -> bool:
    """An open pull request, built on the target branch's history only (its commits are pinned into `report`)."""
    details = req.details
    problems = [] if details.is_pull_request and details.status in ("open", "draft") else [
        f"#{report.pr} is {'a pull request' if details.is_pull_request else 'a discussion'} with status {details.status!r}"]
    if not problems:
        report.base, report.head, report.target, problems = req.commits()
    return report.check("pull request", problems, f"open, targets {req.branch}, based on its history")


def _added_components(safe: list[str], fetch: Callable[[str], Path],
                      validated: dict[str, tuple[Path, str]]) -> tuple[dict[str, Any], list[str]]:
    """The added components' headers (each downloaded and checked; the good ones into `validated`) and problems."""
    headers, problems = {}, []
    for path in (p for p in safe if p.startswith(f"{COMPONENTS_DIR}/")):
        local = fetch(path)
        data = local.read_bytes()
        info, found = component_problems(path, data)
        problems += found
        if info is not None:
            headers[path] = info
            validated[path] = (local, sha256_hex(data))
    return headers, problems


def _added_tasks(req: _PullRequest, safe: list[str], fetch: Callable[[str], Path], config: SystemConfig,
                 headers: Mapping[str, Any], existing: _ExistingHeaders, sizes: Mapping[str, int],
                 validated: dict[str, tuple[Path, str]]) -> tuple[list[TaskFile], list[str]]:
    """The added task files that pass (each into `validated`) and the problems of the others."""
    tasks, problems = [], []
    for rel in (p for p in safe if p.startswith(f"{TASKS_DIR}/")):
        local = fetch(rel)
        raw = local.read_bytes()
        tf, found = task_problems(rel, raw, config, added=headers, existing=existing, source=req.source_problem,
                                  sizes=sizes)
        problems += found
        if tf is not None and not found:
            tasks.append(tf)
            validated[rel] = (local, sha256_hex(raw))
    return tasks, problems


def _conflicts(req: _PullRequest, added: list[str], head: Mapping[str, Any], target: Mapping[str, Any]) -> list[str]:
    """Added files the target now holds with other content, and the conflicts the Hub reports."""
    conflicts = [f"{p} is on {req.branch} with other content" for p in added
                 if p in target and target[p].blob_id != head[p].blob_id]
    if isinstance(req.details.conflicting_files, list):
        conflicts += [f"conflicts with {req.branch}: {p}" for p in req.details.conflicting_files]
    elif req.details.conflicting_files is True:
        conflicts.append("the Hub reports conflicts")
    return conflicts


class _ExistingHeaders:
    """Headers of components the PR references but does not add, read from the Hub (cached per file)."""

    def __init__(self, req: _PullRequest, head: str, on_both: set[str]):
        self.req, self.head, self.on_both, self.seen = req, head, on_both, {}

    def __call__(self, filename: str) -> Header | None:
        if filename not in self.on_both:  # must be at the PR's head (the probe loads it) and on the target now
            return None
        if filename not in self.seen:
            meta = self.req.call(filename, self.req.api.parse_safetensors_file_metadata, self.req.repo_id, filename,
                                 revision=self.head)
            self.seen[filename] = Header((meta.metadata or {}).get("kind", ""),
                                         {k: tuple(t.shape) for k, t in meta.tensors.items()})
        return self.seen[filename]


def _system_problems(req: _PullRequest, target: str, target_tasks: list[str], added: list[TaskFile],
                     config: SystemConfig, fetch: Callable[..., Path]) -> list[str]:
    """Every task file on the target plus the added ones, through the schema and the repo-wide readers."""
    files: dict[str, TaskFile] = {}
    for t in sorted(target_tasks):
        rel = task_filename(t)
        try:
            files[t] = TaskFile.from_json(load_json(fetch(rel, target).read_bytes(), rel), rel)
        except Mu2hubError as e:
            return [f"{req.branch} already holds a task file its readers refuse ({e}); fix it before merging more"]
    files.update({tf.task: tf for tf in added})
    return system_problems(files, config, req.repo_id)


def _merge(req: _PullRequest, report: ValidationReport, validated: Mapping[str, tuple[Path, str]],
           target: Mapping[str, Any]) -> None:
    """Commit exactly the validated bytes onto the checked target head, then close the pull request."""
    from huggingface_hub import CommitOperationAdd

    now = req.call("PR head", req.api.list_repo_commits, req.repo_id, revision=f"refs/pr/{req.pr}")[0].commit_id
    if now != report.head:
        raise ValidationError(f"{req.repo_id} PR #{req.pr} moved from {report.head[:8]} to {now[:8]} during "
                              "validation; nothing was merged: run validate again")
    ops = []
    for path in report.added:
        if path in target:  # already on the target with this content (checked in `mergeable`)
            continue
        local, sha = validated[path]
        data = local.read_bytes()
        if sha256_hex(data) != sha:
            raise ValidationError(f"{path}: the local copy changed after it was checked; nothing was merged")
        ops.append(CommitOperationAdd(path, data))
    message = f"{one_line(req.details.title)} (#{req.pr})"
    description = f"Validated with `mu2hub validate` at refs/pr/{req.pr} = {report.head}:\n\n{md_fence(report.format())}"
    try:
        with hub_call(req.repo_id, f"merge commit on {req.branch}", nbytes=sum(len(op.path_or_fileobj) for op in ops)):
            info = req.api.create_commit(req.repo_id, ops, commit_message=message, commit_description=description,
                                         revision=req.branch, parent_commit=report.target)
    except HubRequestError as e:
        if e.status == 412:
            raise ValidationError(f"{req.repo_id}: {req.branch} moved past {report.target[:8]} during validation; "
                                  "nothing was merged: run validate again") from e
        raise
    report.merged, report.merge_commit = True, info.oid
    req.call("closing the PR", req.api.change_discussion_status, req.repo_id, req.pr, "closed",
             comment=f"Merged as {info.oid} (exactly the files validated at {report.head}).\n\n{description}")


def _probe_problems(repo_id: str, head: str, tasks: list[TaskFile], cache: str, token: Any) -> list[str]:
    from ..inference.task import load_task
    from ..inference.probe import check_probe
    from ..hub.store import HubStore

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
