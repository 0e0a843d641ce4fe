"""The demo Space's logic, importable and testable without launching a server (`spaces_app/app.py` is a thin front).

`SpaceSystem` opens one system (a local folder or a Hub repo pinned to one commit), reads every task file once
(small JSON), and loads a task's model only when it is first asked for. Models come from the same pinned
store, and `mu2hub.api` keeps one device copy per component id, so tasks that share a component share its
memory. `build_demo` wraps it in a Gradio page; `preload_lines` computes the Space's `preload_from_hub`.

Run `python -m mu2hub.space preload org/name [--task T ...] [--revision REV]` to print the front-matter lines.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import re
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from .figures import path_png
from .api import TaskModel, load_task, summarize
from .constants import CONFIG_NAME, component_filename, task_filename
from .data.registry import to_rgb_uint8
from .errors import Mu2hubError, TaskNotFoundError
from .format import TaskFile, distinct
from .store import LocalStore, open_store

#: Longest side an uploaded image is reduced to before preprocessing: far above any path's image size, so
#: predictions barely change, while a 10,000-pixel photo never becomes a multi-gigabyte float array.
MAX_SIDE = 1024
#: Refuse larger images outright (PIL's own decompression-bomb limit is 2x its 89M-pixel warning level).
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 180_000_000
TOP_K = 5
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------------
# Input images
# ---------------------------------------------------------------------------------------------------


def load_image(image: Any, *, max_side: int = MAX_SIDE) -> Image.Image:
    """Any upload (file path, PIL image or array) -> an RGB PIL image no larger than `max_side`.

    Why here and not in `TaskModel.preprocess`: the Space receives arbitrary files; a JPEG is decoded at a
    reduced scale (`draft`) and anything large is thumbnailed before the float pipeline sees it.

    Raises:
        ValueError: no image, an unreadable file, or one too large to decode safely (readable messages).
    """
    if image is None or (isinstance(image, str) and not image):
        raise ValueError("No image: upload an image (or pick an example) first.")
    opened = isinstance(image, (str, os.PathLike))
    if opened:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(image)
        except Image.DecompressionBombError as e:
            raise ValueError(f"The image is too large to decode safely ({e}).") from e
        except (OSError, ValueError) as e:
            raise ValueError(f"Could not read the upload as an image: {e}") from e
    elif isinstance(image, Image.Image):
        im = image
    else:
        try:
            im = Image.fromarray(to_rgb_uint8(np.asarray(image)))
        except (TypeError, ValueError) as e:
            raise ValueError(f"Not an image: {e}") from e
    try:
        return _fit(im, max_side, copy=not opened)
    except (OSError, ValueError) as e:
        raise ValueError(f"Could not decode the image: {e}") from e
    finally:
        if opened:
            im.close()


def _fit(im: Image.Image, max_side: int, *, copy: bool) -> Image.Image:
    w, h = im.size
    if w < 1 or h < 1:
        raise ValueError(f"The image is empty ({w}x{h} pixels).")
    if w * h > MAX_PIXELS:
        raise ValueError(f"The image is {w}x{h} pixels; the limit is {MAX_PIXELS:,} pixels.")
    if max(w, h) > max_side:
        if im.format == "JPEG":
            im.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale: no full-size buffer
        if im.mode not in ("1", "L", "LA", "P", "RGB", "RGBA"):
            im = Image.fromarray(to_rgb_uint8(im))
        elif copy:
            im = im.copy()  # thumbnail() works in place; never resize the caller's image
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return Image.fromarray(to_rgb_uint8(im))  # grayscale, palette, RGBA, 16-bit -> RGB uint8 (tiny ones included)


# ---------------------------------------------------------------------------------------------------
# The system behind the page
# ---------------------------------------------------------------------------------------------------


class SpaceSystem:
    """One system opened for the demo: task files read up front, models loaded lazily and once.

    Args:
        repo_or_dir (`str`): a Hub repo id or a local folder in the published layout.
        revision (`str`, *optional*): branch, tag or commit; resolved once, every task loads from that commit.
        tasks (`list[str]`, *optional*): the tasks to offer; defaults to every task in the repo.
        cache_dir, token, local_files_only: as in `mu2hub.from_pretrained`.

    Raises:
        `Mu2hubError`: the repo cannot be opened or has none of the tasks.
    """

    def __init__(self, repo_or_dir: str | os.PathLike, *, revision: str | None = None, tasks: Sequence[str] | None = None,
                 cache_dir: str | os.PathLike | None = None, token: str | bool | None = None, local_files_only: bool = False):
        self.repo_id = str(repo_or_dir)
        self.store = open_store(repo_or_dir, revision=revision, cache_dir=cache_dir, token=token,
                                local_files_only=local_files_only)
        self.revision: str | None = getattr(self.store, "commit", None)
        names = list(tasks) if tasks else self.store.list_tasks()
        if not names:
            raise Mu2hubError(f"{self.repo_id} has no tasks (no files under tasks/)")
        self.files: dict[str, TaskFile] = {t: self.store.read_task(t) for t in names}
        self.summary = summarize(self.files)
        self._models: dict[str, TaskModel] = {}
        self._lock = threading.Lock()
        self._figures: dict[str, Image.Image] = {}

    @property
    def tasks(self) -> list[str]:
        return list(self.files)

    @property
    def loaded(self) -> dict[str, TaskModel]:
        """The models loaded so far (a copy)."""
        return dict(self._models)

    def model(self, task: str) -> TaskModel:
        """The task's model, loaded on first use; a task removed from the repo since start-up raises with the list."""
        if task not in self.files:
            raise TaskNotFoundError(task, self.tasks, self.repo_id)
        hit = self._models.get(task)
        if hit is not None:
            return hit
        with self._lock:  # one load per task even when several requests arrive together
            if task not in self._models:
                try:
                    self._models[task] = load_task(self.store, task, repo_id=self.repo_id, revision=self.revision)
                except TaskNotFoundError as e:  # removed from the repo (folder) since start-up
                    raise TaskNotFoundError(task, e.available, self.repo_id) from None
            return self._models[task]

    def classify(self, image: Any, task: str, *, top_k: int = TOP_K) -> dict[str, float]:
        """`{label: probability}` for the top-k labels (what `gr.Label` shows)."""
        im = load_image(image)
        return {p["label"]: p["score"] for p in self.model(task).predict(im, top_k=top_k)}

    def classify_all(self, image: Any, *, top_k: int = TOP_K) -> list[list[Any]]:
        """One row per task: task, top label, its probability, the top-k as text; a failing task reports why."""
        im = load_image(image)
        rows = []
        for task in self.tasks:
            try:
                preds = self.model(task).predict(im, top_k=top_k)
            except (Mu2hubError, OSError) as e:
                rows.append([task, "(unavailable)", None, str(e)])
                continue
            rows.append([task, preds[0]["label"], round(preds[0]["score"], 4),
                         ", ".join(f"{p['label']} {p['score']:.2f}" for p in preds)])
        return rows

    # -- what the page shows about a task -----------------------------------------------------------
    def task_markdown(self, task: str) -> str:
        """Accuracy, activated parameters, download size and sharing, as Markdown."""
        if task not in self.files:
            return f"**{task}** is not in this system. Tasks: {', '.join(self.tasks)}"
        tf, s = self.files[task], self.summary["tasks"][task]
        acc = tf.metrics.get("test_accuracy")
        chance = tf.metrics.get("chance")
        acc_text = "not recorded" if acc is None else f"{acc:.3f}" + (f" (chance {chance:.3f})" if chance is not None else "")
        ids = distinct(c.id for c in tf.components)
        per_task = {u: sum(1 for cid in ids if u in self.summary["users"][cid]) for u in self.tasks if u != task}
        shared = ", ".join(f"{u} ({n})" for u, n in sorted(per_task.items(), key=lambda kv: -kv[1]) if n)
        lines = [
            f"### {task}",
            f"- **test accuracy**: {acc_text}",
            f"- **activated parameters**: {tf.activated_params:,} ({s['share_of_system']:.0%} of the system's "
            f"{self.summary['params']:,})",
            f"- **download**: {tf.download_bytes / 1e6:.2f} MB in {len(ids)} components",
            f"- **shares** {s['shared_components']} of {len(ids)} components" + (f" with: {shared}" if shared else ""),
            f"- {len(tf.labels)} classes, {tf.image_size}x{tf.image_size} input, {tf.num_layers} layers",
        ]
        return "\n".join(lines)

    def system_markdown(self) -> str:
        rev = f" @ `{self.revision[:12]}`" if self.revision else ""
        return (f"**{self.repo_id}**{rev}: {len(self.tasks)} tasks, {self.summary['components']} components, "
                f"{self.summary['params']:,} parameters ({self.summary['bytes'] / 1e6:.2f} MB).")

    def figure(self, task: str) -> Image.Image:
        """The tasks × slots grid with `task`'s path highlighted (drawn once per task)."""
        if task not in self._figures:
            self._figures[task] = Image.open(io.BytesIO(path_png(self.files, task))).convert("RGB")
        return self._figures[task]

    # -- memory -------------------------------------------------------------------------------------
    def resident_param_bytes(self) -> int:
        """Bytes of distinct device buffers behind every loaded model's parameters (shared ones counted once)."""
        seen: dict[Any, int] = {}
        for m in list(self._models.values()):
            for tensors in m.params.values():
                for arr in tensors.values():
                    try:
                        key = ("ptr", arr.unsafe_buffer_pointer())
                    except Exception:  # a backend without buffer pointers: the array object itself
                        key = ("id", id(arr))
                    seen[key] = int(arr.nbytes)
        return sum(seen.values())

    def component_param_bytes(self, tasks: Iterable[str] | None = None) -> int:
        """float32 bytes of the distinct components the tasks use (what loading them all should occupy)."""
        params = {c.id: c.params for t in (tasks or self.tasks) for c in self.files[t].components}
        return 4 * sum(params.values())


