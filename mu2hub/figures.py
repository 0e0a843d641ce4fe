"""The published figures: the system picture (tasks × slots) and activated vs new parameters per task.

Rendered with matplotlib's object API (no pyplot state, so concurrent exporters in threads are safe) to PNG
bytes without a timestamp: the same task files always give the same bytes, so an unchanged system uploads
no figure.
"""

from __future__ import annotations

import io
import re
from typing import Mapping

from .format import TaskFile

GREY = "#d9d9d9"


def _slot_columns(files: Mapping[str, TaskFile]) -> list[str]:
    """Every slot any path uses, in forward order (adapters before their block)."""
    layers = max((tf.num_layers for tf in files.values()), default=0)
    adapters = {i for tf in files.values() for i in tf.adapter_layers}
    cols = ["patch_embed", "cls", "pos_embed"]
    for i in range(layers):
        cols += ([f"adapter.{i}"] if i in adapters else []) + [f"block.{i}"]
    return cols + ["norm", "head"]


def _short(slot: str) -> str:
    return re.sub(r"^(block|adapter)\.(\d+)$", lambda m: f"{m.group(1)[0].upper()}{m.group(2)}", slot).replace("patch_embed", "patch").replace("pos_embed", "pos")


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def system_png(files: Mapping[str, TaskFile]) -> bytes:
    """Tasks (rows, stream order) × slots (columns): which component each path takes, who created it, what is shared.

    In each column the distinct components are numbered by first use; a cell's colour is the task whose path
    created the component (`lineage.created`), grey for the root model or a retired path; a bold border marks a
    component used by more than one task.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    tasks = list(files)
    cols = _slot_columns(files)
    creator: dict[str, str] = {}
    for t, tf in files.items():
        for cid in tf.lineage.get("created", []) or []:
            creator.setdefault(cid, t)
    users: dict[str, set[str]] = {}
    for t, tf in files.items():
        for c in tf.components:
            users.setdefault(c.id, set()).add(t)
    palette = [f"C{i}" for i in range(10)] + ["#8c564b", "#e377c2", "#bcbd22", "#17becf"]
    color = {t: palette[i % len(palette)] for i, t in enumerate(tasks)}

    fig = Figure(figsize=(max(6.0, 0.55 * len(cols) + 3.0), max(2.5, 0.42 * len(tasks) + 1.8)))
    ax = fig.add_subplot()
    numbers: list[dict[str, int]] = [{} for _ in cols]
    label_cells = len(tasks) * len(cols) <= 2500
    for r, t in enumerate(tasks):
        slots = files[t].component_map()
        for j, slot in enumerate(cols):
            ref = slots.get(slot)
            if ref is None:
                continue
            n = numbers[j].setdefault(ref.id, len(numbers[j]) + 1)
            shared = len(users[ref.id]) > 1
            ax.add_patch(Rectangle((j + 0.06, r + 0.08), 0.88, 0.84, facecolor=color.get(creator.get(ref.id, ""), GREY),
                                   edgecolor="black", linewidth=1.8 if shared else 0.4))
            if label_cells:
                ax.text(j + 0.5, r + 0.5, str(n), ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(tasks), 0)
    ax.set_xticks([j + 0.5 for j in range(len(cols))], [_short(s) for s in cols], fontsize=8, rotation=45, ha="right")
    ax.set_yticks([r + 0.5 for r in range(len(tasks))], tasks, fontsize=8)
    ax.tick_params(length=0)
    ax.set_xlabel("slot along the path", fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    n_comp = len(users)
    ax.set_title(f"{len(tasks)} tasks, {n_comp} components: the component each task's path takes per slot\n"
                 "same number in a column = same component · colour = task that created it · bold = shared", fontsize=9)
    legend = [Patch(facecolor=GREY, edgecolor="black", label="root / earlier path")] + [
        Patch(facecolor=color[t], edgecolor="black", label=t) for t in tasks if any(v == t for v in creator.values())]
    ax.legend(handles=legend, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, title="created by",
              title_fontsize=7)
    fig.tight_layout()
    return _png(fig)


def params_png(files: Mapping[str, TaskFile]) -> bytes:
    """Activated and new parameters of each task's path in task-stream order, with the system's growth."""
    from matplotlib.figure import Figure

    tasks = list(files)
    activated = [tf.activated_params for tf in files.values()]
    new = [int(tf.sizes.get("new_params") or 0) for tf in files.values()]
    seen: dict[str, int] = {}
    growth = []
    for tf in files.values():
        seen.update({c.id: c.params for c in tf.components})
        growth.append(sum(seen.values()))
    fig = Figure(figsize=(max(6.0, 0.6 * len(tasks) + 3.0), 4.2))
    ax = fig.add_subplot()
    xs = list(range(len(tasks)))
    width = 0.4
    ax.bar([x - width / 2 for x in xs], activated, width, color="#9ecae1", label="activated parameters")
    ax.bar([x + width / 2 for x in xs], new, width, color="#08519c", label="parameters new to the task")
    for x, a, n in zip(xs, activated, new):
        ax.text(x + width / 2, n, f"{n / a:.0%}" if a else "", ha="center", va="bottom", fontsize=7)
    ax.plot(xs, growth, color="#de2d26", marker="o", markersize=3, linewidth=1.2, label="system parameters so far")
    ax.set_xticks(xs, tasks, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("parameters")
    ax.set_title("Parameters per task over the task stream\nactivated vs new to the task (label: new / activated)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


# The Space's view: one task's path highlighted against the rest of the system.
_OWN, _SHARED, _WITH_CHOSEN, _OTHER_SHARED, _OTHER = "#f28e2b", "#4e79a7", "#a0c4e8", "#d5d5d5", "#f2f2f2"


def path_png(files: Mapping[str, TaskFile], task: str) -> bytes:
    """Tasks (rows) × slots (columns); each cell is the component that task uses there, labelled by short id.

    `task`'s row is highlighted: orange where the component is its own, blue where it is shared; in other
    rows the components they share with `task` are light blue. Right margin: how many each row shares.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    tasks = list(files)
    slots = _slot_columns(files)
    users: dict[str, set[str]] = {}
    for t, tf in files.items():
        for c in tf.components:
            users.setdefault(c.id, set()).add(t)
    chosen = {c.id for c in files[task].components} if task in files else set()

    fig = Figure(figsize=(max(6.0, 0.55 * len(slots) + 3.2), 0.42 * len(tasks) + 1.4), dpi=110)
    ax = fig.add_subplot()
    for r, t in enumerate(tasks):
        cells = {c.slot: c.id for c in files[t].components}
        for col, slot in enumerate(slots):
            cid = cells.get(slot)
            if cid is None:
                continue
            shared = len(users[cid]) > 1
            if t == task:
                color = _SHARED if shared else _OWN
            else:
                color = _WITH_CHOSEN if cid in chosen else (_OTHER_SHARED if shared else _OTHER)
            ax.add_patch(Rectangle((col, r), 1, 1, facecolor=color, edgecolor="white", linewidth=1.5))
            ax.text(col + 0.5, r + 0.5, cid[:4], ha="center", va="center", fontsize=6,
                    color="white" if t == task else "#333333", family="monospace")
        n = len({c.id for c in files[t].components} & chosen)
        note = "chosen" if t == task else (f"shares {n}" if n else "")
        ax.text(len(slots) + 0.2, r + 0.5, note, va="center", fontsize=7)
    if task in tasks:
        r = tasks.index(task)
        ax.add_patch(Rectangle((0, r), len(slots), 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xlim(0, len(slots) + 1.6)
    ax.set_ylim(len(tasks), 0)
    ax.set_xticks([i + 0.5 for i in range(len(slots))], slots, rotation=60, ha="right", fontsize=7)
    ax.set_yticks([i + 0.5 for i in range(len(tasks))], tasks, fontsize=8)
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(f"path of {task!r} through the system (cells: component id prefix)", fontsize=9)
    fig.legend(handles=[Patch(color=_OWN, label="chosen task only"), Patch(color=_SHARED, label="chosen task, shared"),
                        Patch(color=_WITH_CHOSEN, label="shared with the chosen task"),
                        Patch(color=_OTHER_SHARED, label="shared by other tasks"), Patch(color=_OTHER, label="one other task only")],
               loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _png(fig)
