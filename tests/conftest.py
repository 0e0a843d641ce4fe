"""Session fixtures: the loopback Hub (the one sanctioned stand-in) with a private HF_HOME, and tiny systems."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hubserver import HubServer, configure_hf_env  # noqa: E402


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
