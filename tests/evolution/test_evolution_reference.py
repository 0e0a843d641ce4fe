"""Where an audit against the reference notebooks found our µ2Net semantics off: one test per finding, each of which
failed on the code before the fix (issue 10). The killed-and-resumed history check lives in test_evolution_loop.py."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import mu2hub
from mu2hub import model as vit
from mu2hub.data import get_task, preprocess_eval, preprocess_train
from mu2hub.data.registry import Split, TaskData, register_task
from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.hparams import get_rules
from mu2hub.evolution.loop import ROOT_ID, Agent, forward_flops
from mu2hub.evolution.run import PathRecord, RunDir
from mu2hub.format.system import Dims, Structure

from locations import REPO, TINY_CONFIG

sys.path.insert(0, str(REPO / "training"))
from evolve import load_config  # noqa: E402

CONFIG = str(TINY_CONFIG)


def _tiny(**overrides):
    cfg = load_config(CONFIG)
    cfg.update({"tasks": ["digits"], **overrides})
    return cfg


def _perturbed(tensors, seed):
    rng = np.random.default_rng(seed)
    return {k: (v + rng.normal(0, 1e-3, v.shape)).astype(np.float32) for k, v in tensors.items()}


# ---------------------------------------------------------------------------------------------------
# Scores compared under the sharing of *now* (the reference rescores on every call)
# ---------------------------------------------------------------------------------------------------


def test_publish_compares_both_paths_under_the_current_sharing(tmp_path):
    run = evolve(_tiny(), tmp_path / "run", quiet=True)  # base 0.95: the score pays for accounted parameters
    old = run.system.read_task("digits")
    # another task comes to share every component of digits' path, which halves what digits accounts for
    run.system.write_task(dataclasses.replace(old, task="shapes/label_scale",
                                              lineage={**old.lineage, "path_id": "other-000001"}))
    # a rival digits path of fresh copies (nobody shares them), a little better on validation; trained when digits was
    # alone, so its training-time score beats the old path's training-time score
    refs = [run.system.write_component(_perturbed(run.read_component(c.id), i), c.kind, c.slot)
            for i, c in enumerate(old.components)]
    quality = old.metrics["validation_accuracy"] * 1.01
    stale = old.metrics["score"] * quality / old.metrics["validation_accuracy"]
    rival = dataclasses.replace(old, components=refs, lineage={**old.lineage, "path_id": "main-999999"},
                                metrics={**old.metrics, "validation_accuracy": quality, "score": stale})
    assert stale > old.metrics["score"]
    assert run.publish_if_better(rival) is False  # now the old path, half of it shared, scores higher
    assert run.system.read_task("digits").lineage["path_id"] == old.lineage["path_id"]
    # once nobody shares the old path's components again, the rival wins, with the score of this moment recorded
    (run.system.root / "tasks/shapes/label_scale.json").unlink()
    assert run.publish_if_better(rival) is True
    assert run.system.read_task("digits").metrics["score"] == pytest.approx(stale)


def test_a_revisited_task_starts_from_its_path_rescored_under_the_current_sharing(tmp_path):
    cfg = _tiny()
    run = evolve(cfg, tmp_path / "run", quiet=True)
    old = run.system.read_task("digits")
    run.system.write_task(dataclasses.replace(old, task="shapes/label_scale",
                                              lineage={**old.lineage, "path_id": "other-000001"}))
    agent = Agent(RunDir(tmp_path / "run"), cfg)
    agent.run.init_config(cfg, resume=True)
    state = agent._fresh_state()
    agent._start_task(state, "digits", agent.ensure_root())
    pid = old.lineage["path_id"]
    rescored = state["context"]["scores"][pid]
    assert state["population"] == [pid] and rescored > old.metrics["score"]
    # that rescored score is the bar a same-task child must reach (the revisit threshold)
    child = agent._make_child(agent.run.read_path(pid), "digits", agent.data("digits"),
                              {k: v for k, v in agent.defaults.items() if k.startswith("ds_")}, state["context"],
                              np.random.default_rng(0))
    assert agent._child_args(agent.run.read_path(pid), child, "digits", state["context"])["best_score"] == rescored


# ---------------------------------------------------------------------------------------------------
# The clone walk never resurrects a retired path's components
# ---------------------------------------------------------------------------------------------------


def test_clone_walk_skips_retired_ancestors(tmp_path):
    cfg = _tiny()
    run = RunDir(tmp_path / "run")
    run.init_config(cfg, resume=False)
    agent = Agent(run, cfg)
    root = agent.ensure_root()
    data = agent.data("digits")
    hp = {**root.hparams, "_mu_": 0.3, "num_classes": data.num_classes}

    def comp(tensors, slot):
        ref = run.system.write_component(tensors, slot.split(".")[0], slot)
        return {"id": ref.id, "params": ref.params, "bytes": ref.bytes}

    head = comp(vit.init_component("head", agent.dims, jax.random.key(1), num_classes=data.num_classes), "head")
    # a1: digits' own 2-layer path with its own block.1 X; a2 (its child) dropped to 1 layer, and became the best
    x = comp(_perturbed(run.read_component(root.components["block.1"]["id"]), 0), "block.1")
    a1 = PathRecord("main-000001", "digits", ROOT_ID, {**hp, "num_layers": 2},
                    {**root.components, "block.1": x, "head": head}, {"quality": 0.5, "score": 0.4, "accounted_params": 1})
    a2 = PathRecord("main-000002", "digits", a1.id, {**hp, "num_layers": 1},
                    {s: c for s, c in a1.components.items() if s != "block.1"}, {"quality": 0.6, "score": 0.5,
                                                                                  "accounted_params": 1})
    for rec in (a1, a2):
        run.write_path(rec)
    assert run.publish_if_better(agent.task_file(a2, data, 0.5))
    state = agent._fresh_state()
    agent._start_task(state, "digits", root)  # revisit: a2 is the population, a1 is retired
    ds = {k: v for k, v in agent.defaults.items() if k.startswith("ds_")}
    rng = np.random.default_rng(0)
    regrown = [c for c in (agent._make_child(a2, "digits", data, ds, state["context"], rng) for _ in range(60))
               if c.structure.num_layers == 2]
    assert regrown, "no child grew block.1 back"
    for child in regrown:  # the reference re-pointed a2's parent to the root when a1 was collected
        assert child.sources["block.1"] in {("share", root.components["block.1"]["id"]),
                                            ("clone", root.components["block.1"]["id"])}


# ---------------------------------------------------------------------------------------------------
# The µ3Net / µ4Net learning-rate schedules, sampler and population cap
# ---------------------------------------------------------------------------------------------------


def _mu3net(**overrides):
    cfg = _tiny(**{"space": "mu3net-ti0", "hparams": dict(num_layers=2, ds_image_size=32, adapter_dim=8, opt_lr=0.05),
                   "scorer": dict(base=0.99, num_params=1e6, flops=1e6, root_counts=True), **overrides})
    # µ3Net-Ti0 paths are 32/48 px: a random root of patch 8 keeps these wiring tests fast (they test the rules)
    cfg["root"] = dict(hidden_size=16, num_heads=2, mlp_dim=32, patch_size=8, num_layers=2, image_size=32, init="random")
    return cfg


def test_mu3net_spaces_train_with_their_own_schedule(tmp_path):
    # µ3Net's `linear` schedule (warm-up from lr/1000) exists only in its variant: the loop must pass it
    cfg = _mu3net(hparams=dict(num_layers=2, ds_image_size=32, adapter_dim=8, opt_lr=0.05, opt_lr_schedule="linear"))
    run = evolve(cfg, tmp_path / "run", quiet=True)
    assert run.system.read_task("digits").hparams["opt_lr_schedule"] == "linear"
    assert [get_rules(s).schedule for s in ("mu2net", "mu2net-ti3", "mu3net", "mu3net-ti0", "mu4net")] == \
        ["mu2net", "mu2net", "mu3net", "mu3net", "mu3net"]


def test_mu3net_agent_sampler_and_population_cap_are_wired(tmp_path):
    cfg = _mu3net(children_per_generation=3, population_max=2)
    run = RunDir(tmp_path / "run")
    run.init_config(cfg, resume=False)
    agent = Agent(run, cfg)
    root = agent.ensure_root()
    state = agent._fresh_state()
    agent._start_task(state, "digits", root)
    agent._generation(state, "digits", root, None)
    assert len(state["population"]) == 2  # children of the root are always kept, then cut to the best 2 ...
    assert len([r for r in run.history() if r["kept"]]) == 3
    scores = state["context"]["scores"]
    top = sorted(scores, key=lambda p: (scores[p], p), reverse=True)[:2]
    assert sorted(state["population"]) == sorted(top)  # ... by score
    assert "seeds" not in state["samplers"]["digits"]  # µ3Net's sampler: no rotating seed pool
    assert (get_rules("mu3net").population_max, get_rules("mu3net-ti0").population_max) == (16, 7)
    assert get_rules("mu4net").population_max == 5 and get_rules("mu4net").oldest_on_tie
    assert get_rules("mu2net").population_max is None and get_rules("mu2net").sampler == "task"


# ---------------------------------------------------------------------------------------------------
# Colour jitter on the reference's [-1, 1] scale
# ---------------------------------------------------------------------------------------------------


def test_brightness_delta_shifts_by_at_most_delta_on_the_minus_one_to_one_scale():
    gray = np.full((1, 8, 8, 3), 128, np.uint8)  # mid-gray: no clipping either way
    plain = np.asarray(preprocess_eval(gray, 8))
    shifts = np.array([float((np.asarray(preprocess_train(gray, 8, {"ds_brightness_delta": 0.2, "ds_crop": False},
                                                          jax.random.key(k))) - plain).mean()) for k in range(200)])
    assert np.abs(shifts).max() <= 0.2 + 1e-6  # the reference adds U(-d, d) to images in [-1, 1]
    assert np.abs(shifts).max() > 0.18 and abs(shifts.mean()) < 0.03
    two = np.array([[[[64] * 3, [192] * 3]]], np.uint8).repeat(2, 1)
    base = np.ptp(np.asarray(preprocess_eval(two, 2)))
    for k in range(20):  # contrast is scale-free: the spread scales by a factor in [1 - d, 1 + d] on any scale
        spread = np.ptp(np.asarray(preprocess_train(two, 2, {"ds_contrast_delta": 0.2, "ds_crop": False},
                                                    jax.random.key(k))))
        assert 0.8 - 1e-5 <= spread / base <= 1.2 + 1e-5


# ---------------------------------------------------------------------------------------------------
# `opt_momentum=None` (µ2Net's v1 list) trains
# ---------------------------------------------------------------------------------------------------


def test_plain_sgd_children_train_are_kept_and_inherit_nothing(tmp_path):
    cfg = _tiny(space="mu2net-ti3", generations=2,
                hparams=dict(num_layers=2, ds_image_size=16, opt_lr=0.05, opt_momentum=None, ds_crop=False,
                             ds_flip_left_right=False))
    cfg["root"] = dict(cfg["root"], image_size=16)
    run = evolve(cfg, tmp_path / "run", quiet=True)
    tf = run.system.read_task("digits")
    assert tf.hparams["opt_momentum"] is None or tf.hparams["opt_momentum"] in (0.2,)  # one step along the v1 list
    none = [r for r in run.history() if r["kept"] and run.read_path(r["kept"]).hparams["opt_momentum"] is None]
    assert none, "no plain-SGD child was kept"
    for r in none:  # no momentum, no trace stored for its components
        created = run.read_path(r["kept"]).created
        assert created and all(run.read_trace(cid) is None for cid in created)
    mu2hub.from_pretrained(run.system.root, task="digits")


# ---------------------------------------------------------------------------------------------------
# Validation subsets: a seeded sample of the split, not its first N examples
# ---------------------------------------------------------------------------------------------------


@register_task("tests/digits_validation_sorted_by_class")
def _sorted_validation(*, seed: int = 0) -> TaskData:
    d = get_task("digits", seed=seed)
    order = np.argsort(d.validation.labels, kind="stable")
    return dataclasses.replace(d, name="tests/digits_validation_sorted_by_class",
                               validation=Split(d.validation.images[order], d.validation.labels[order]))


def test_validation_subset_is_a_seeded_sample_not_the_first_examples(tmp_path):
    cfg = _tiny(tasks=["tests/digits_validation_sorted_by_class"], validation_examples_max=40)
    agents = [Agent(RunDir(tmp_path / str(i)), cfg) for i in range(2)]
    subsets = [a.data("tests/digits_validation_sorted_by_class").validation for a in agents]
    assert len(subsets[0]) == 40
    assert len(set(subsets[0].labels.tolist())) >= 8  # the first 40 would hold one or two classes
    np.testing.assert_array_equal(subsets[0].labels, subsets[1].labels)  # fixed by the run's seed: same on every host
    np.testing.assert_array_equal(subsets[0].images, subsets[1].images)
    full = _sorted_validation().validation
    rows = {full.images[i].tobytes() for i in range(len(full))}
    assert all(img.tobytes() in rows for img in subsets[0].images)


# ---------------------------------------------------------------------------------------------------
# FLOPs counted on a CPU lowering, before optimisation, as the reference
# ---------------------------------------------------------------------------------------------------


def test_flops_come_from_the_unoptimised_cpu_lowering_whatever_the_device():
    s = Structure(Dims(16, 2, 32, 4), 8, 2, 10)
    params = {slot: {k: jax.ShapeDtypeStruct(shape, np.float32) for k, shape in
                     vit.expected_shapes(slot.split(".")[0], s.dims, **vit.slot_kwargs(s, slot)).items()}
              for slot in s.slots()}
    images = jax.ShapeDtypeStruct((1, 8, 8, 3), np.float32)
    forward = jax.jit(functools.partial(vit.apply_path, attention="xla", fuse_qkv=False), static_argnums=0)
    lowered = forward.trace(s, params, images).lower(lowering_platforms=("cpu",))
    reference = lowered.cost_analysis()["flops"]  # HLO cost analysis of the forward at batch 1, not optimised
    assert forward_flops(s) == reference
    assert lowered.compile().cost_analysis()["flops"] != reference  # what an optimising backend would count
    forward_flops.cache_clear()
    with jax.default_device(jax.devices()[-1]):
        assert forward_flops(s) == reference


# ---------------------------------------------------------------------------------------------------
# batch_children honours device placement
# ---------------------------------------------------------------------------------------------------

_BATCHED = textwrap.dedent("""
    import json, sys, jax
    sys.path.insert(0, sys.argv[2])
    from evolve import load_config
    from mu2hub.evolution.loop import Agent
    from mu2hub.evolution.run import RunDir
    assert jax.device_count() == 4
    cfg = load_config(sys.argv[1])
    cfg.update(tasks=["digits"], children_per_generation=8, batch_children=True, hparams=dict(cfg["hparams"], _mu_=0.1))
    run = RunDir(sys.argv[3])
    run.init_config(cfg, resume=False)
    seen = set()
    Agent(run, cfg, log=lambda *_: None).run_all(progress=lambda i, n, m: seen.update(d.id for d in m["loss"].devices()))
    print(json.dumps({"devices": [r.get("devices") for r in run.history()], "seen": sorted(seen),
                      "ids": [d.id for d in jax.devices()]}))
""")


def test_batched_children_train_on_the_devices_placement_gives_them(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", _BATCHED, CONFIG, str(REPO / "training"), str(tmp_path / "run")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["seen"] == got["ids"]  # the steps really ran on all four devices ...
    assert got["devices"] == [[i % 4] for i in range(8)]  # ... child i on device i mod 4: two siblings per device
