"""The demo Space's logic, importable and testable without launching a server (`spaces_app/app.py` is a thin front).

`SpaceSystem` opens one system (a local folder or a Hub repo pinned to one commit) as a lazy `MultiTaskModel`:
every task file is read once (small JSON), a task's model loads when it is first asked for, and tasks that share a
component share its memory. `build_demo` wraps it in a Gradio page laid out answer-first: task, image and prediction
on top, the task card and its path through the system beside them, compact examples and the all-tasks table below.
`preload_lines` / `write_preload` compute and write the Space's `preload_from_hub`.

Run `python -m mu2hub.space preload org/name [--task T ...] [--revision REV] [--write spaces_app/README.md]`.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from PIL import Image

from .publishing.card import display_name
from .constants import CONFIG_NAME, DEFAULT_TOP_K, component_filename, task_filename
from .errors import Mu2hubError, TaskNotFoundError
from .publishing.figures import path_png
from .format.system import distinct
from .data.images import load_image
from .hub.metadata import stream_order, summarize
from .inference.multitask import MultiTaskModel
from .hub.store import LocalStore, open_store
from .utils.atomic import atomic_write

TOP_K = DEFAULT_TOP_K
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
#: Column headers of the all-tasks table: class names such as "0.9" sit under "predicted class", quoted, never
#: next to a bare number that could be read as their score.
TABLE_HEADERS = ["task", "predicted class", "probability", f"top {TOP_K}: \u201cclass\u201d probability"]


def quoted(label: str) -> str:
    """A class name as the page shows it: in quotes, so `0.9` (a scale class) reads as a name, not a score."""
    return f"\u201c{label}\u201d"


# ---------------------------------------------------------------------------------------------------
# The system behind the page
# ---------------------------------------------------------------------------------------------------


class SpaceSystem:
    """One system opened for the demo: task files read up front, models loaded lazily and once.

    Args:
        repo_or_dir (`str`): a Hub repo id or a local folder in the published layout.
        revision (`str`, *optional*): branch, tag or commit; resolved once, every task loads from that commit.
        tasks (`list[str]`, *optional*): the tasks to offer; defaults to every task in the repo, in stream order.
        cache_dir, token, local_files_only: as in `mu2hub.from_pretrained`.

    Raises:
        `Mu2hubError`: the repo cannot be opened or has none of the tasks.
    """

    def __init__(self, repo_or_dir: str | os.PathLike, *, revision: str | None = None, tasks: Sequence[str] | None = None,
                 cache_dir: str | os.PathLike | None = None, token: str | bool | None = None, local_files_only: bool = False):
        self.repo_id = str(repo_or_dir)
        store = open_store(repo_or_dir, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        self.revision: str | None = getattr(store, "commit", None)
        # what the header calls it: the repo id, or for a local folder the run's name (config.json), never a path
        folder_name = store.read_config().name if isinstance(store, LocalStore) else ""
        self.name = display_name(folder_name or (Path(self.repo_id).name if isinstance(store, LocalStore) else self.repo_id))
        names = list(tasks) if tasks else store.list_tasks()
        if not names:
            raise Mu2hubError(f"{self.repo_id} has no tasks (no files under tasks/)")
        files = {t: store.read_task(t) for t in names}
        if not tasks:
            files = {t: files[t] for t in stream_order(files)}  # rows as in the card's system figure
        self.models = MultiTaskModel(store, files, repo_id=self.repo_id, revision=self.revision, lazy=True)
        self.files = self.models.files
        self.summary = summarize(self.files)
        self._figures: dict[str, Image.Image] = {}

    @property
    def tasks(self) -> list[str]:
        return self.models.tasks

    @property
    def loaded(self) -> dict[str, Any]:
        """The models loaded so far (a copy)."""
        return self.models.loaded

    def model(self, task: str):
        """The task's `TaskModel`, loaded on first use; a task removed from the repo since start-up raises with the list."""
        return self.models[task]

    def classify(self, image: Any, task: str, *, top_k: int = TOP_K) -> dict[str, float]:
        """`{label: probability}` for the top-k labels (what `gr.Label` shows)."""
        im = load_image(image)
        return {p["label"]: p["score"] for p in self.models.predict(im, task=task, top_k=top_k)}

    def classify_all(self, image: Any, *, top_k: int = TOP_K) -> list[list[Any]]:
        """One row per task: task, top class (quoted), its probability, the top-k; a failing task reports why."""
        im = load_image(image)
        rows = []
        for task in self.tasks:
            try:
                preds = self.models.predict(im, task=task, top_k=top_k)
            except (Mu2hubError, OSError) as e:
                rows.append([task, "(unavailable)", None, str(e)])
                continue
            rows.append([task, quoted(preds[0]["label"]), round(preds[0]["score"], 4),
                         ", ".join(f"{quoted(p['label'])} {p['score']:.2f}" for p in preds)])
        return rows

    # -- what the page shows about a task -----------------------------------------------------------
    def task_markdown(self, task: str) -> str:
        """Accuracy, activated parameters, download size and sharing, as compact Markdown."""
        if task not in self.files:
            return f"**{task}** is not in this system. Tasks: {', '.join(self.tasks)}"
        tf, s = self.files[task], self.summary["tasks"][task]
        acc, chance, n = (tf.metrics.get(k) for k in ("test_accuracy", "chance", "num_test_examples"))
        acc_text = "not recorded" if acc is None else f"{acc:.3f}" + (f" on {n:,} test images" if isinstance(n, int) else "") + (
            f" (chance {chance:.3f})" if chance is not None else "")
        ids = distinct(c.id for c in tf.components)
        per_task = {u: sum(1 for cid in ids if u in self.summary["users"][cid]) for u in self.tasks if u != task}
        shared = ", ".join(f"{u} ({k})" for u, k in sorted(per_task.items(), key=lambda kv: -kv[1]) if k)
        return "\n".join([
            f"### {task}",
            f"**test accuracy** {acc_text}  ",
            f"**activated parameters** {tf.activated_params:,} ({s['share_of_system']:.0%} of the system's "
            f"{self.summary['params']:,}) · **download** {tf.download_bytes / 1e6:.2f} MB in {len(ids)} components  ",
            f"**shares** {s['shared_components']} of {len(ids)} components" + (f" with: {shared}" if shared else "") + "  ",
            f"{len(tf.labels)} classes, {tf.image_size}x{tf.image_size} input, {tf.num_layers} layers",
        ])

    def system_markdown(self) -> str:
        rev = f" @ `{self.revision[:12]}`" if self.revision else ""
        return (f"**{self.name}**{rev}: {len(self.tasks)} tasks, {self.summary['components']} components, "
                f"{self.summary['params']:,} parameters ({self.summary['bytes'] / 1e6:.2f} MB).")

    def figure(self, task: str) -> Image.Image:
        """The system picture with `task`'s path picked out (drawn once per task)."""
        if task not in self._figures:
            self._figures[task] = Image.open(io.BytesIO(path_png(self.files, task))).convert("RGB")
        return self._figures[task]

    # -- memory -------------------------------------------------------------------------------------
    def resident_param_bytes(self) -> int:
        """Bytes of distinct device buffers behind every loaded model's parameters (shared ones counted once)."""
        return self.models.resident_bytes()

    def component_param_bytes(self, tasks: Iterable[str] | None = None) -> int:
        """float32 bytes of the distinct components the tasks use (what loading them all should occupy)."""
        return self.models.component_bytes(tasks)


