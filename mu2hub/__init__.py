"""mu2hub: µ2Net evolved multitask systems on the Hugging Face Hub.

>>> import mu2hub
>>> model = mu2hub.from_pretrained("org/system", task="digits")   # downloads only that task's path
>>> model.predict(image)
"""

from .api import TaskModel, from_pretrained, from_transformers, list_tasks, system_info
from .errors import (
    ComponentIntegrityError,
    FormatError,
    FormatVersionError,
    LocalFilesMissingError,
    Mu2hubError,
    ShapeMismatchError,
    TaskNotFoundError,
    UnsafePathError,
)

__version__ = "0.1.0"

__all__ = [
    "TaskModel", "from_pretrained", "from_transformers", "list_tasks", "system_info",
    "Mu2hubError", "FormatError", "FormatVersionError", "UnsafePathError", "TaskNotFoundError",
    "ComponentIntegrityError", "LocalFilesMissingError", "ShapeMismatchError",
]
