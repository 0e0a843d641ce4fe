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
        super().__init__(f"no task {task!r}{where}; available tasks: {shown}")

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