# ---------------------------------------------------------------------------------------------------
# Examples and preload lines
# ---------------------------------------------------------------------------------------------------


def registry_examples(tasks: Iterable[str], folder: str | os.PathLike, *, per_task: int = 2) -> dict[str, list[tuple[str, str]]]:
    """`{task: [(PNG file, its class name)]}`: test images of different classes, for the tasks the data registry
    knows (others get none)."""
    from .data.registry import get_task, list_data_tasks as registered

    known = set(registered())
    out: dict[str, list[tuple[str, str]]] = {}
    for task in tasks:
        if task not in known:
            continue
        try:
            data = get_task(task)
        except Exception as e:  # e.g. scikit-learn missing for digits: the page still works, without examples
            warnings.warn(f"no example images for {task!r}: {e}")
            continue
        picks, labels = [], set()
        for i, y in enumerate(data.test.labels):
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
            Image.fromarray(data.test.images[i]).save(path)
            out[task].append((str(path), data.labels[int(data.test.labels[i])]))
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


def write_preload(readme: str | os.PathLike, lines: Sequence[str]) -> bool:
    """Replace the `preload_from_hub` list in a Space README's front matter with `lines` (atomically).

    Everything else in the file (other keys, comments, the page) is kept as it is. Returns whether it changed.

    Raises:
        `Mu2hubError`: the file has no front matter or no `preload_from_hub:` key in it.
    """
    path = Path(readme)
    text = path.read_text()
    m = re.match(r"^---\n(.*?\n)---\n", text, re.S)
    if not m:
        raise Mu2hubError(f"{path}: no YAML front matter (--- ... ---) to write preload_from_hub into")
    front = m.group(1)
    key = re.search(r"^preload_from_hub:[^\n]*\n((?:[ \t]+-[^\n]*\n)*)", front, re.M)
    if not key:
        raise Mu2hubError(f"{path}: the front matter has no preload_from_hub: key")
    block = "preload_from_hub:\n" + "".join(f'  - "{line}"\n' for line in lines)
    new = text[:m.start(1)] + front[:key.start()] + block + front[key.end():] + text[m.end(1):]
    if new == text:
        return False
    atomic_write(path, new.encode())
    return True


