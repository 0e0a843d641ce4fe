"""The µ2Net loop end to end on a tiny config: no forgetting, resume after SIGKILL, concurrent agents."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

import mu2hub
from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.run import RunConfigMismatchError, RunDir

from locations import REPO, TINY_CONFIG, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

CONFIG = str(TINY_CONFIG)


def assert_above_chance(metrics: dict) -> None:
    """The recorded test accuracy beats luck: more than a classifier right at the majority class's rate (`chance`)
    reaches on this many test images with probability 0.001 (one-sided binomial)."""
    n, chance = metrics["num_test_examples"], metrics["chance"]
    luck = binom.ppf(0.999, n, chance) / n
    got = metrics["test_accuracy"]
    assert got > luck, f"test accuracy {got:.3f} <= {luck:.3f} (chance {chance:.3f}, {n} test images)"


def _probe(size=8, n=6):
    return np.random.default_rng(0).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def test_new_task_leaves_earlier_tasks_bit_identical(tmp_path):
    cfg = load_config(CONFIG)
    run = evolve(cfg, tmp_path / "run", agent="a", tasks=["digits"], quiet=True)
    before_file = (run.system.root / "tasks/digits.json").read_bytes()
    before = mu2hub.from_pretrained(run.system.root, task="digits").logits(_probe())
    evolve(cfg, tmp_path / "run", agent="b", tasks=["shapes/label_scale"], quiet=True)
    after = mu2hub.from_pretrained(run.system.root, task="digits")
    assert (run.system.root / "tasks/digits.json").read_bytes() == before_file
    np.testing.assert_array_equal(after.logits(_probe()), before)  # bit-identical
    # the new task's path references frozen components it did not create (the root's or digits')
    shapes = run.system.read_task("shapes/label_scale")
    assert set(shapes.lineage["created"]) < {c.id for c in shapes.components}
    assert_above_chance(shapes.metrics)
    assert (tmp_path / "run/figures/evolution.png").exists()
    history = run.history()
    assert {r["task"] for r in history} == {"digits", "shapes/label_scale"}
    assert any(a == "share" for r in history for a in r["sources"].values())


def test_run_dir_refuses_another_config(tmp_path):
    cfg = load_config(CONFIG)
    run = RunDir(tmp_path / "run")
    run.init_config(cfg, resume=False)
    with pytest.raises(RunConfigMismatchError, match="generations"):
        run.init_config(dict(cfg, generations=5), resume=True)


def _evolve_cmd(workdir, *extra):
    return [sys.executable, str(REPO / "training/evolve.py"), "--config", f"{CONFIG}:2", "--workdir", str(workdir), "--quiet", *extra]


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")


def _children_recorded(workdir: Path) -> int:
    """Trained children on record so far (generation files, or the one history file of older versions)."""
    files = [workdir / "history.jsonl", *workdir.glob("history/*/*.jsonl")]
    return sum(f.read_text().count("\n") for f in files if f.is_file())


def test_sigkill_mid_generation_then_resume(tmp_path):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(_evolve_cmd(workdir), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    # kill once the first child is on record: the generation after it (or its own, if recorded child by child)
    # is in flight
    while time.time() < deadline and proc.poll() is None:
        if _children_recorded(workdir) >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads((workdir / "agents/main.json").read_text()) if (workdir / "agents/main.json").exists() else None
    assert state is None or state["generation"] < 2 or state["loop"] == 0
    out = subprocess.run(_evolve_cmd(workdir, "--resume"), env=_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    run = RunDir(workdir)
    assert run.system.list_tasks() == ["digits", "shapes/label_scale"]
    state = json.loads((workdir / "agents/main.json").read_text())
    assert state["loop"] == 2 and state["generation"] == 0
    for task in ("digits", "shapes/label_scale"):
        mu2hub.from_pretrained(run.system.root, task=task)  # every published path loads and verifies
    # the killed generation was redone from its start: each of its children is on record once
    rows = run.history()
    counts = {}
    for r in rows:
        counts[(r["task"], r["loop"], r["generation"])] = counts.get((r["task"], r["loop"], r["generation"]), 0) + 1
    assert counts == {(t, i, g): 2 for i, t in enumerate(("digits", "shapes/label_scale")) for g in range(2)}


def test_two_agents_at_once_on_one_run_directory(tmp_path):
    workdir = tmp_path / "run"
    RunDir(workdir).init_config(load_config(f"{CONFIG}:2"), resume=False)
    procs = [subprocess.Popen(_evolve_cmd(workdir, "--agent", name, "--tasks", task), env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for name, task in (("a", "digits"), ("b", "shapes/label_scale"))]
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out.decode()[-2000:]
    run = RunDir(workdir)
    assert run.system.list_tasks() == ["digits", "shapes/label_scale"]
    agents = {r["agent"] for r in run.history()}
    assert agents == {"a", "b"}


def test_publish_only_replaces_with_a_better_or_equal_score(tmp_path):
    cfg = load_config(CONFIG)
    run = evolve(cfg, tmp_path / "run", agent="a", tasks=["digits"], quiet=True)
    tf = run.system.read_task("digits")
    # scores are recomputed from the quality and the current sharing: a lower quality is a lower score
    worse = type(tf)(**{**tf.__dict__, "metrics": {**tf.metrics, "validation_accuracy": tf.metrics["validation_accuracy"] - 0.1}})
    assert run.publish_if_better(worse) is False
    assert run.system.read_task("digits").metrics["score"] == tf.metrics["score"]
    equal = type(tf)(**{**tf.__dict__, "metrics": {**tf.metrics, "note": "newer"}})
    assert run.publish_if_better(equal) is True
    assert run.system.read_task("digits").metrics.get("note") == "newer"


def test_mu3net_options_per_action_mu_adapters_depth_and_flops(tmp_path):
    """µ2Net+ options behind config flags: per-action µ, adapters, depth mutation with insertion, FLOPs factor."""
    cfg = load_config(CONFIG)
    cfg.update(space="mu3net-ti0", generations=2, tasks=["digits"],
               hparams=dict(num_layers=2, ds_image_size=32, adapter_dim=8, opt_lr=0.05),
               scorer=dict(base=0.99, num_params=1e6, flops=1e6, root_counts=True))
    cfg["root"] = dict(cfg["root"], image_size=32)
    run = evolve(cfg, tmp_path / "run", quiet=True)
    tf = run.system.read_task("digits")
    assert any(k.startswith("_mu_|") for k in tf.hparams), "per-action µ is inherited through hparams"
    model = mu2hub.from_pretrained(run.system.root, task="digits")
    assert model.task_file.num_layers in (0, 1, 2, 3)
    assert tf.metrics["score"] < tf.metrics["validation_accuracy"]  # size and FLOPs factors both < 1
    actions = {a for r in run.history() for a in r["sources"].values()}
    assert "init" in actions  # every new head at least


def test_unknown_task_fails_before_any_work(tmp_path):
    cfg = load_config(CONFIG)
    cfg["tasks"] = ["digits", "no_such_task"]
    with pytest.raises(KeyError, match="no_such_task.*digits|digits.*no_such_task"):
        evolve(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "history.jsonl").exists()


def test_corrupted_store_file_stops_resume_with_its_name(tmp_path):
    cfg = load_config(CONFIG)
    run = evolve(cfg, tmp_path / "run", agent="a", tasks=["digits"], quiet=True)
    tf = run.system.read_task("digits")
    victim = run.system.root / tf.components[-1].filename
    victim.write_bytes(victim.read_bytes()[:-4])
    with pytest.raises(mu2hub.ComponentIntegrityError, match=tf.components[-1].id):
        evolve(cfg, tmp_path / "run", agent="b", tasks=["shapes/label_scale"], quiet=True)


def test_batched_children_and_prefix_cache_options(tmp_path):
    """Engine options of issue 7: siblings with one batch key train in one vmapped step; frozen prefixes cached."""
    cfg = load_config(CONFIG)
    cfg.update(tasks=["digits"], children_per_generation=3, generations=2, batch_children=True, prefix_cache=True,
               hparams=dict(cfg["hparams"], _mu_=0.1))
    run = evolve(cfg, tmp_path / "run", quiet=True)
    rows = run.history()
    assert len(rows) == 6 and all("cached_blocks" in r for r in rows)
    model = mu2hub.from_pretrained(run.system.root, task="digits")
    assert_above_chance(model.task_file.metrics)


def test_revisit_starts_from_the_best_path_and_never_gets_worse(tmp_path):
    cfg = load_config(CONFIG)
    cfg.update(tasks=["digits"], num_task_iters=2)
    run = evolve(cfg, tmp_path / "run", quiet=True)
    rows = run.history()
    first = max(r["score"] for r in rows if r["loop"] == 0 and r["kept"])
    revisit = [r for r in rows if r["loop"] == 1]
    assert revisit and all(r["parent_task"] == "digits" or r["parent"] == "root" for r in revisit)
    best = run.system.read_task("digits")
    assert best.metrics["score"] >= first


def test_a_state_saved_mid_task_by_an_earlier_version_is_refused_clearly(tmp_path):
    from mu2hub.evolution.loop import Agent

    cfg = load_config(CONFIG)
    run = RunDir(tmp_path / "run")
    run.init_config(cfg, resume=False)
    agent = Agent(run, cfg)
    old = {**agent._fresh_state(), "context": {"users": {}, "locked": []}}  # what mu2hub 0.1 saved mid-task
    run.write_agent("main", old)
    with pytest.raises(RunConfigMismatchError, match="mid-task by an earlier mu2hub"):
        agent.run_all()
    assert not (tmp_path / "run" / "paths").exists()  # refused before anything was written
