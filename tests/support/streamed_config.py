"""The tiny loop config on a catalog task (`svhn_cropped`) read from a local stand-in: streamed or held in memory.

Argument (`streamed_config.py:<mode>,<generations>,<data dir>`): `stream` streams every split (`in_memory_max_bytes`
0), `memory` decodes the task into memory; the data dir holds `svhn_cropped/` (a `save_to_disk` DatasetDict).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tiny_config import get_config as tiny  # noqa: E402


def get_config(arg):
    mode, generations, data = arg.split(",", 2)
    c = tiny(generations)
    c.tasks = ["svhn_cropped"]
    c.task_kwargs = {"svhn_cropped": {"sources_dir": data}}
    c.in_memory_max_bytes = {"stream": 0, "memory": 1 << 30}[mode]
    c.prefix_cache = False  # the plain step in both modes: the comparison is about the data, not the cache
    c.num_validations = 1
    c.children_per_generation = 1  # seconds per run: each child compiles its own step
    c.validation_examples_max = 24
    return c
