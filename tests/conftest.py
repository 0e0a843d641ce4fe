"""Session fixtures: the loopback Hub (the one sanctioned stand-in) with a private HF_HOME, and tiny systems."""

from __future__ import annotations

import os
import sys

import pytest

# The helpers (the loopback Hub, configs, reference states) are imported by name from tests/support by every test.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))
from hubserver import HubServer, configure_hf_env  # noqa: E402
from locations import TINY_CONFIG, TRAINING  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """The suite's own compilation cache (never the user's ~/.cache): shared by every test and subprocess, so a
    program compiled by one test is loaded by the next. Tests of the cache itself use folders of their own."""
    folder = tmp_path_factory.mktemp("compilation-cache")
    old = os.environ.get("MU2HUB_COMPILATION_CACHE")
    os.environ["MU2HUB_COMPILATION_CACHE"] = str(folder)
    try:
        yield folder
    finally:
        if old is None:
            os.environ.pop("MU2HUB_COMPILATION_CACHE", None)
        else:
            os.environ["MU2HUB_COMPILATION_CACHE"] = old


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A loopback Hub server; huggingface_hub (already imported or not) is pointed at it for the session."""
    root = tmp_path_factory.mktemp("hub")
    with HubServer(root / "server") as server:
        restore = configure_hf_env(server.url, root / "hf_home")
        server.hf_home = root / "hf_home"
        try:
            yield server
        finally:
            restore()


@pytest.fixture
def fresh_cache(hub, tmp_path):
    """A cache directory nobody has used: pass as `cache_dir=`."""
    return tmp_path / "cache"


@pytest.fixture(scope="session")
def evolved(hub, tmp_path_factory):
    """A real tiny evolution (tests/support/tiny_config.py: digits, then generated shapes) exported to the loopback
    Hub as `evolved/system` and to a folder: shared by the tests of everyday use (card, cache, CLI, evaluate)."""
    from types import SimpleNamespace

    sys.path.insert(0, str(TRAINING))
    from evolve import load_config

    from mu2hub.evolution.evolve import evolve
    from mu2hub.publishing.publish import export, export_system

    base = tmp_path_factory.mktemp("evolved")
    cfg = load_config(str(TINY_CONFIG))
    run = evolve(cfg, base / "run", quiet=True)
    repo = "evolved/system"
    export(run.system, repo)
    files = export_system(run.system, base / "export")
    return SimpleNamespace(run=base / "run", repo=repo, folder=base / "export", files=files, config=cfg,
                           tasks=list(cfg["tasks"]), base=base)
