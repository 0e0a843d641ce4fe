"""Measuring a loaded task on data: `TaskModel.evaluate` and `mu2hub evaluate`.

It runs the public path (`TaskModel.preprocess` -> `logits`, what `predict` uses) over a split, batch by batch, and
reports accuracy next to the number the task file records (the model card's), so a user can check that what they
downloaded reproduces what was published. Labels are matched by *name*, so a dataset that orders its classes
differently (or holds a subset of them) is scored correctly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data.registry import SPLITS
from ..errors import ArgumentError

if TYPE_CHECKING:
    from .task import TaskModel

_RECORDED = {"test": "test_accuracy", "validation": "validation_accuracy"}


@dataclass
class Evaluation:
    """One task measured on one split: accuracy and counts, with the recorded number beside it."""

    task: str
    data: str
    split: str
    correct: int
    num_examples: int
    recorded: float | None  # the task file's metric for this split (what the card shows), if any

    @property
    def accuracy(self) -> float:
        return self.correct / self.num_examples

    @property
    def reproduces(self) -> bool | None:
        """Whether `accuracy` matches the recorded number to the card's 4 decimals (None: nothing recorded)."""
        return None if self.recorded is None else round(self.accuracy, 4) == round(float(self.recorded), 4)

    def format(self) -> str:
        line = f"{self.task} on {self.data} [{self.split}]: accuracy {self.accuracy:.4f} ({self.correct}/{self.num_examples})"
        if self.recorded is not None:
            line += f"; recorded {float(self.recorded):.4f} ({'reproduced' if self.reproduces else 'DIFFERS'})"
        return line


def label_map(model_labels: list[str], data_labels: list[str], where: str) -> np.ndarray:
    """Index of each dataset class among the model's classes, by name."""
    missing = [name for name in data_labels if name not in model_labels]
    if missing:
        raise ValueError(f"{where}: classes {missing} are not among the task's labels {model_labels}; "
                         "evaluate a task on data labelled with its own class names")
    return np.asarray([model_labels.index(name) for name in data_labels], np.int64)


def evaluate(model: "TaskModel", data: Any, *, split: str = "test", batch_size: int = 64,
             data_kwargs: dict | None = None, progress: bool = False) -> Evaluation:
    """See `TaskModel.evaluate`."""
    from ..data.resolve import resolve_data

    if split not in SPLITS:
        raise ArgumentError(f"split={split!r}: expected one of {SPLITS}")
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be >= 1, got {batch_size}")
    # images of varying sizes are decoded at the task's image size, as fine-tuning decodes them
    task_data = resolve_data(data, **{"decode_size": model.task_file.image_size, **dict(data_kwargs or {})})
    part = getattr(task_data, split)
    to_model = label_map(model.labels, list(task_data.labels), task_data.name)
    bar = None
    if progress:
        from ..utils.progress import progress_bar

        bar = progress_bar(total=len(part), desc=f"evaluating {model.task}", unit="img")
    correct = 0
    try:
        for start in range(0, len(part), batch_size):
            images, labels = part.images[start:start + batch_size], part.labels[start:start + batch_size]
            predicted = np.argmax(model.logits(model.preprocess(images)), axis=-1)
            correct += int(np.sum(predicted == to_model[labels]))
            if bar is not None:
                bar.update(len(labels))
    finally:
        if bar is not None:
            bar.close()
    key = _RECORDED.get(split)
    recorded = model.task_file.metrics.get(key) if key else None
    return Evaluation(model.task, task_data.name, split, correct, len(part),
                      float(recorded) if isinstance(recorded, (int, float)) else None)
