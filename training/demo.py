"""`make demo`: evolve the quickstart system on CPU, export it, load one task with `from_pretrained`, report.

Every accuracy printed is measured on a held-out test split; the loaded task's accuracy is measured again
through the public API (`TaskModel.predict`) on the exported files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

from evolve import load_config  # noqa: E402

import mu2hub  # noqa: E402
from mu2hub.data.registry import get_task  # noqa: E402
from mu2hub.publishing.comparison import comparison  # noqa: E402
from mu2hub.evolution.evolve import evolve  # noqa: E402
from mu2hub.publishing.publish import export_system  # noqa: E402
from mu2hub.utils.tables import table  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default=str(ROOT / "configs" / "quickstart.py"))
    ap.add_argument("--workdir", default="runs/quickstart", type=Path)
    ap.add_argument("--task", default="digits", help="the task to load back with from_pretrained")
    a = ap.parse_args()
    config = load_config(a.config)
    t0 = time.time()
    run = evolve(config, a.workdir, resume=(a.workdir / "run_config.json").exists())
    evolve_s = time.time() - t0

    export_dir = a.workdir / "export"
    files = export_system(run.system, export_dir)
    order = [t for t in config["tasks"] if t in files]

    model = mu2hub.from_pretrained(export_dir, task=a.task)
    test = get_task(a.task, **config.get("task_kwargs", {}).get(a.task, {})).test
    preds = [p[0]["label"] for p in model.predict(list(test.images), top_k=1)]
    api_acc = float(np.mean([p == model.labels[y] for p, y in zip(preds, test.labels)]))

    info = mu2hub.system_info(export_dir)
    rows, seen = [], set()
    for t in order:
        tf, s = files[t], info["tasks"][t]
        ids = {c.id for c in tf.components}
        earlier = sorted({u for cid in ids for u in info["users"][cid] if u in seen})
        shared_earlier = sum(1 for cid in ids if any(u in seen for u in info["users"][cid]))
        rows.append([t, f"{tf.metrics['test_accuracy']:.3f} ({tf.metrics['chance']:.3f})", f"{tf.activated_params:,}",
                     f"{s['share_of_system']:.0%}", f"{tf.sizes.get('new_params', 0):,}",
                     f"{shared_earlier}/{len(ids)}" + (f" ({', '.join(earlier)})" if earlier else "")])
        seen.add(t)
    print(f"\nmu2hub demo — evolved {len(order)} tasks in {evolve_s / 60:.1f} min (with baselines) into {a.workdir}; "
          f"exported to {export_dir}")
    print(table(rows, ["task", "test acc (chance)", "activated params", "share of system", "new params",
                       "components shared with earlier tasks"]))
    print(verdict_report({t: files[t] for t in order}, config))
    print(f"\nsystem: {info['components']} components, {info['params']:,} parameters, {info['bytes'] / 1e6:.2f} MB")
    print(f"from_pretrained({str(export_dir)!r}, task={a.task!r}): {len(model.components)} components, "
          f"{model.activated_params:,} activated parameters; test accuracy through TaskModel.predict: {api_acc:.3f} "
          f"on {len(test.labels)} images")
    print(f"figures: {a.workdir / 'figures' / 'evolution.png'} (validation accuracy per generation), "
          f"{a.workdir / 'figures' / 'params.png'}, {a.workdir / 'figures' / 'baselines.png'} (evolved vs baselines); "
          f"published: {export_dir / 'figures'}")
    print(space_preload_status(export_dir))
    return 0


def verdict_report(files: dict, config: dict) -> str:
    """Evolved vs the baselines trained in the same run, with Δ per task and the verdict in words."""
    rows, headers, findings = comparison(files)
    if len(headers) <= 3:
        return "\nno baselines were measured (config `baselines`, or `--baselines all`)"
    budget = {t: f"{tf.metrics.get('search_examples', 0):,} / {tf.metrics.get('lineage_examples', 0):,}" for t, tf in files.items()}
    return "\n".join([
        f"\nEvolved vs baselines (held-out test accuracy; seed {config['seed']}; budgets in training examples, "
        "total search / winning lineage: " + "; ".join(f"{t} {b}" for t, b in budget.items()) + ")",
        table(rows, headers), *[f"- {f}" for f in findings]])


def space_preload_status(export_dir: Path) -> str:
    """Whether the Space's committed `preload_from_hub` names exactly this export's files (the demo is deterministic)."""
    from huggingface_hub import metadata_load

    from mu2hub.space import parse_preload, preload_lines

    readme = ROOT.parent / "spaces_app" / "README.md"
    pinned = parse_preload(readme)
    if pinned is None:
        return f"{readme}: no preload_from_hub line; run `python spaces_app/preload.py`"
    fresh = preload_lines(pinned[0], pinned[1], folder=export_dir)
    ok = metadata_load(readme)["preload_from_hub"] == fresh
    return f"{readme.relative_to(ROOT.parent)} preload_from_hub: " + (
        "matches this export" if ok else "STALE for this export: run `python spaces_app/preload.py`")


if __name__ == "__main__":
    sys.exit(main())
