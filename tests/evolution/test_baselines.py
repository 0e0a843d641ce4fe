"""Baselines measured in the same run, pretrained roots shipped as mu2hub repos, and the frozen-random-root warning."""

from __future__ import annotations

import sys

import jax
import numpy as np
import pytest

from mu2hub import model as vit
from mu2hub.evolution import baselines
from mu2hub.publishing import comparison
from mu2hub.evolution.evolve import evolve
from mu2hub.evolution.loop import Agent, frozen_random_blocks
from mu2hub.evolution.run import RunDir
from mu2hub.format.system import Dims, Structure
from mu2hub.convert.roots import checkpoint_dims, read_checkpoint, root_from_config

from locations import ASSETS, TINY_CONFIG, TRAINING

sys.path.insert(0, str(TRAINING))
from evolve import load_config  # noqa: E402

TINY_ROOT = ASSETS / "tiny_root"


def test_search_budgets_follow_the_winning_line_within_the_task():
    rows = [{"task": "t", "kept": "a", "examples": 100}, {"task": "t", "kept": None, "examples": 100},
            {"task": "t", "kept": "b", "examples": 50}, {"task": "t", "kept": "c", "examples": 70},
            {"task": "other", "kept": "o", "examples": 1000}]
    parents = {"a": ("o", "other"), "b": ("a", "t"), "c": ("root", "root")}
    b = baselines.search_budgets(rows, "t", "b", parents.__getitem__)
    assert (b.total, b.lineage, b.children) == (320, 150, 4)  # b (50) + its parent a (100); o is another task's


def test_finetune_params_start_from_the_checkpoint_with_a_new_zero_head():
    dims = Dims(16, 2, 32, 4)
    start = vit.init_path(Structure(dims, 8, 2, 1), jax.random.key(0))
    target = Structure(dims, 12, 2, 5, adapter_layers=(1,), adapter_dim=8)  # another image size, an adapter
    params = baselines.finetune_params(target, start, seed=3)
    for slot in ("patch_embed", "cls", "block.0", "block.1", "norm"):
        for k, v in start[slot].items():
            np.testing.assert_array_equal(params[slot][k], v)
    assert params["pos_embed"]["embedding"].shape == (1, 10, 16)  # 3×3 grid + class token, resampled
    assert not np.any(params["head"]["kernel"]) and params["head"]["kernel"].shape == (16, 5)
    assert "adapter.1" in params and vit.check_shapes(target, params) == []


def test_comparison_rows_and_verdicts():
    class TF:
        def __init__(self, m):
            self.metrics = m

    files = {"a": TF({"test_accuracy": 0.9, "from_scratch_test_accuracy": 0.8, "finetune_lineage_test_accuracy": 0.85}),
             "b": TF({"test_accuracy": 0.7, "from_scratch_test_accuracy": 0.75, "finetune_lineage_test_accuracy": 0.7})}
    rows, headers, findings = comparison.comparison(files)
    assert headers == ["task", "evolved", "scratch (total) (Δ)", "fine-tune (lineage) (Δ)", "verdict"]
    assert rows[0] == ["a", "0.900", "0.800 (+0.100)", "0.850 (+0.050)", "wins"]
    assert rows[1][-1] == "loses" and rows[2][:2] == ["mean", "0.800"]
    assert findings == ["a: evolution beats every baseline", "b: evolution loses to scratch (total)"]
    assert comparison.parse("all") == comparison.ALL and comparison.parse("none") == ()
    with pytest.raises(ValueError, match="unknown baselines"):
        comparison.parse("scratch:everything")


def test_a_shipped_root_is_a_mu2hub_repo_read_as_a_root():
    init = f"mu2hub:{TINY_ROOT}"
    assert checkpoint_dims(init) == Dims(16, 2, 32, 4)
    ckpt = read_checkpoint(init, head=False)
    assert ckpt.structure.num_classes == 1 and not np.any(ckpt.params["head"]["kernel"])
    assert ckpt.source == "mu2hub:tiny_root#shapes-pretraining"  # no local path in what gets published
    assert ckpt.info["test_accuracy"] > 0.5  # what its card states: it learned something
    structure, params, lineage = root_from_config({"init": init, "image_size": 8, "num_layers": 1})
    assert structure.num_layers == 1 and "block.1" not in params and lineage["init"] == ckpt.source
    card = (TINY_ROOT / "README.md").read_text()
    assert "training/pretrain_root.py --preset tiny" in card and "excluding every factor combination" in card


def test_a_random_root_with_frozen_blocks_is_warned_about(tmp_path):
    cfg = load_config(str(TINY_CONFIG))
    assert not frozen_random_blocks(cfg)
    random_cfg = {**cfg, "root": dict(hidden_size=16, num_heads=2, mlp_dim=32, patch_size=4, num_layers=2,
                                      image_size=8, init="random")}
    said: list[str] = []
    Agent(RunDir(tmp_path / "r"), random_cfg, log=said.append)
    assert said and said[0].startswith("WARNING: the root is random-init with 2 blocks") and "pretrain_root.py" in said[0]
    zero = {**random_cfg, "root": {**random_cfg["root"], "num_layers": 0}, "hparams": {**cfg["hparams"], "num_layers": 0}}
    said.clear()
    Agent(RunDir(tmp_path / "z"), zero, log=said.append)
    assert not said  # the reference's Ti/16 "0 layers": nothing frozen to warn about


def test_the_loop_records_baselines_in_the_task_file(tmp_path):
    cfg = load_config(str(TINY_CONFIG))
    cfg.update(tasks=["shapes/label_scale"], baselines="scratch:lineage,finetune:lineage")
    run = evolve(cfg, tmp_path / "run", quiet=True)
    tf = run.best_tasks()["shapes/label_scale"]
    m = tf.metrics
    rows = [r for r in run.history() if r["task"] == "shapes/label_scale"]
    assert m["search_examples"] == sum(r["examples"] for r in rows) and 0 < m["lineage_examples"] <= m["search_examples"]
    assert m["finetune_from"] == "root"
    for key in ("from_scratch_lineage_test_accuracy", "finetune_lineage_test_accuracy"):
        assert 0.0 <= m[key] <= 1.0
    assert "from_scratch_test_accuracy" not in m  # not asked for
    assert (tmp_path / "run" / "figures" / "baselines.png").stat().st_size > 1000


def test_evolve_cli_takes_baselines_and_refuses_unknown_ones(tmp_path, capsys):
    import evolve as evolve_cli

    code = evolve_cli.main(["--config", str(TINY_CONFIG), "--workdir", str(tmp_path / "run"),
                            "--quiet", "--baselines", "scratch:everything"])
    assert code == 2 and "unknown baselines ['scratch:everything']" in capsys.readouterr().err
    assert not (tmp_path / "run" / "agents").exists()  # refused before anything trained
