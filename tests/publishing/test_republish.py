"""Republishing µ4Net's sharded state, resuming a killed republish, and `mu2hub republish` to the (loopback) Hub.

The µ4Net system state is written as `mu4Net.ipynb` writes it: one folder per agent (`Vit~<task>`), each cycle's
`state_{cycle}_0/` holding only the components that agent created since its last completed cycle under
`"name:agent:id"` keys (ids repeat across agents), `published.csv` with "agent:id" components; a cycle in progress
(`state_3_2/` with a better but unfinished path, `state_3_0/` without a checkpoint) and a multipath `MultiVit`
agent are present and must not be read; one shard is an Orbax directory, the others msgpack files.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import ModelCard

import mu2hub
from mu2hub import cli
from mu2hub.errors import FormatError
from mu2hub.publishing.republish import JOURNAL, republish_reference

import reference_states as R
import mu2net_state as M2

ROOT_AGENT, CLEVR, KITTI, MULTI = "Vit~root_model~checkpoint", "Vit~clevr~count_all", "Vit~kitti~closest_vehicle_distance", "MultiVit~imagenet2012"
ROOT = dict(layers=3, size=16, classes=1)
CLEVR_CFG = dict(layers=3, size=16, classes=8)
KITTI_CFG = dict(layers=4, size=8, classes=4)  # µ4Net lets a path exceed the root by one layer
ROOT_IDS = dict(embedding=0, cls=1, posembed_input=2, encoderblock_0=3, encoderblock_1=4, encoderblock_2=5,
                encoder_norm=6, head=7)
# (agent, cycle) -> {component name: id} that agent created in that cycle
CREATED = {
    (ROOT_AGENT, 0): ROOT_IDS,
    (CLEVR, 1): dict(encoderblock_2=0, head=1, encoder_norm=2),
    (CLEVR, 2): dict(encoder_norm=3, head=4),
    (KITTI, 1): dict(posembed_input=0, encoderblock_3=1, encoder_norm=2, head=3),
}
CLEVR_PATH = {**{k: (ROOT_AGENT, v) for k, v in ROOT_IDS.items() if k in ("embedding", "cls", "posembed_input",
                                                                          "encoderblock_0", "encoderblock_1")},
              "encoderblock_2": (CLEVR, 0), "encoder_norm": (CLEVR, 3), "head": (CLEVR, 4)}
KITTI_PATH = {"embedding": (ROOT_AGENT, 0), "cls": (ROOT_AGENT, 1), "posembed_input": (KITTI, 0),
              "encoderblock_0": (ROOT_AGENT, 3), "encoderblock_1": (ROOT_AGENT, 4), "encoderblock_2": (CLEVR, 0),
              "encoderblock_3": (KITTI, 1), "encoder_norm": (KITTI, 2), "head": (KITTI, 3)}


@functools.lru_cache(maxsize=1)
def _params() -> dict[tuple[str, int], tuple[str, object]]:
    """(agent, id) -> (name, params) for every component any agent created."""
    drawn = {}
    for seed, (cfg, path) in enumerate([(ROOT, {k: (ROOT_AGENT, v) for k, v in ROOT_IDS.items()}),
                                        (CLEVR_CFG, CLEVR_PATH), (KITTI_CFG, KITTI_PATH)]):
        for name, tree in R.init_components(cfg, 50 + seed).items():
            drawn.setdefault(path[name], (name, tree))
    drawn[(CLEVR, 1)] = ("head", R.init_components(CLEVR_CFG, 60)["head"])  # retired in cycle 2
    drawn[(CLEVR, 2)] = ("encoder_norm", R.init_components(CLEVR_CFG, 61)["encoder_norm"])
    return drawn


def _hparams(cfg: dict) -> dict:
    return {"_mu_": 0.2, "_mu_|hp:opt_lr": 0.22, "opt_lr": 0.02, "opt_momentum": 0.8, "opt_nesterov": True,
            "ds_area_range_min": 1.0, "ds_quality_delta": 0.0, "num_layers": cfg["layers"],
            "ds_image_size": cfg["size"], **({"num_classes": cfg["classes"]} if cfg is not ROOT else {})}


def _metrics(score: float) -> dict:
    return {"quality": score, "test_quality": score - 0.01, "score": score * 0.99, "accounted_params": 1e6,
            "flops": 2e9, "generation": 3, "num_cycles": 2, "improved": True}


def _state(agent_dir: Path, cycle: int, gen: int, comps: dict, published: list[dict], orbax: bool = False) -> None:
    d = agent_dir / f"state_{cycle}_{gen}"
    d.mkdir(parents=True)
    R.to_csv(published, d / "published.csv")
    R.to_csv(published, d / "population.csv")
    R.to_csv([{"id": i, "name": n, "agent_id": agent_dir.name, "num_params": 1} for (a, i), (n, _) in comps.items()],
             d / "components.csv")
    (d / "config.json").write_text(json.dumps({"agent_id": agent_dir.name}))
    R.save_checkpoint(d, {f"{n}:{a}:{i}": tree for (a, i), (n, tree) in comps.items()}, cycle, gen, orbax)


def write_mu4net_state(root: Path) -> Path:
    system = root / "munet_system_state"
    params = _params()
    own = lambda agent, cycle: {(agent, i): params[(agent, i)] for i in CREATED[(agent, cycle)].values()}  # noqa: E731
    root_row = R.mu4net_row(ROOT_AGENT, "root_model/checkpoint", 0, None, [(ROOT_AGENT, i) for i in ROOT_IDS.values()],
                            _hparams(ROOT), {"generation": 0})
    _state(system / ROOT_AGENT, 0, 0, own(ROOT_AGENT, 0), [root_row])
    clevr_old = R.mu4net_row(CLEVR, "clevr/count_all", 2, (ROOT_AGENT, 0), [*list(CLEVR_PATH.values())[:6], (CLEVR, 2),
                                                                            (CLEVR, 1)], _hparams(CLEVR_CFG), _metrics(0.7))
    _state(system / CLEVR, 1, 0, own(CLEVR, 1), [clevr_old])
    clevr = R.mu4net_row(CLEVR, "clevr/count_all", 7, (CLEVR, 2), list(CLEVR_PATH.values()), _hparams(CLEVR_CFG),
                         _metrics(0.8))
    _state(system / CLEVR, 2, 0, own(CLEVR, 2), [clevr], orbax=True)
    # cycle 3 in progress: an intermediate save with a better path, and a completed-cycle folder still being written
    unfinished = R.mu4net_row(CLEVR, "clevr/count_all", 12, (CLEVR, 7), list(CLEVR_PATH.values()), _hparams(CLEVR_CFG),
                              _metrics(0.95))
    _state(system / CLEVR, 3, 2, {(CLEVR, 9): params[(CLEVR, 3)]}, [unfinished])
    (system / CLEVR / "state_3_0").mkdir()
    R.to_csv([unfinished], system / CLEVR / "state_3_0" / "published.csv")
    kitti = R.mu4net_row(KITTI, "kitti/closest_vehicle_distance", 3, (CLEVR, 7), list(KITTI_PATH.values()),
                         _hparams(KITTI_CFG), _metrics(0.6))
    _state(system / KITTI, 1, 0, own(KITTI, 1), [kitti])
    router = {"LayerNorm_0": {"scale": np.ones(8, np.float32), "bias": np.zeros(8, np.float32)},
              "Dense_0": {"kernel": np.zeros((8, 2), np.float32), "bias": np.zeros(2, np.float32)}}
    multi = R.mu4net_row(MULTI, "imagenet2012", 0, (CLEVR, 7), [(MULTI, 0)], {"paths": {"path_0": {"id": 7}}}, _metrics(0.5))
    _state(system / MULTI, 1, 0, {(MULTI, 0): ("multipath_router", router)}, [multi, clevr])
    return system


@pytest.fixture(scope="module")
def mu4net(tmp_path_factory):
    root = tmp_path_factory.mktemp("mu4net")
    system = write_mu4net_state(root)
    return system, root / "out", republish_reference(system, root / "out", progress=False)


def _path_params(path: dict) -> dict:
    params = _params()
    return {name: params[source][1] for name, source in path.items()}


@pytest.mark.parametrize("task, cfg, path", [("clevr/count_all", CLEVR_CFG, CLEVR_PATH),
                                             ("kitti/closest_vehicle_distance", KITTI_CFG, KITTI_PATH)])
def test_mu4net_logits_equal_the_linen_models(mu4net, task, cfg, path):
    _, out, _ = mu4net
    model = mu2hub.from_pretrained(out, task=task)
    x = np.random.default_rng(3).uniform(-1, 1, (4, cfg["size"], cfg["size"], 3)).astype(np.float32)
    reference = R.linen_logits(cfg, _path_params(path), x)
    assert M2.rel(model.logits(x), reference) < 1e-5


def test_mu4net_layout_shards_and_skips(mu4net):
    system, out, result = mu4net
    assert sorted(result.tasks) == ["clevr/count_all", "kitti/closest_vehicle_distance"]
    clevr, kitti = result.tasks["clevr/count_all"], result.tasks["kitti/closest_vehicle_distance"]
    # the completed cycle 2's path, not cycle 3's unfinished better one
    assert clevr.lineage["path_id"] == f"{CLEVR}:7" and clevr.lineage["parent"] == f"{CLEVR}:2"
    assert clevr.metrics["validation_accuracy"] == 0.8 and clevr.lineage["reference"]["layout"] == "mu4net"
    assert kitti.lineage["reference"]["components"]["block.2"] == f"encoderblock_2:{CLEVR}:0"  # another agent's, frozen
    assert kitti.component_map()["block.2"].id == clevr.component_map()["block.2"].id
    assert kitti.lineage["reference"]["checkpoints"] == sorted([f"{ROOT_AGENT}/state_0_0/checkpoint_0_0",
                                                                f"{KITTI}/state_1_0/checkpoint_1_0",
                                                                f"{CLEVR}/state_1_0/checkpoint_1_0"])
    created = set(kitti.lineage["created"])  # µ4Net keys say who created what
    assert {kitti.component_map()[s].id for s in ("pos_embed", "block.3", "norm", "head")} == created
    assert kitti.labels == ["<= 8 m", "(8, 20] m", "(20, 999] m", "no vehicle"] and kitti.num_layers == 4
    assert any(MULTI in n and "multipath" in n for n in result.notes)
    assert result.decoded == len({*CLEVR_PATH.values(), *KITTI_PATH.values()})
    state_sources = set(mu2hub.convert.reference_format.read_reference_state(system).sources)
    assert f"{CLEVR}/state_3_2/checkpoint_3_2" not in state_sources and f"{CLEVR}/state_2_0/checkpoint_2_0" in state_sources


def test_mu4net_shards_must_be_complete_and_disjoint(mu4net, tmp_path):
    system, _, _ = mu4net
    broken = tmp_path / "dup" / system.name
    shutil.copytree(system, broken)
    shutil.copytree(broken / CLEVR / "state_1_0", broken / KITTI / "state_0_0")  # the same keys in two shards
    with pytest.raises(FormatError, match=rf"key '\w+:{CLEVR}:\d+' is in two shards"):
        republish_reference(broken, tmp_path / "o1", progress=False)
    broken = tmp_path / "missing" / system.name
    shutil.copytree(system, broken)
    shutil.rmtree(broken / CLEVR / "state_1_0")
    with pytest.raises(FormatError, match=rf"component '{CLEVR}:0' is in no completed shard"):
        republish_reference(broken, tmp_path / "o2", progress=False)
    other = tmp_path / "classes" / system.name
    shutil.copytree(system, other)
    (other / "VitB~cifar10").mkdir()
    with pytest.raises(FormatError, match=r"2 single-path classes \['Vit', 'VitB'\]: pass agent_class="):
        republish_reference(other, tmp_path / "o3", progress=False)
    chosen = republish_reference(other, tmp_path / "o4", agent_class="Vit", tasks=["clevr/count_all"], progress=False)
    assert list(chosen.tasks) == ["clevr/count_all"] and any("VitB~cifar10" in n and "'VitB'" in n for n in chosen.notes)
    with pytest.raises(FormatError, match=r"no single-path agents of class 'VitT3'"):
        republish_reference(other, tmp_path / "o5", agent_class="VitT3", progress=False)


# ---------------------------------------------------------------------------------------------------------
# A killed republish resumes: what was written is not decoded again
# ---------------------------------------------------------------------------------------------------------
def test_killed_republish_resumes(tmp_path):
    state = M2.write_mu2net_state(tmp_path / "experiment", orbax=False)
    out = tmp_path / "out"
    code = ("import sys; from mu2hub.publishing.republish import republish_reference; "
            f"republish_reference({str(state)!r}, {str(out)!r}, labels={{{M2.TASK_D!r}: {M2.PET_LABELS!r}}}, progress=False)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(mu2hub.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    journal, deadline = out / JOURNAL, time.time() + 120
    while not journal.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = len(json.loads(journal.read_text())["components"])
    finished = len(mu2hub.list_tasks(out))
    assert written >= 1 and finished < len(M2.LIVE), "the kill landed after the run had finished"
    result = republish_reference(state, out, labels={M2.TASK_D: M2.PET_LABELS}, progress=False)
    distinct = len({cid for _, pid, _, _, _, names, _ in M2.PATHS if pid in M2.LIVE.values() for cid in names.values()})
    assert result.reused == written and result.decoded == distinct - written and len(result.up_to_date) == finished
    clean = republish_reference(state, tmp_path / "clean", labels={M2.TASK_D: M2.PET_LABELS}, progress=False)
    assert {t: tf.to_json() for t, tf in result.tasks.items()} == {t: tf.to_json() for t, tf in clean.tasks.items()}
    assert sorted(p.name for p in (out / "components").rglob("*.safetensors")) == \
        sorted(p.name for p in (tmp_path / "clean" / "components").rglob("*.safetensors"))


def test_a_damaged_resume_record_is_not_trusted(tmp_path):
    """Entries naming a file that is not there, of another size, or an id that is not a content id are decoded again."""
    state = M2.write_mu2net_state(tmp_path / "experiment", orbax=False)
    out = tmp_path / "out"
    first = republish_reference(state, out, tasks=[M2.TASK_B], progress=False)
    record = json.loads((out / JOURNAL).read_text())
    keys = sorted(record["components"])
    record["components"][keys[0]]["id"] = "../../../etc/passwd"
    record["components"][keys[1]]["bytes"] += 1
    (out / JOURNAL).write_text(json.dumps(record))
    victim = record["components"][keys[2]]["id"]
    (out / "components" / victim[:2] / f"{victim}.safetensors").unlink()
    (out / "tasks" / f"{M2.TASK_B}.json").unlink()
    again = republish_reference(state, out, tasks=[M2.TASK_B], progress=False)
    assert again.decoded == 3 and again.reused == first.decoded - 3
    assert again.tasks[M2.TASK_B].to_json() == first.tasks[M2.TASK_B].to_json()


# ---------------------------------------------------------------------------------------------------------
# The command line, to the Hub and to a folder
# ---------------------------------------------------------------------------------------------------------
def test_cli_republish_to_the_hub_then_verify(hub, tmp_path, capsys):
    state = M2.write_mu2net_state(tmp_path / "experiment", orbax=True)
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({M2.TASK_D: M2.PET_LABELS}))
    argv = ["republish", str(state.parent), "--to", "reference/mu2net", "--labels", str(labels), "--workdir",
            str(tmp_path / "staging"), "--private"]
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    assert "republished 4 task(s)" in out and "commit" in out
    assert f"Republishing {M2.TASK_A}" in err and f"Probing {M2.TASK_A}" in err  # the progress bar, over the bytes to decode
    assert cli.main(["verify", "reference/mu2net"]) == 0
    assert "all checks passed" in capsys.readouterr().out
    comps, cfg = M2.path_comps(M2.LIVE[M2.TASK_C])
    x = np.random.default_rng(4).uniform(-1, 1, (2, cfg["size"], cfg["size"], 3)).astype(np.float32)
    model = mu2hub.from_pretrained("reference/mu2net", task=M2.TASK_C, cache_dir=tmp_path / "cache")
    assert M2.rel(model.logits(x), R.linen_logits(cfg, comps, x)) < 1e-5
    card = ModelCard.load("reference/mu2net")
    assert card.data.library_name == "mu2hub" and M2.TASK_A in card.text
    hub.reset_log()
    assert cli.main(argv) == 0  # a rerun: nothing decoded again, nothing uploaded
    assert "0 components decoded" in capsys.readouterr().out and hub.committed_operations("reference/mu2net") == []


def test_cli_republish_to_a_folder_and_errors(tmp_path, capsys):
    state = M2.write_mu2net_state(tmp_path / "experiment", orbax=False)
    folder = tmp_path / "folder"
    assert cli.main(["republish", str(state), "--to", str(folder), "--tasks", f"{M2.TASK_A},{M2.TASK_B}"]) == 0
    assert sorted(mu2hub.list_tasks(folder)) == sorted([M2.TASK_A, M2.TASK_B])
    assert ModelCard.load(folder / "README.md").data.library_name == "mu2hub"
    assert (folder / JOURNAL).is_file()  # the resume record stays beside the repo's files, never uploaded
    (tmp_path / "bad.json").write_text('{"x": "not a list"}')
    assert cli.main(["republish", str(state), "--to", str(tmp_path / "f2"), "--labels", str(tmp_path / "bad.json")]) == 2
    assert "bad.json: must be a JSON object {task: [class name, ...]}" in capsys.readouterr().err
    assert cli.main(["republish", str(tmp_path), "--to", str(tmp_path / "f3")]) == 2
    assert "neither a µ2Net state folder" in capsys.readouterr().err
