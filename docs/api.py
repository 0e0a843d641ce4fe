"""Build the API reference (HTML, pdoc) of every name in `mu2hub.__all__`, strictly: any warning fails the build.

    python docs/api.py [OUT [PACKAGE]]   # `make docs`; OUT defaults to build/api; open OUT/mu2hub.html

Why pdoc: it reads the docstrings (Google style) and signatures from the imported package with no configuration
file, theme or site generator, offline. Strict means: pdoc's own warnings are errors (a name in `__all__` that no
longer resolves — a rename — fails), and so is a public name without its own docstring, or a function of `__all__`
(and a public method of `TaskModel`, the object users hold) whose docstring does not name each of its arguments.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def problems(module) -> list[str]:
    """Public names without their own docstring, and documented callables that leave an argument unnamed."""
    out = []
    for name in module.__all__:
        if not hasattr(module, name):
            out.append(f"{name}: in __all__ but does not resolve (renamed or removed?)")
            continue
        obj = getattr(module, name)
        own = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
        if not (own or "").strip():
            out.append(f"{name}: no docstring")
            continue
        if inspect.isclass(obj) and name != "TaskModel":
            continue
        members = [(name, obj)] if not inspect.isclass(obj) else [
            (f"{name}.{m}", getattr(obj, m)) for m, v in vars(obj).items()
            if not m.startswith("_") and callable(getattr(obj, m)) and not isinstance(v, property)]
        for label, fn in members:
            doc = fn.__doc__ or ""
            if not doc.strip():
                out.append(f"{label}: no docstring")
                continue
            params = [p for p in inspect.signature(fn).parameters.values()
                      if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            missing = [p.name for p in params if p.name not in doc]
            if missing:
                out.append(f"{label}: docstring does not name {', '.join(missing)}")
    return out


def build(out: Path, package: str = "mu2hub") -> Path:
    """Write the reference of `package` into `out` (pdoc, Google docstrings); raises on any warning or problem."""
    import importlib

    import pdoc
    import pdoc.render

    sys.path.insert(0, str(ROOT))
    module = importlib.import_module(package)
    found = problems(module)
    if found:
        raise SystemExit("API reference: " + "; ".join(found))
    pdoc.render.configure(docformat="google", footer_text=f"{package} {getattr(module, '__version__', '')}".strip())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(package, output_directory=out)
    return out / f"{package}.html"


if __name__ == "__main__":
    page = build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "api", *sys.argv[2:3])
    print(f"API reference: {page}")
