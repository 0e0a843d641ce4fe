"""Tasks and their input pipelines: the registry, built-in data, Hugging Face datasets, preprocessing.

>>> from mu2hub.data import get_task, list_data_tasks
>>> list_data_tasks("shapes/*")
['shapes/label_orientation', 'shapes/label_scale', 'shapes/label_shape', 'shapes/label_x_position']
"""

from mu2hub.data import builtin, catalog  # noqa: F401  (importing a source registers it)
from mu2hub.data.hf import load_hf_task, load_imagefolder, task_from_dataset_dict
from mu2hub.data.registry import Split, TaskData, get_task, list_data_tasks, register_task, to_rgb_uint8

_PREPROCESSING = ("apply_pp_spec_numpy", "batches", "eval_batches", "pp_spec", "preprocess_eval", "preprocess_train")


def __getattr__(name: str):
    """The preprocessing names load JAX, so they are imported on first use: the registry and its sources do not."""
    if name in _PREPROCESSING:
        from mu2hub.data import pp

        return getattr(pp, name)
    raise AttributeError(f"module 'mu2hub.data' has no attribute {name!r}")


__all__ = [
    "Split",
    "TaskData",
    "apply_pp_spec_numpy",
    "batches",
    "eval_batches",
    "get_task",
    "list_data_tasks",
    "load_hf_task",
    "load_imagefolder",
    "pp_spec",
    "preprocess_eval",
    "preprocess_train",
    "register_task",
    "task_from_dataset_dict",
    "to_rgb_uint8",
]