# ---------------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------------

#: Page styling (passed to `launch(css=...)`, Gradio 6): the table's numeric column never wraps its header.
CSS = """
#mu2hub-all-tasks th { white-space: nowrap; }
#mu2hub-task-card h3 { margin: 0 0 4px 0; }
"""


def _example_rows(system: SpaceSystem, examples: Mapping[str, Sequence[Any]]) -> tuple[list[list[str]], list[str]]:
    """`gr.Examples` rows `[image, task]` in task order, and their captions (`task: "caption"`)."""
    rows, captions = [], []
    for t in system.tasks:
        for ex in examples.get(t, []):
            path, caption = ex if isinstance(ex, (tuple, list)) else (ex, Path(ex).stem)
            rows.append([path, t])
            captions.append(f"{t}: {quoted(caption)}")
    return rows, captions


def _guard(gr: Any, system: SpaceSystem) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator turning our readable errors into a message in the page; the server keeps serving."""
    def guarded(fn):
        def run(*args):
            try:
                return fn(*args)
            except TaskNotFoundError as e:
                raise gr.Error(f"Task {e.task!r} is no longer available in {system.repo_id}. "
                               f"Available tasks: {', '.join(e.available) or '(none)'}") from None
            except (Mu2hubError, ValueError, OSError) as e:  # bad input, missing or corrupt files
                raise gr.Error(str(e)) from None
        return functools.wraps(fn)(run)

    return guarded


def build_demo(repo_or_dir: str | os.PathLike, *, revision: str | None = None, local_files_only: bool = False,
               tasks: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None,
               token: str | bool | None = None, examples: Mapping[str, Sequence[Any]] | None = None,
               title: str = "mu2hub: one system, many tasks") -> "gr.Blocks":
    """The Gradio page for a system, answer first (launch it with `css=mu2hub.space.CSS`).

    Top row: the task picker, the image and its buttons; the prediction (top 5); the task's card and its path
    through the system (the same picture as the repo's `figures/system.png`, that path picked out) — all above
    the fold of a 1280x800 window. Below: the all-tasks table, then compact examples (one button each).

    Args:
        repo_or_dir, revision, tasks, cache_dir, token, local_files_only: as `SpaceSystem`.
        examples (`{task: [image file or (file, caption)]}`, *optional*): defaults to test images from the data
            registry for the tasks it knows, captioned with their class.

    Returns:
        `gr.Blocks` with endpoints `/classify (image, task) -> prediction`, `/classify_all (image) -> all_tasks`,
        `/task_info (task) -> (task_card, path_figure)`; `demo.mu2hub_system` is the `SpaceSystem` behind it.
    """
    from .utils.extras import require

    gr = require("gradio")
    system = SpaceSystem(repo_or_dir, revision=revision, tasks=tasks, cache_dir=cache_dir, token=token,
                         local_files_only=local_files_only)
    if examples is None:
        examples = registry_examples(system.tasks, tempfile.mkdtemp(prefix="mu2hub-space-"))
    rows, captions = _example_rows(system, examples)
    guarded = _guard(gr, system)

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

    first = system.tasks[0]
    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\n{system.system_markdown()} Each task is a *path* through the shared components: "
                    "pick a task and an image; a model loads on first use.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=280):
                task = gr.Dropdown(system.tasks, value=first, label="Task")
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], height=190)
                with gr.Row():
                    run_one = gr.Button("Classify", variant="primary", min_width=100)
                    run_all = gr.Button("All tasks", min_width=100)
            with gr.Column(scale=3, min_width=280):
                label = gr.Label(num_top_classes=TOP_K, label="Prediction (top 5 classes, probability)")
            with gr.Column(scale=5, min_width=420):
                info = gr.Markdown(system.task_markdown(first), label="Task card", elem_id="mu2hub-task-card")
                figure = gr.Image(value=system.figure(first), label="Path through the system", show_label=False,
                                  type="pil", interactive=False, height=270, elem_id="mu2hub-path-figure",
                                  buttons=["fullscreen"], alt_text="the task's path through the shared components")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="All tasks", interactive=False, wrap=True,
                             column_widths=["24%", "18%", "12%", "46%"], elem_id="mu2hub-all-tasks")
        if rows:
            gr.Examples(rows, inputs=[image, task], cache_examples=False, examples_per_page=12,
                        label="Examples (click one, then Classify)", example_labels=captions)
        run_one.click(classify, [image, task], label, api_name="classify")
        run_all.click(classify_all, [image], table, api_name="classify_all")
        task.change(task_info, [task], [info, figure], api_name="task_info")
    demo.mu2hub_system = system
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mu2hub.space", description="Tools for the demo Space.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preload", help="print (or --write) the preload_from_hub front matter of spaces_app/README.md")
    p.add_argument("repo_id")
    p.add_argument("--task", action="append", dest="tasks", help="a demo task (repeat); default: all")
    p.add_argument("--revision", help="branch, tag or commit; written as the resolved commit sha")
    p.add_argument("--folder", help="read task files from a local copy of the repo instead of the Hub")
    p.add_argument("--write", metavar="README", help="replace the preload_from_hub list in this Space README")
    a = ap.parse_args(argv)
    try:
        lines = preload_lines(a.repo_id, a.tasks, a.revision, folder=a.folder)
        if a.write:
            changed = write_preload(a.write, lines)
            print(f"{a.write}: preload_from_hub {'updated' if changed else 'already up to date'} "
                  f"({sum(len(line.split()[1].split(',')) for line in lines)} files)")
            return 0
    except (Mu2hubError, OSError, ValueError) as e:
        print(f"preload: error: {e}", file=sys.stderr)
        return 2
    print("preload_from_hub:\n" + "\n".join(f'  - "{line}"' for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
