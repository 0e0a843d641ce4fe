"""One error hierarchy: catch `Mu2hubError` for all of ours; each class also subclasses the builtin users expect."""

from __future__ import annotations


class Mu2hubError(Exception):
    """Base class of every error mu2hub raises on purpose."""


class FormatError(Mu2hubError, ValueError):
    """A JSON or safetensors file does not follow docs/FORMAT.md.

    Message: `tasks/a.json: 'path.components[3].id' must be 64 lowercase hex characters, got 'xyz'`.
    """

    def __init__(self, message: str, *, path: str | None = None):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


class FormatVersionError(FormatError):
    """The file was written by a newer (or unknown) format version."""


class UnsafePathError(FormatError):
    """A file name in a repo is absolute or escapes its folder (`..`)."""


class TaskNotFoundError(Mu2hubError, KeyError):
    """The repo has no such task. Message lists the tasks it has."""

    def __init__(self, task: str, available: list[str], repo_id: str | None = None):
        self.task, self.available, self.repo_id = task, sorted(available), repo_id
        where = f" in {repo_id}" if repo_id else ""
        shown = ", ".join(self.available) if self.available else "(none)"
        import difflib

        folded = {name.casefold(): name for name in self.available}  # `DIGITS` -> 'digits'
        close = [folded[m] for m in difflib.get_close_matches(str(task).casefold(), list(folded), n=1, cutoff=0.5)]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        super().__init__(f"no task {task!r}{where}{hint}; available tasks: {shown}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class ComponentIntegrityError(Mu2hubError, OSError):
    """A component file's sha256 does not match the id the task file records (corrupt or truncated).

    Message: `components/ab/ab12….safetensors is corrupt or truncated: expected sha256 ab12…, got 9f0e…
    (4,096 of 16,384 bytes); retry with force_download=True`.
    """

    def __init__(self, filename: str, expected: str, actual: str, detail: str = ""):
        self.filename, self.expected_sha256, self.actual_sha256 = filename, expected, actual
        super().__init__(
            f"{filename} is corrupt or truncated: expected sha256 {expected}, got {actual}{detail}; "
            "retry with force_download=True"
        )

    def __str__(self) -> str:  # OSError would format from errno/filename instead
        return self.args[0]


class LocalFilesMissingError(Mu2hubError, FileNotFoundError):
    """Offline (`local_files_only=True` or `HF_HUB_OFFLINE=1`) and the cache lacks files. Lists them."""

    def __init__(self, repo_id: str, missing: list[str]):
        self.repo_id, self.missing = repo_id, list(missing)
        listing = "\n".join(f"  - {m}" for m in self.missing)
        super().__init__(
            f"{repo_id}: {len(self.missing)} file(s) are not in the local cache and downloads are disabled "
            f"(local_files_only=True or HF_HUB_OFFLINE=1):\n{listing}\n"
            "Connect and call again without local_files_only (or unset HF_HUB_OFFLINE) to fetch them."
        )


class ShapeMismatchError(FormatError):
    """A component's tensors do not fit the slot of the path that names it."""


class IncompatibleTaskError(Mu2hubError, ValueError):
    """An operation that the task's path cannot support (e.g. exporting adapters to transformers)."""


class ExportError(Mu2hubError, ValueError):
    """The exporter refuses its input before touching the target: nothing was written or uploaded.

    Message: `runs/q/system: task 'digits' has no metrics.test_accuracy (every published task must report a
    held-out test accuracy); finish the task's evolution or pass --tasks without it`.
    """


class NotAMu2hubRepoError(ExportError):
    """The export target already holds something that is not a mu2hub system; it is left untouched.

    Message: `org/bert: not a mu2hub repo (config.json has library_name='transformers'); export to a new repo
    or an empty folder`.
    """

    def __init__(self, target: str, reason: str):
        self.target = target
        super().__init__(f"{target}: not a mu2hub repo ({reason}); export to a new repo or an empty folder")


class PushInterruptedError(Mu2hubError, RuntimeError):
    """A push stopped part-way. Components go first and task files last, so the target still shows the old or
    the new state of every task; running the same export again finishes it (uploaded files are skipped).
    """

    def __init__(self, target: str, stage: str, committed: int, cause: BaseException):
        self.target, self.stage, self.committed = target, stage, committed
        super().__init__(
            f"{target}: push interrupted during the {stage} commit after {committed} successful commit(s): {cause}. "
            "Every task file there still names components that exist (old or new state); "
            "run the same export again to finish — files already uploaded are skipped."
        )


class TaskExistsError(Mu2hubError, ValueError):
    """`add_task` was asked for a task name the repo already has, without `revisit=True`.

    Message: `org/system already has task 'digits' (test accuracy 0.9700, score 0.9512); pick another name, or
    pass revisit=True to evolve it again (the result must beat the existing score)`.
    """

    def __init__(self, repo_id: str, task: str, detail: str = ""):
        self.repo_id, self.task = repo_id, task
        super().__init__(f"{repo_id} already has task {task!r}{detail}; pick another name, or pass revisit=True to "
                         "evolve it again (the result must beat the existing score)")


class ByteCapError(Mu2hubError, ValueError):
    """No candidate parent of a new task fits the download cap (`max_bytes`); nothing was downloaded.

    Message: `max_bytes=1,000 B is too small for any parent: the smallest parent (digits) needs 41,344 B; raise
    max_bytes to at least that`.
    """

    def __init__(self, cap: int, smallest: int, parent: str, detail: str = ""):
        self.cap, self.smallest, self.parent = cap, smallest, parent
        super().__init__(f"max_bytes={cap:,} B is too small{detail}: the smallest parent ({parent}) needs "
                         f"{smallest:,} B; raise max_bytes to at least that")


class RevisitNotBetterError(Mu2hubError, RuntimeError):
    """A revisit (`add_task(..., revisit=True)`) did not beat the published path's score: nothing to push."""


class ContributionError(Mu2hubError, ValueError):
    """A contribution cannot be pushed as asked (e.g. no new files, or the target is not the source repo)."""


# --- everyday Hub use (issue 13) ---------------------------------------------------------------------


class TaskRequiredError(Mu2hubError, TypeError):
    """`from_pretrained` was called without saying which task(s) to load. Lists the tasks there are.

    Message: `org/system holds 5 tasks; say which to load: task="digits" (one task) or tasks=[...] / tasks="all"
    (a MultiTaskModel). Tasks: digits, shapes/label_scale, ...`.
    """

    def __init__(self, repo_id: str, available: list[str]):
        self.repo_id, self.available = repo_id, sorted(available)
        shown = ", ".join(self.available) if self.available else "(none)"
        super().__init__(f"{repo_id} holds {len(self.available)} task(s); say which to load: task=\"{self.available[0] if self.available else 'NAME'}\" "
                         f"(one task) or tasks=[...] / tasks=\"all\" (a MultiTaskModel). Tasks: {shown}")


class BaselineNotBeatenError(Mu2hubError, ValueError):
    """An evolved task scored below the same ViT trained from scratch; `push_task` refuses unless `force=True`.

    Message: `my_task: the evolved path's test accuracy 0.7333 is below the same ViT trained from scratch (0.9000,
    same 128 steps): it does not help the system. Not pushed; pass force=True to push anyway` (the CLI names the
    command: `mu2hub push-task WORKDIR --force`).
    """

    def __init__(self, task: str, accuracy: float, baseline: float, steps: int, *,
                 against: str = "the same ViT trained from scratch", retry: str = "pass force=True"):
        self.task, self.accuracy, self.baseline, self.steps, self.against = task, accuracy, baseline, steps, against
        super().__init__(f"{task}: the evolved path's test accuracy {accuracy:.4f} is below {against} "
                         f"({baseline:.4f}, same {steps} steps): it does not help the system. Not pushed; "
                         f"{retry} to push anyway")


class PartialListingWarning(UserWarning):
    """Offline, a repo's task listing could only come from the cache, which may hold fewer tasks than the repo."""


class InputNotFoundError(Mu2hubError, FileNotFoundError):
    """An input given to `predict` is neither a file, a folder, nor a dataset (`hf:<id>`, `imagefolder:<folder>`)."""

    def __init__(self, spec: str, reason: str = "no such file or folder (datasets are named hf:<id> or imagefolder:<folder>)"):
        self.path = spec
        super().__init__(f"{spec}: {reason}")

    def __str__(self) -> str:
        return self.args[0]


class RootMismatchError(Mu2hubError, ValueError):
    """A config's `root` disagrees with the checkpoint `root.init` names (dimensions, depth, image size).

    Message: `config root disagrees with timm:timm/vit_large_patch16_224.augreg_in21k: layer_norm_eps: config says
    1e-12, checkpoint has 1e-06 (drop these keys from `root` to take the checkpoint's values)`.
    """


class DataSourceError(Mu2hubError, FileNotFoundError):
    """A task's data (or the source the reference validates it on, e.g. `cifar10_1`) cannot be opened.

    Message: `task 'cifar10' (validation = cifar10_1/test): cifar10_1 (tfds:cifar10_1/v6:1.*.*) is only in TFDS: pip
    install 'mu2hub[tfds]' and prepare it in a data_dir …, or pass sources={'cifar10_1': '<save_to_disk folder>'}`.
    """

    def __str__(self) -> str:  # FileNotFoundError would format from errno/filename instead
        return self.args[0]


class LabelMismatchError(Mu2hubError, ValueError):
    """A dataset's label column does not match the task table (missing, or another number of classes)."""


class VaryingImageSizesError(Mu2hubError, ValueError):
    """A dataset's images have different sizes and no size to decode them to was given (`decode_size=`)."""


class ClusterError(Mu2hubError, RuntimeError):
    """A multi-host training job cannot go on: a process stopped answering, or the job never formed.

    Message: `process 1 of 2 stopped answering while exchanging generation 3's children (Gloo: connection closed by
    peer); every process stops: restart the whole job with --resume`.
    """


class CoordinatorUnreachableError(ClusterError, ConnectionError):
    """A process of a multi-host job could not reach the coordinator (process 0) in time; nothing was written.

    Message: `coordinator 10.0.0.2:1234 did not answer within 300 s: start process 0 first (it hosts the coordinator),
    and check the address, the port and the firewall`.
    """

    def __str__(self) -> str:  # ConnectionError would format from errno instead
        return self.args[0]


class JobMismatchError(Mu2hubError, ValueError):
    """The processes of one job, or the job and its run directory, disagree; refused before any state is written.

    Message: `process 1 was started with another config than process 0 (differs in: generations); every process must
    run the same command`, or `agents/main.json was written by a job of 2 processes × 2 devices (child_per_device);
    this one is 1 process × 4 devices: resume with that layout or use a new --workdir`.
    """


class SharedStorageError(Mu2hubError, OSError):
    """The run directory's filesystem lacks what this job needs (docs/TRAINING.md, "Run directory on shared storage").

    Message: `runs/x: file locks do not exclude each other here (a second lock on the same file succeeded), and
    concurrent agents (--agent b) need them for the compare-and-swap of task files; run one agent at a time, or put
    the run directory on a filesystem with working locks (local disk, NFSv4)`.
    """

    def __str__(self) -> str:  # OSError would format from errno/filename instead
        return self.args[0]


class RunClaimedError(Mu2hubError, RuntimeError):
    """Another live process is evolving this run directory (`mu2hub.evolution.claim`); `holder` is its claim.

    Message: `runs/x is being evolved by agent 'main' on host node-3 (pid 4121, since 2026-12-07 17:02:11); agent
    'main' cannot write there at the same time. Wait for it to finish, or stop it: a killed holder's claim is taken
    over on the next start`.
    """

    def __init__(self, message: str, *, holder: dict | None = None):
        self.holder = holder or {}
        super().__init__(message)


class HubRequestError(Mu2hubError, OSError):
    """A Hub request failed; carries the repo, the file (or API call) and the HTTP status when there was one.

    Message: `org/system: tasks/digits.json: HTTP 403 from the Hub: Forbidden`.
    """

    def __init__(self, repo_id: str, what: str, reason: str, *, status: int | None = None):
        self.repo_id, self.filename, self.status = repo_id, what, status
        super().__init__(f"{repo_id}: {what}: {reason}")

    def __str__(self) -> str:  # OSError would format from errno/filename instead
        return self.args[0]


class RepoNotFoundError(HubRequestError):
    """No such repo or revision on the Hub (or it is private / gated and the token does not grant access).

    Message: `org/missing: config.json: repository not found (check the repo id; if it is private, pass token=...
    or run `hf auth login`)`.
    """


class RemoteFileNotFoundError(HubRequestError, FileNotFoundError):
    """The repo exists at that revision but does not have the file."""


class HubUnavailableError(HubRequestError, ConnectionError):
    """The Hub did not answer usably: connection refused or cut, a 5xx / 429 after retries, an incomplete body.

    Message: `org/system: components/ab/ab12….safetensors: the connection was cut (RemoteProtocolError: ...);
    check your connection and retry (files already downloaded are kept)`.
    """


class DownloadTimeoutError(HubUnavailableError, TimeoutError):
    """A request stalled past its timeout, or one file's download ran past its deadline (a stalled or trickling
    server). Message names the file and the limit, and the setting that changes it (`MU2HUB_DOWNLOAD_DEADLINE`).
    """


class InvalidRepoIdError(Mu2hubError, ValueError):
    """Neither an existing local folder nor a valid Hub repo id (`org/name`)."""


class LocalFolderNotFoundError(InvalidRepoIdError, FileNotFoundError):
    """A path that can only be a local folder (`./x`, `/abs`, `a/b/c`) does not exist.

    Message: `./no/such/dir: no such folder (neither a local folder nor a valid Hub repo id). Pass an existing folder
    in the mu2hub layout, or a Hub repo id such as org/name`.
    """

    def __init__(self, path: str):
        self.path = path
        super().__init__(f"{path}: no such folder (neither a local folder nor a valid Hub repo id). Pass an existing "
                         "folder in the mu2hub layout, or a Hub repo id such as org/name")

    def __str__(self) -> str:  # FileNotFoundError would format from errno/filename instead
        return self.args[0]


class ImageInputError(Mu2hubError, ValueError):
    """An input image cannot be classified as given: empty, too large, non-finite, wrong dtype, range or rank.

    Message: `image 2: float images must lie in [0, 1]; got float32 in [0.0, 255.0] (cast 0-255 data to uint8 first)`.
    """


class CorruptImageError(ImageInputError, OSError):
    """An image file cannot be decoded (truncated, not an image, a decompression bomb); names the file.

    Message: `shapes/train/small/12.png: cannot decode the image (Truncated File Read); pass skip_corrupt=True
    (--skip-corrupt-images) to leave such files out`.
    """

    def __init__(self, filename: str, reason: str, hint: str = ""):
        self.filename, self.reason = filename, reason
        super().__init__(f"{filename}: cannot decode the image ({reason}){hint}")

    def __str__(self) -> str:
        return self.args[0]


class ValidationError(Mu2hubError, RuntimeError):
    """`validate` could not finish, or the merge it was asked for could not land exactly what it checked
    (e.g. main or the pull request moved during validation). Nothing was merged.
    """


class InvalidSettingError(Mu2hubError, ValueError):
    """An environment setting mu2hub reads (e.g. `MU2HUB_DOWNLOAD_DEADLINE`) has an unusable value."""

    def __init__(self, name: str, value: object):
        self.name = name
        super().__init__(f"{name}={value!r} is not a positive number")


class ComponentMissingError(Mu2hubError, FileNotFoundError):
    """A task file names component files the folder does not have.

    Message: `runs/q/system: 2 component file(s) named by its task files are missing: components/ab/ab12….safetensors, …`.
    """

    def __init__(self, repo: str, missing: list[str]):
        self.repo_id, self.missing = repo, list(missing)
        super().__init__(f"{repo}: {len(self.missing)} component file(s) named by its task files are missing: "
                         + ", ".join(self.missing))

    def __str__(self) -> str:
        return self.args[0]


class ArgumentError(Mu2hubError, ValueError):
    """Arguments that contradict each other or name nothing usable; raised before any I/O."""


class DataError(Mu2hubError, ValueError):
    """Training or evaluation data that cannot make a task: fewer than 2 classes, no label column, an empty split.

    Message: `imagefolder:shapes/: found no ClassLabel columns; columns are {'image': Image, 'caption': Value}; pass
    label_column=...`.
    """


class StreamReadError(Mu2hubError, ValueError):
    """An example of a streamed split (`mu2hub.data.stream`) could not be read or decoded while training ran.

    Message: `cifar10 train: example 4817 cannot be read: UnidentifiedImageError: cannot identify image file …`.
    """


class CompilationCacheError(Mu2hubError, PermissionError):
    """The compilation cache folder chosen cannot be used safely (JAX executes what it loads from there).

    Message: `compilation cache /shared/xla: others may write it (mode 0777); `chmod go-w /shared/xla` makes it
    private (or choose another folder with MU2HUB_COMPILATION_CACHE, or turn the cache off with
    MU2HUB_COMPILATION_CACHE=0)`.
    """

    def __init__(self, folder: object, reason: str):
        self.path = str(folder)
        super().__init__(f"compilation cache {folder}: {reason} (choose another folder with MU2HUB_COMPILATION_CACHE, "
                         "or turn the cache off with MU2HUB_COMPILATION_CACHE=0)")

    def __str__(self) -> str:  # PermissionError would format from errno/filename instead
        return self.args[0]


class CompilationCacheWarning(UserWarning):
    """A compilation cache entry was ignored (damaged or foreign) or could not be written; the run goes on."""


class MissingExtraError(Mu2hubError, ImportError):
    """An optional part of mu2hub is needed and its packages are not installed; names the extra that adds them
    (`mu2hub.utils.extras`: the one table of which extra installs what).

    Message: `to_transformers needs transformers, which the base install leaves out: pip install 'mu2hub[interop]'`.
    """

    def __init__(self, module: str, extra: str, purpose: str):
        self.module, self.extra, self.purpose = module, extra, purpose
        super().__init__(f"{purpose} needs {module}, which the base install leaves out: pip install 'mu2hub[{extra}]'",
                         name=module)
