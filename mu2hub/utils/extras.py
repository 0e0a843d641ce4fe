"""Optional dependencies: which extra installs each, and one named error when it is missing.

Why one table: a missing optional package must say which `pip install 'mu2hub[extra]'` fixes it wherever it is
first needed — in the library (`require`) and, for an import we did not wrap, in the CLI (`missing_extra`) —
never a bare `ModuleNotFoundError` or the CLI's "internal error" (exit 3).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import MissingExtraError

#: top-level module -> (extra that installs it, what needs it)
EXTRAS = {
    "sklearn": ("data", "the bundled digits task and scikit-learn datasets"),
    "datasets": ("data", "Hub datasets, image folders and save_to_disk folders"),
    "gradio": ("space", "the Space (web demo)"),
    "gradio_client": ("space", "the Space (web demo)"),
    "transformers": ("interop", "reading or writing a transformers ViT checkpoint"),
    "matplotlib": ("figures", "drawing figures (export, a run's figures/, the Space)"),
    "fastapi": ("serve", "mu2hub serve"),
    "uvicorn": ("serve", "mu2hub serve"),
    "prometheus_client": ("serve", "mu2hub serve"),
    "tensorflow_datasets": ("tfds", "TFDS-only datasets"),
    "timm": ("timm", "converting with timm itself"),
}


def require(module: str) -> ModuleType:
    """`import module` (or a submodule such as `matplotlib.figure`), or `MissingExtraError` naming the extra that
    installs it; an extra that is installed but broken inside raises its own error."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        name = getattr(e, "name", None)
        if name and name.split(".")[0] != module.split(".")[0]:
            raise  # the package is there, something it imports is not: not a missing install
        error = missing_extra(e, module)
        if error is None:
            raise
        raise error from e


def missing_extra(e: BaseException, module: str | None = None) -> MissingExtraError | None:
    """The named error for an `ImportError` of an optional package (by its top-level name), else None."""
    name = module or getattr(e, "name", None) or ""
    root = name.split(".")[0]
    if root not in EXTRAS or not isinstance(e, ImportError):
        return None
    extra, purpose = EXTRAS[root]
    return MissingExtraError(root, extra, purpose)
