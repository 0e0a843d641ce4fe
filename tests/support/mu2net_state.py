"""A µ2Net state written the notebook's way (`reference_states.py`): four tasks whose paths share components, the
latest state beside an older decoy, in msgpack or Orbax. Used by the republishing, hostile-file and resume tests."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import numpy as np

import reference_states as R

TASK_A, TASK_B, TASK_C, TASK_D = "clevr/count_all", "dsprites/label_orientation", "kitti/count_vehicles", "oxford_iiit_pet"
ROOT = dict(layers=3, size=16, classes=1)
A = dict(layers=3, adapters=(1,), size=16, classes=8)
B = dict(layers=2, size=8, classes=40)
C = dict(layers=3, adapters=(0, 2), size=16, classes=4)
D = dict(layers=1, size=16, classes=37)
# (task, path id, parent, parent task, config, {component name: id}, score). Shared ids = shared frozen components:
# block 0 (3) is in every path, task B reuses task A's encoderblock_1 (9), A's older row (3) loses on score.
PATHS = [
    (R.NOT_TRAINABLE, 0, -1, None, ROOT, dict(embedding=0, cls=1, posembed_input=2, encoderblock_0=3, encoderblock_1=4,
                                              encoderblock_2=5, encoder_norm=6, head=7), None),
    (TASK_A, 3, 0, R.NOT_TRAINABLE, A, dict(embedding=0, cls=1, posembed_input=2, residual_adapter_1=8, encoderblock_0=3,
                                            encoderblock_1=9, encoderblock_2=5, encoder_norm=22, head=21), 0.80),
    (TASK_A, 5, 3, TASK_A, A, dict(embedding=0, cls=1, posembed_input=2, residual_adapter_1=8, encoderblock_0=3,
                                   encoderblock_1=9, encoderblock_2=10, encoder_norm=11, head=12), 0.90),
    (TASK_B, 9, 5, TASK_A, B, dict(embedding=0, cls=1, posembed_input=13, encoderblock_0=3, encoderblock_1=9,
                                   encoder_norm=14, head=15), 0.75),
    (TASK_C, 14, 0, R.NOT_TRAINABLE, C, dict(embedding=16, cls=1, posembed_input=2, residual_adapter_0=17,
                                             encoderblock_0=3, encoderblock_1=4, residual_adapter_2=18,
                                             encoderblock_2=5, encoder_norm=19, head=20), 0.60),
    (TASK_D, 16, 0, R.NOT_TRAINABLE, D, dict(embedding=0, cls=1, posembed_input=2, encoderblock_0=3, encoder_norm=23,
                                             head=24), 0.55),
]
LIVE = {TASK_A: 5, TASK_B: 9, TASK_C: 14, TASK_D: 16}
PET_LABELS = [f"breed {i}" for i in range(37)]

@functools.lru_cache(maxsize=1)
def component_params() -> dict[int, tuple[str, object]]:
    """Component id -> (name, params), each drawn once from the Linen init of the first path that uses it."""
    comps: dict[int, tuple[str, object]] = {}
    for _, pid, _, _, cfg, names, _ in PATHS:
        trees = R.init_components(cfg, pid)
        assert sorted(trees) == sorted(names)  # the table lists exactly the model's components
        for name, tree in trees.items():
            comps.setdefault(names[name], (name, tree))
    return comps

def path_comps(pid: int) -> tuple[dict[str, object], dict]:
    comps = component_params()
    (row,) = [r for r in PATHS if r[1] == pid]
    return {name: comps[cid][1] for name, cid in row[5].items()}, row[4]

def _hparams(cfg: dict) -> dict:
    # pandas writes a set's order: hparams_keys / metrics_keys are sets in paths_to_df, any order must do
    return {"opt_lr": 0.01, "adapter_layers": "_".join(map(str, cfg.get("adapters", ()))), "ds_image_size": cfg["size"],
            "num_layers": cfg["layers"], "_mu_": 0.2, "num_classes": cfg["classes"], "adapter_dim": R.ADAPTER,
            "opt_nesterov": False, "opt_lr_schedule": "cosine", "ds_crop": True}

def write_mu2net_state(experiment: Path, *, orbax: bool) -> Path:
    """`save_state` of an experiment: state_10_0 (the latest) and an older state_9_3 decoy; returns state_10_0."""
    state = experiment / "state_10_0"
    state.mkdir(parents=True)
    comps = component_params()
    rows = []
    for task, pid, parent, parent_task, cfg, names, score in PATHS:
        trained = score is not None
        metrics = {"quality": score, "test_quality": score and round(score - 0.05, 4), "generation": pid % 3,
                   "offsprings_per_task": '{"%s": 2}' % TASK_A if trained else "{}", "reloads": 1, "private": False,
                   "mutations": '{"opt_lr": [0.02, 0.01]}', "evals": [0.5, score] if trained else None}
        rows.append(R.mu2net_row(task, pid, parent, parent_task, list(names.values()), _hparams(cfg), metrics, score,
                                 1234.5 if trained else float("nan")))
    R.to_csv(rows, state / "population.csv")
    R.to_csv(rows, state / "paths.csv")
    # comps_df: one block of rows per task iteration (its paths' components, the locks of the time), appended;
    # component 30 belonged to a child pruned since and is in no checkpoint.
    history, locks = [], {}
    for task, pid, _, _, _, names, _ in PATHS:
        for cid in names.values():
            locks.setdefault(cid, set()).add(task)
        seen = [*names.values(), *([30] if task == TASK_A else [])]
        history += [{"id": cid, "name": comps[cid][0] if cid in comps else "encoderblock_2",
                     "num_params": 1, "train_locks": ",".join(sorted(locks.get(cid, ())))} for cid in seen]
    R.to_csv(history, state / "components.csv")
    target = {f"{name}:{cid}": tree for cid, (name, tree) in comps.items()}
    target.update({f"opt_state:{name}:{cid}": R.bf16_trace(tree) for cid, (name, tree) in comps.items() if cid > 7})
    R.save_checkpoint(state, target, 10, 0, orbax)
    (state / "checkpoint_10_tmp").write_bytes(b"a msgpack save in progress")
    (state / "checkpoint_11_0.orbax-checkpoint-tmp-1").mkdir()  # an Orbax save in progress
    decoy = experiment / "state_9_3"  # lexically after state_10_0: natural order must win
    decoy.mkdir()
    shutil.copy(state / "population.csv", decoy)
    (decoy / "checkpoint_9_3").write_bytes(b"stale")
    return state

def rel(a, b) -> float:
    """Largest absolute difference relative to the largest magnitude of `b`."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))

def edit_population(d: Path, task: str, **cells) -> None:
    """Set cells of `task`'s rows of the state's population.csv."""
    import pandas as pd

    df = pd.read_csv(d / "population.csv", dtype=str, keep_default_na=False)
    for k, v in cells.items():
        df.loc[df["task_name"] == task, k] = v
    df.to_csv(d / "population.csv", index=False)
