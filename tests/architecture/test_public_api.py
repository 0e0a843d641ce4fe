"""The public API a user reads about: every name of `mu2hub.__all__` and every `mu2hub.<path>` README.md and docs/
name resolves (internal modules moved without shims, so a doc that names one must name where it is now)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

import mu2hub

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DOTTED = re.compile(r"(?<![\w/.-])mu2hub(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
FROM_IMPORT = re.compile(r"from (mu2hub(?:\.\w+)*) import \(?([\w, ]+)")
NOT_PATHS = {"mu2hub.__all__", "mu2hub.html"}  # the list itself; the API reference page's file name


def documented() -> list[str]:
    paths = set()
    for doc in DOCS:
        text = doc.read_text()
        paths.update(p for p in DOTTED.findall(text) if p not in NOT_PATHS)
        for module, names in FROM_IMPORT.findall(text):
            paths.update(f"{module}.{n.strip()}" for n in names.split(",") if n.strip())
    return sorted(paths)


def resolve(path: str) -> object:
    """`a.b.c`: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(path)


def test_the_docs_name_paths():
    assert len(documented()) >= 10 and "mu2hub.from_pretrained" in documented()


@pytest.mark.parametrize("name", mu2hub.__all__)
def test_every_public_name_resolves(name):
    assert getattr(mu2hub, name) is not None
    assert name in dir(mu2hub)


@pytest.mark.parametrize("path", documented())
def test_every_documented_path_resolves(path):
    resolve(path)
