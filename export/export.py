"""Publish an evolved system: `python export/export.py --run runs/quickstart --to org/system [--dry-run]`.

Thin driver (the logic is `mu2hub.publish.export`, also `mu2hub export`): reads a training run (`--run DIR`) or a
published repo/folder (`--repo SRC [--revision R]`), and writes the published layout — best path per task,
referenced components only, task files with sizes and probes, model card, figures — to a Hub repo (`org/name`)
or a folder, uploading only what the target does not have yet.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from mu2hub.cli import add_export_arguments, cmd_export
    from mu2hub.errors import Mu2hubError

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_export_arguments(ap)
    a = ap.parse_args(argv)
    try:
        return cmd_export(a)
    except (Mu2hubError, OSError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
