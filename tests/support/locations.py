"""Where the suite's files are, so a test at any depth names them one way (conftest.py puts this folder on
`sys.path`)."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
TESTS = SUPPORT.parent
REPO = TESTS.parent
TRAINING = REPO / "training"
ASSETS = TESTS / "assets"
TINY_CONFIG = SUPPORT / "tiny_config.py"
