"""mu2hub: µ2Net evolved multitask systems on the Hugging Face Hub.

>>> import mu2hub
>>> model = mu2hub.from_pretrained("org/system", task="digits")   # downloads only that task's path
>>> model.predict(image)

Names are imported on first use: `import mu2hub` (and the metadata commands `mu2hub tasks / info / download`)
never loads JAX; `mu2hub.from_pretrained` does, when called for.
"""

from .errors import (
    ComponentIntegrityError,
    DownloadTimeoutError,
    FormatError,
    FormatVersionError,
    HubRequestError,
    HubUnavailableError,
    ImageInputError,
    LocalFilesMissingError,
    LocalFolderNotFoundError,
    MissingExtraError,
    Mu2hubError,
    ShapeMismatchError,
    TaskNotFoundError,
    TaskRequiredError,
    UnsafePathError,
)

__version__ = "0.1.0"

_LAZY = {
    "TaskModel": ".inference.task", "from_pretrained": ".api", "from_transformers": ".api",  # JAX
    "from_timm": ".api", "from_big_vision": ".api",
    "MultiTaskModel": ".inference.multitask",
    "list_tasks": ".hub.metadata", "system_info": ".hub.metadata", "download": ".hub.metadata",  # JSON only, no JAX
    "export": ".publishing.publish", "verify": ".inference.probe",  # matplotlib and the card only when asked for
    "add_task": ".contrib.contribute", "push_task": ".contrib.contribute", "validate": ".contrib.contribute",  # the evolution engine
    "data": ".data",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(_LAZY[name], __name__)
        value = module if name == "data" else getattr(module, name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'mu2hub' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "TaskModel", "MultiTaskModel", "from_pretrained", "from_transformers", "from_timm", "from_big_vision", "list_tasks", "system_info", "download",
    "export", "verify", "add_task", "push_task", "validate",
    "Mu2hubError", "FormatError", "FormatVersionError", "UnsafePathError", "TaskNotFoundError", "TaskRequiredError",
    "ComponentIntegrityError", "LocalFilesMissingError", "LocalFolderNotFoundError", "ShapeMismatchError",
    "HubRequestError", "HubUnavailableError", "DownloadTimeoutError", "ImageInputError", "MissingExtraError",
]
