"""mu2hub: µ2Net evolved multitask systems on the Hugging Face Hub.

>>> import mu2hub
>>> model = mu2hub.from_pretrained("org/system", task="digits")   # downloads only that task's path
>>> model.predict(image)
"""

from .api import TaskModel, from_pretrained, from_transformers, list_tasks, system_info
from .errors import (
    ComponentIntegrityError,
    DownloadTimeoutError,
    FormatError,
    FormatVersionError,
    HubRequestError,
    HubUnavailableError,
    ImageInputError,
    LocalFilesMissingError,
    Mu2hubError,
    ShapeMismatchError,
    TaskNotFoundError,
    UnsafePathError,
)

__version__ = "0.1.0"

_LAZY = {"export": ".publish", "verify": ".probe"}  # pull in matplotlib and the card only when asked for
_LAZY.update({"add_task": ".contribute", "push_task": ".contribute", "validate": ".contribute"})  # the evolution engine


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'mu2hub' has no attribute {name!r}")

__all__ = [
    "TaskModel", "from_pretrained", "from_transformers", "list_tasks", "system_info", "export", "verify",
    "add_task", "push_task", "validate",
    "Mu2hubError", "FormatError", "FormatVersionError", "UnsafePathError", "TaskNotFoundError",
    "ComponentIntegrityError", "LocalFilesMissingError", "ShapeMismatchError",
    "HubRequestError", "HubUnavailableError", "DownloadTimeoutError", "ImageInputError",
]
