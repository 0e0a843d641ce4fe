"""Shared set-up for benchmarks: a loopback Hub (tests/hubserver.py) and the machine description."""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from hubserver import HubServer, configure_hf_env  # noqa: E402

VARIANTS = {  # name -> (hidden, heads, mlp, patch, layers, image size): the ViT paper's table
    "Ti/16": (192, 3, 768, 16, 12, 224),
    "S/16": (384, 6, 1536, 16, 12, 224),
    "B/16": (768, 12, 3072, 16, 12, 224),
    "L/16": (1024, 16, 4096, 16, 24, 224),
}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} (Python {platform.python_version()}), {date.today()}"


def loopback_hub() -> tuple[HubServer, Path]:
    """A started loopback Hub with a private HF_HOME; both live until the process ends."""
    root = Path(tempfile.mkdtemp(prefix="mu2hub-bench-"))
    server = HubServer(root / "server").start()
    configure_hf_env(server.url, root / "hf_home")
    return server, root