# ---------------------------------------------------------------------------------------------------
# The path figure
# ---------------------------------------------------------------------------------------------------

# ---------------------------------------------------------------------------------------------------
# Examples and preload lines
# ---------------------------------------------------------------------------------------------------


def registry_examples(tasks: Iterable[str], folder: str | os.PathLike, *, per_task: int = 2) -> dict[str, list[str]]:
    """PNG files of test images, different labels, for the tasks the data registry knows (others get none)."""
    from .data.registry import get_task, list_tasks as registered

    known = set(registered())
    out: dict[str, list[str]] = {}
    for task in tasks:
        if task not in known:
            continue
        try:
            test = get_task(task).test
        except Exception as e:  # e.g. scikit-learn missing for digits: the page still works, without examples
            warnings.warn(f"no example images for {task!r}: {e}")
            continue
        picks, labels = [], set()
        for i, y in enumerate(test.labels):
            if int(y) not in labels:
                picks.append(i)
                labels.add(int(y))
            if len(picks) == per_task:
                break
        d = Path(folder) / re.sub(r"[^A-Za-z0-9_.-]+", "_", task)
        d.mkdir(parents=True, exist_ok=True)
        out[task] = []
        for i in picks:
            path = d / f"{i}.png"
            Image.fromarray(test.images[i]).save(path)
            out[task].append(str(path))
    return out


