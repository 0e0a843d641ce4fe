"""Evolved vs baselines, as task-file metrics and as a table: names, verdicts and rows (no JAX: the card, the
figures and the CLI read these too). Training the baselines is `mu2hub.evolution.baselines`."""

from __future__ import annotations

from typing import Any, Mapping

#: "kind:budget" names a config may list in `baselines`.
BASELINE_KINDS = ("scratch", "finetune")
BUDGETS = ("total", "lineage")
ALL = tuple(f"{k}:{b}" for k in BASELINE_KINDS for b in BUDGETS)

#: The task file's metric per baseline (`from_scratch_test_accuracy` kept from the add-task format).
METRIC = {"scratch:total": "from_scratch_test_accuracy", "scratch:lineage": "from_scratch_lineage_test_accuracy",
          "finetune:total": "finetune_test_accuracy", "finetune:lineage": "finetune_lineage_test_accuracy"}


def parse(spec: Any) -> tuple[str, ...]:
    """A config's `baselines`: a list or comma-separated string of "kind:budget", "all", or "none"/empty."""
    if spec in (None, "", "none", False):
        return ()
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if names == ["all"]:
        return ALL
    bad = [n for n in names if n not in ALL]
    if bad:
        raise ValueError(f"unknown baselines {bad}: each is 'kind:budget' with kind in {list(BASELINE_KINDS)} and "
                         f"budget in {list(BUDGETS)} (or 'all' / 'none')")
    return tuple(dict.fromkeys(names))


def verdict(accuracy: float, baselines: Mapping[str, float | None]) -> str:
    """"wins" (above every measured baseline), "loses" (below one) or "ties"; "not measured" without any."""
    measured = [v for v in baselines.values() if v is not None]
    if not measured:
        return "not measured"
    if all(accuracy > v for v in measured):
        return "wins"
    return "loses" if any(accuracy < v for v in measured) else "ties"


#: Columns of the comparison, in the order a reader compares them.
COLUMNS = ("scratch:total", "scratch:lineage", "finetune:lineage", "finetune:total")
LABELS = {"scratch:total": "scratch (total)", "scratch:lineage": "scratch (lineage)",
          "finetune:lineage": "fine-tune (lineage)", "finetune:total": "fine-tune (total)"}


def baselines_of(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """The measured baselines in a task file's metrics, by "kind:budget" (absent ones left out)."""
    return {n: metrics[METRIC[n]] for n in COLUMNS if METRIC[n] in metrics}


def comparison(files: Mapping[str, Any]) -> tuple[list[list[str]], list[str], list[str]]:
    """(rows, headers, plain-words findings): evolved test accuracy against every measured baseline, with Δ.

    `files`: task -> TaskFile in stream order."""
    present = [n for n in COLUMNS if any(METRIC[n] in tf.metrics for tf in files.values())]
    headers = ["task", "evolved", *[f"{LABELS[n]} (Δ)" for n in present], "verdict"]
    rows, findings, sums = [], [], {n: [] for n in ["evolved", *present]}
    for task, tf in files.items():
        acc = float(tf.metrics["test_accuracy"])
        base = baselines_of(tf.metrics)
        row = [task, f"{acc:.3f}"]
        sums["evolved"].append(acc)
        for n in present:
            v = base.get(n)
            row.append("n/a" if v is None else f"{v:.3f} ({acc - v:+.3f})")
            if v is not None:
                sums[n].append(v)
        v = verdict(acc, base)
        row.append(v)
        rows.append(row)
        if v == "loses":
            worse = [LABELS[n] for n, b in base.items() if b is not None and acc < b]
            findings.append(f"{task}: evolution loses to {', '.join(worse)}")
        elif v == "wins":
            findings.append(f"{task}: evolution beats every baseline")
        elif v == "ties":
            findings.append(f"{task}: evolution ties its best baseline")
    if len(files) > 1 and sums["evolved"]:
        mean = [f"{sum(sums['evolved']) / len(sums['evolved']):.3f}"]
        for n in present:
            m = sum(sums[n]) / len(sums[n]) if len(sums[n]) == len(files) else None
            mean.append("n/a" if m is None else f"{m:.3f} ({float(mean[0]) - m:+.3f})")
        rows.append(["mean", *mean, ""])
    return rows, headers, findings


#: Below these the test accuracy cannot tell a win from noise (issue 19): the verdict is "not measurable".
MIN_TEST_EXAMPLES = 50
MIN_TEST_CLASSES = 2
MIN_CARVED_EXAMPLES = 20


def unmeasurable(metrics: Mapping[str, Any]) -> list[str]:
    """Why a task's test accuracy cannot support a verdict, with the numbers (empty: it can)."""
    reasons = []
    n = metrics.get("num_test_examples")
    if n is not None and n < MIN_TEST_EXAMPLES:
        reasons.append(f"the test split has {n} images (at least {MIN_TEST_EXAMPLES} are needed)")
    k = metrics.get("num_test_classes")
    if k is not None and k < MIN_TEST_CLASSES:
        reasons.append(f"the test split holds {k} class (at least {MIN_TEST_CLASSES} are needed)")
    for split, size in sorted((metrics.get("carved") or {}).items()):
        if size < MIN_CARVED_EXAMPLES:
            reasons.append(f"the {split} split carved from train has {size} images (at least {MIN_CARVED_EXAMPLES} "
                           "are needed; provide that split)")
    return reasons


def judge(metrics: Mapping[str, Any]) -> tuple[str, str]:
    """(kind, sentence) for a task's metrics: kind is "wins", "ties", "loses", "not measurable" or "not measured"."""
    reasons = unmeasurable(metrics)
    if reasons:
        return "not measurable", "Not measurable: " + "; ".join(reasons)
    acc, base = float(metrics["test_accuracy"]), {n: v for n, v in baselines_of(metrics).items() if v is not None}
    kind = verdict(acc, base)
    if kind == "not measured":
        return kind, "No baseline was trained (baseline=False): nothing to compare with"
    vs = ", ".join(f"{LABELS[n]} {v:.4f} ({acc - v:+.4f})" for n, v in base.items())
    if kind == "wins":
        return kind, f"Beats every baseline: {acc:.4f} vs {vs}"
    if kind == "ties":
        return kind, f"Ties its best baseline (a tie is not a win): {acc:.4f} vs {vs}"
    return kind, f"LOSES to a baseline: {acc:.4f} vs {vs}; pushing is refused unless forced"
