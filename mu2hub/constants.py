"""File names, format version and library identity, in one place."""

LIBRARY_NAME = "mu2hub"
FORMAT_VERSION = 1

CONFIG_NAME = "config.json"
ROOT_NAME = "root.json"  # the root path (task-file schema): a parent for new tasks, not a task users load
TASKS_DIR = "tasks"
COMPONENTS_DIR = "components"
README_NAME = "README.md"
FIGURES_DIR = "figures"

#: Component kinds, in the order they appear along a path.
KINDS = ("patch_embed", "cls", "pos_embed", "adapter", "block", "norm", "head")


def task_filename(task: str) -> str:
    """`tasks/<task>.json`; task names may contain `/` (e.g. `shapes/label_shape`)."""
    return f"{TASKS_DIR}/{task}.json"


def component_filename(component_id: str) -> str:
    """`components/<id[:2]>/<id>.safetensors`: prefix folders keep each folder far below the Hub's 10k limit."""
    return f"{COMPONENTS_DIR}/{component_id[:2]}/{component_id}.safetensors"

#: How many labels `predict` returns by default, everywhere (Python, CLI, the Space).
DEFAULT_TOP_K = 5