def preload_lines(repo_id: str, tasks: Iterable[str] | None = None, revision: str | None = None, *,
                  folder: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                  token: str | bool | None = None) -> list[str]:
    """The Space's `preload_from_hub` entries: config, the tasks' files and exactly their components, pinned.

    Args:
        repo_id (`str`): the Hub repo the Space serves.
        tasks (`list[str]`, *optional*): the demo tasks; defaults to every task.
        revision (`str`, *optional*): branch, tag or commit; resolved to the commit sha written in the line.
        folder (*optional*): read the task files from this local copy instead of the Hub (before pushing);
            then `revision` is written as given and must be a 40-hex commit sha if given at all.

    Returns:
        `["<repo> config.json,tasks/a.json,components/.. <sha>", ...]`: one line for `repo_id`, one more per
        other repo a component's `source` points to.
    """
    if folder is not None:
        if revision is not None and not _COMMIT.match(revision):
            raise ValueError(f"revision {revision!r} must be a 40-hex commit sha when reading a local folder")
        store, commit = LocalStore(folder), revision
    else:
        store = open_store(repo_id, revision=revision, cache_dir=cache_dir, token=token)
        commit = getattr(store, "commit", None)
    names = list(tasks) if tasks else store.list_tasks()
    main = (repo_id, commit)
    wanted: dict[tuple[str, str | None], list[str]] = {main: [CONFIG_NAME] + [task_filename(t) for t in names]}
    for t in names:
        for c in store.read_task(t).components:
            key = (c.source.repo_id, c.source.revision) if c.source else main
            wanted.setdefault(key, []).append(component_filename(c.id))
    lines = []
    for (repo, rev), files in wanted.items():
        line = f"{repo} {','.join(distinct(files))}"
        lines.append(f"{line} {rev}" if rev else line)
    return lines


def parse_preload(readme: str | os.PathLike) -> tuple[str, list[str], str | None] | None:
    """(repo, tasks, revision) from the first `preload_from_hub` line of a Space README, or None.

    Why: the Space's README is the one place that pins what it serves; `app.py` reads it back so the
    files preloaded at build time are the ones loaded at run time.
    """
    from huggingface_hub import metadata_load

    meta = metadata_load(readme) or {}
    entries = meta.get("preload_from_hub") or []
    if not entries:
        return None
    parts = str(entries[0]).split()
    files = parts[1].split(",") if len(parts) > 1 else []
    tasks = [f[len("tasks/"):-len(".json")] for f in files if f.startswith("tasks/") and f.endswith(".json")]
    return parts[0], tasks, parts[2] if len(parts) > 2 else None


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------


def build_demo(repo_or_dir: str | os.PathLike, *, revision: str | None = None, local_files_only: bool = False,
               tasks: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None,
               token: str | bool | None = None, examples: Mapping[str, Sequence[str]] | None = None,
               title: str = "mu2hub: one system, many tasks") -> "gr.Blocks":
    """The Gradio page for a system: task picker, image + examples, top-5, all-tasks table, task card, path figure.

    Args:
        repo_or_dir, revision, tasks, cache_dir, token, local_files_only: as `SpaceSystem`.
        examples (`{task: [image files]}`, *optional*): defaults to test images from the data registry
            for the tasks it knows.

    Returns:
        `gr.Blocks`, with endpoints `/classify (image, task) -> label`, `/classify_all (image) -> table`,
        `/task_info (task) -> (markdown, figure)`; `demo.mu2hub_system` is the `SpaceSystem` behind it.
    """
    import gradio as gr

    system = SpaceSystem(repo_or_dir, revision=revision, tasks=tasks, cache_dir=cache_dir, token=token,
                         local_files_only=local_files_only)
    if examples is None:
        examples = registry_examples(system.tasks, tempfile.mkdtemp(prefix="mu2hub-space-"))
    rows = [[path, t] for t in system.tasks for path in examples.get(t, [])]

    def guarded(fn):
        """Turn our readable errors into a message in the page; the server keeps serving."""
        def run(*args):
            try:
                return fn(*args)
            except TaskNotFoundError as e:
                raise gr.Error(f"Task {e.task!r} is no longer available in {system.repo_id}. "
                               f"Available tasks: {', '.join(e.available) or '(none)'}") from None
            except (Mu2hubError, ValueError, OSError) as e:  # bad input, missing or corrupt files
                raise gr.Error(str(e)) from None
        return functools.wraps(fn)(run)

    @guarded
    def classify(image, task):
        return system.classify(image, task)

    @guarded
    def classify_all(image):
        return system.classify_all(image)

    def task_info(task):
        if task not in system.files:
            return system.task_markdown(task), None
        return system.task_markdown(task), system.figure(task)

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"# {title}\n{system.system_markdown()} Pick a task and an image: the task's path through "
                    "the shared system classifies it; models load on first use and share their common components.")
        with gr.Row():
            with gr.Column(scale=1):
                task = gr.Dropdown(system.tasks, value=system.tasks[0], label="Task")
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=260)
                with gr.Row():
                    run_one = gr.Button("Classify", variant="primary")
                    run_all = gr.Button("All tasks")
                if rows:
                    gr.Examples(rows, inputs=[image, task], cache_examples=False, examples_per_page=12,
                                label="Examples (image, task)")
            with gr.Column(scale=1):
                label = gr.Label(num_top_classes=TOP_K, label="Top 5")
                table = gr.Dataframe(headers=["task", "prediction", "probability", f"top {TOP_K}"],
                                     label="All tasks", interactive=False, wrap=True,
                                     column_widths=["22%", "20%", "14%", "44%"])
        info = gr.Markdown(system.task_markdown(system.tasks[0]))
        figure = gr.Image(value=system.figure(system.tasks[0]), label="Path through the system", type="pil",
                          interactive=False)
        run_one.click(classify, [image, task], label, api_name="classify")
        run_all.click(classify_all, [image], table, api_name="classify_all")
        task.change(task_info, [task], [info, figure], api_name="task_info")
    demo.mu2hub_system = system
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mu2hub.space", description="Tools for the demo Space.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preload", help="print the preload_from_hub front matter for spaces_app/README.md")
    p.add_argument("repo_id")
    p.add_argument("--task", action="append", dest="tasks", help="a demo task (repeat); default: all")
    p.add_argument("--revision", help="branch, tag or commit; written as the resolved commit sha")
    p.add_argument("--folder", help="read task files from a local copy of the repo instead of the Hub")
    a = ap.parse_args(argv)
    lines = preload_lines(a.repo_id, a.tasks, a.revision, folder=a.folder)
    print("preload_from_hub:\n" + "\n".join(f'  - "{line}"' for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
