"""Republishing a µ2Net state written the notebook's way: each task's logits are the reference Linen model's.

The state (`reference_states.py`) is built with the notebook's own code path: a vit_jax-named Linen ViT with
µ2Net's residual adapters, `flax.training.checkpoints.save_checkpoint` (the msgpack file and the Orbax directory),
pandas CSVs with the notebook's columns, `components.csv` as its append-only history (repeated rows, pruned
components). Logits are compared with the Linen model's apply on the same input, to 1e-5 in float32.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import mu2hub
from mu2hub.inference.task import TaskModel
from mu2hub.errors import FormatError, ShapeMismatchError, TaskNotFoundError
from mu2hub.convert.reference_format import adapter_layers_of, convert_component, read_reference_state
from mu2hub.publishing.republish import republish_reference

import reference_states as R
from mu2net_state import (LIVE, PATHS, PET_LABELS, TASK_A, TASK_B, TASK_C, TASK_D, component_params, edit_population,
                          path_comps, rel, write_mu2net_state)


@pytest.fixture(scope="module", params=["msgpack", "orbax"])
def mu2net(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"mu2net-{request.param}")
    state = write_mu2net_state(root / "experiment:large:2022-05-25-10-00-00", orbax=request.param == "orbax")
    result = republish_reference(state.parent, root / "out", labels={TASK_D: PET_LABELS}, progress=False)
    return state, root / "out", result


# ---------------------------------------------------------------------------------------------------------
# The check against the reference's own model
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(LIVE))
def test_logits_equal_the_linen_models(mu2net, task):
    _, out, _ = mu2net
    model = mu2hub.from_pretrained(out, task=task)
    comps, cfg = path_comps(LIVE[task])
    x = np.random.default_rng(1).uniform(-1, 1, (4, cfg["size"], cfg["size"], 3)).astype(np.float32)
    reference, ours = R.linen_logits(cfg, comps, x), model.logits(x)
    assert ours.shape == (4, cfg["classes"])
    assert rel(ours, reference) < 1e-5
    # Read as exact GELU, the same weights would miss the reference: the activation is what makes it exact.
    exact = dataclasses.replace(model.config, dims=dataclasses.replace(model.config.dims, activation="gelu"))
    assert rel(TaskModel(exact, model.task_file, model.params).logits(x), reference) > 1e-4


def _reference_pp(images_uint8: np.ndarray, size: int, pixel_scale: int = 1) -> np.ndarray:
    """The notebook's eval `_pp` after VTAB's conversion: tile to 3 channels (×255 for dSprites), x / 127.5 - 1,
    `tf.image.resize` (bilinear, half-pixel centres, no antialias: torch's `interpolate` computes the same), clip."""
    x = images_uint8.astype(np.float32)
    x = np.repeat(x, 3, axis=-1) * pixel_scale if x.shape[-1] == 1 else x
    x = torch.from_numpy(x / 127.5 - 1).permute(0, 3, 1, 2)
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x.permute(0, 2, 3, 1).clamp(-1, 1).numpy()


@pytest.mark.parametrize("task", [TASK_A, TASK_B])
def test_raw_images_get_the_reference_answer(mu2net, task):
    """From a raw image to logits: the task file's preprocessing is the reference's (no antialias; dSprites' 0/1
    pixels scaled by 255 and tiled to 3 channels)."""
    _, out, _ = mu2net
    model = mu2hub.from_pretrained(out, task=task)
    comps, cfg = path_comps(LIVE[task])
    rng = np.random.default_rng(2)
    if task == TASK_B:  # dSprites: 64×64 binary sprites, one channel
        raw, scale = rng.integers(0, 2, (3, 64, 64, 1), dtype=np.uint8), 255
    else:
        raw, scale = rng.integers(0, 256, (3, 37, 29, 3), dtype=np.uint8), 1
    reference = R.linen_logits(cfg, comps, _reference_pp(raw, cfg["size"], scale))
    assert rel(model.logits(raw), reference) < 1e-4
    # An antialiased resize (mu2hub's default for its own tasks) would not be the reference's input.
    smooth = dataclasses.replace(model.task_file, preprocessing={**model.task_file.preprocessing, "antialias": True})
    assert rel(TaskModel(model.config, smooth, model.params).logits(raw), reference) > 1e-3


def test_to_transformers_keeps_the_reference_answer(mu2net, tmp_path):
    """A republished path without adapters as a transformers ViT: hidden_act gelu_pytorch_tanh, same logits."""
    import transformers

    _, out, _ = mu2net
    mu2hub.from_pretrained(out, task=TASK_D).to_transformers(tmp_path / "hf")
    peer = transformers.ViTForImageClassification.from_pretrained(tmp_path / "hf").eval()
    assert peer.config.hidden_act == "gelu_pytorch_tanh" and peer.config.id2label[3] == PET_LABELS[3]
    comps, cfg = path_comps(LIVE[TASK_D])
    x = np.random.default_rng(5).uniform(-1, 1, (2, cfg["size"], cfg["size"], 3)).astype(np.float32)
    with torch.no_grad():
        theirs = peer(torch.from_numpy(x.transpose(0, 3, 1, 2))).logits.numpy()
    assert rel(theirs, R.linen_logits(cfg, comps, x)) < 1e-4


def test_published_layout(mu2net):
    state_dir, out, result = mu2net
    files = result.tasks
    assert sorted(files) == sorted(LIVE) and sorted(mu2hub.list_tasks(out)) == sorted(LIVE)
    config = mu2hub.from_pretrained(out, task=TASK_A).config
    assert config.dims.activation == "gelu_tanh" and (config.root_image_size, config.root_num_layers) == (16, 3)
    by_task = {t: tf.component_map() for t, tf in files.items()}
    assert by_task[TASK_A]["block.0"].id == by_task[TASK_B]["block.0"].id == by_task[TASK_C]["block.0"].id
    assert by_task[TASK_A]["block.1"].id == by_task[TASK_B]["block.1"].id
    assert by_task[TASK_A]["patch_embed"].id != by_task[TASK_C]["patch_embed"].id
    ids = {c.id for tf in files.values() for c in tf.components}
    assert len(list((out / "components").rglob("*.safetensors"))) == len(ids)
    a = files[TASK_A]  # the best row (path 5, score 0.9), not the older one (path 3)
    assert a.lineage["path_id"] == "5" and a.lineage["parent"] == "3" and a.lineage["parent_task"] == TASK_A
    assert a.lineage["reference"]["components"]["head"] == "head:12" and a.lineage["reference"]["layout"] == "mu2net"
    assert a.lineage["reference"]["checkpoints"] == ["state_10_0/checkpoint_10_0"]
    assert a.labels == [str(i) for i in range(3, 11)] and a.lineage["reference"]["labels"] == "VTAB: number of objects"
    assert files[TASK_C].labels == ["0", "1", "2", "3 or more"]
    assert files[TASK_D].labels == PET_LABELS and files[TASK_D].lineage["reference"]["labels"] == "given"
    assert result.placeholders == []
    assert a.preprocessing == {"resize": 16, "method": "bilinear", "antialias": False, "value_range": [-1, 1],
                               "channels": "rgb"}
    assert files[TASK_B].preprocessing["pixel_scale"] == 255 and files[TASK_B].image_size == 8
    assert a.adapter_layers == (1,) and a.adapter_dim == R.ADAPTER and a.hparams["adapter_layers"] == [1]
    assert files[TASK_C].adapter_layers == (0, 2) and files[TASK_D].num_layers == 1
    assert a.metrics["validation_accuracy"] == 0.9 and a.metrics["test_accuracy"] == pytest.approx(0.85)
    assert a.metrics["reference"]["mutations"] == {"opt_lr": [0.02, 0.01]}
    # "created" = components only this task's path uses (A's block.1 is shared with B, so it is not A's alone).
    assert by_task[TASK_A]["block.1"].id not in a.lineage["created"] and by_task[TASK_A]["head"].id in a.lineage["created"]
    assert all(tf.probe and tf.probe["num_images"] == 4 for tf in files.values())


def test_state_parsed_lazily(mu2net):
    state_dir, _, _ = mu2net
    state = read_reference_state(state_dir.parent)  # the experiment folder: its latest state, not the decoy
    assert state.state_dir == state_dir and state.sources == ["state_10_0/checkpoint_10_0"]
    assert not any(k.startswith("opt_state") for k in state.checkpoints)
    assert sorted(state.checkpoints) == sorted({f"{n}:{c}" for row in PATHS for n, c in row[5].items()})
    assert state.root.id == 0 and state.tasks() == sorted(LIVE) and state.best_path(TASK_A).id == 5
    # components.csv repeats a component once per iteration: the newest row (all its locks) wins; 30 was pruned.
    assert state.components["encoderblock_0:3"]["train_locks"] == sorted({R.NOT_TRAINABLE, *LIVE})
    assert "encoderblock_2:30" not in state.components
    b = state.best_path(TASK_B)
    assert b.hparams["num_layers"] == 2 and b.hparams["adapter_layers"] is None and b.parent_task == TASK_A
    assert state.best_path(TASK_A).metrics["offsprings_per_task"] == {TASK_A: 2}


def test_one_task_decodes_only_its_components(mu2net, tmp_path):
    state_dir, out, _ = mu2net
    result = republish_reference(state_dir, tmp_path / "one", tasks=[TASK_B], progress=False)
    assert result.decoded == len(PATHS[3][5]) and list(result.tasks) == [TASK_B]
    assert mu2hub.list_tasks(tmp_path / "one") == [TASK_B]
    same = mu2hub.from_pretrained(tmp_path / "one", task=TASK_B).task_file
    assert same.to_json() == mu2hub.from_pretrained(out, task=TASK_B).task_file.to_json()


def test_labels_errors_and_placeholders(mu2net, tmp_path):
    state_dir, _, _ = mu2net
    with pytest.raises(FormatError, match="2 names .* for a 37-class head"):
        republish_reference(state_dir, tmp_path / "x", tasks=[TASK_D], labels={TASK_D: ["a", "b"]}, progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    result = republish_reference(state_dir, tmp_path / "y", tasks=[TASK_D], progress=False)
    assert result.placeholders == [TASK_D] and result.tasks[TASK_D].labels[:2] == ["class_0", "class_1"]
    with pytest.raises(TaskNotFoundError, match="imagenet2012"):
        republish_reference(state_dir, tmp_path / "z", tasks=["imagenet2012"], progress=False)


# ---------------------------------------------------------------------------------------------------------
# Bad input: a clear error naming the file, nothing written, nothing unpickled
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def msgpack_state(tmp_path_factory):
    return write_mu2net_state(tmp_path_factory.mktemp("bad") / "experiment", orbax=False)


def _copy(state_dir, tmp_path) -> Path:
    dst = tmp_path / "state_10_0"
    shutil.copytree(state_dir, dst)
    return dst


def _rewrite_checkpoint(d: Path, edit) -> None:
    from flax import serialization

    target = serialization.msgpack_restore((d / "checkpoint_10_0").read_bytes())
    edit(target)
    (d / "checkpoint_10_0").write_bytes(serialization.msgpack_serialize(target))


def test_missing_checkpoint_key(msgpack_state, tmp_path):
    d = _copy(msgpack_state, tmp_path)
    _rewrite_checkpoint(d, lambda t: t.pop("encoderblock_1:9"))
    with pytest.raises(FormatError, match=r"component 9 is not in checkpoint_10_0 \(no key 'encoderblock_1:9'\)"):
        republish_reference(d, tmp_path / "out", progress=False)


@pytest.mark.parametrize("bad, match", [
    ("short", r"population.csv: line 3: \d+ fields where the header has \d+"),
    ("ids", r"population.csv: line 3: components '0_x_1' are not '_'-joined component ids"),
    ("column", r"population.csv: missing column\(s\) \['components'\]"),
])
def test_malformed_population_csv(msgpack_state, tmp_path, bad, match):
    d = _copy(msgpack_state, tmp_path)
    lines = (d / "population.csv").read_text().splitlines()
    if bad == "short":
        lines[2] = ",".join(lines[2].split(",")[:4])
    elif bad == "ids":
        lines[2] = lines[2].replace("0_1_2_8_3_9_5_22_21", "0_x_1")
    else:
        lines[0] = lines[0].replace(",components,", ",comps,")
    (d / "population.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=match):
        republish_reference(d, tmp_path / "out", progress=False)


@pytest.mark.parametrize("name", ["../../escape", "/abs/task", "a/../b"])
def test_task_names_that_are_not_file_names(msgpack_state, tmp_path, name):
    from mu2hub.errors import UnsafePathError

    d = _copy(msgpack_state, tmp_path)
    edit_population(d, TASK_B, task_name=name)
    with pytest.raises(UnsafePathError, match="invalid task name"):
        republish_reference(d, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "escape").exists()


def test_components_csv_naming_one_id_twice(msgpack_state, tmp_path):
    d = _copy(msgpack_state, tmp_path)
    with open(d / "components.csv", "a") as f:
        f.write("3,encoderblock_1,1,\n")
    with pytest.raises(FormatError, match=r"components.csv: line \d+: component 3 is named 'encoderblock_1' here"):
        read_reference_state(d)


def test_shapes_that_do_not_fit(msgpack_state, tmp_path):
    d = _copy(msgpack_state, tmp_path)
    edit_population(d, TASK_B, **{"hparams.ds_image_size": "16", "hparams.num_classes": "7"})
    with pytest.raises(ShapeMismatchError, match=r"population.csv line 5 \(task 'dsprites/label_orientation', path 9\): "
                       r"pos_embed: 5 tokens where ds_image_size 16 needs 17; head: 40 classes"):
        republish_reference(d, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    d = _copy(msgpack_state, tmp_path / "heads")

    def four_heads(target):
        attn = target["encoderblock_1:9"]["MultiHeadDotProductAttention_0"]
        attn["query"] = {"kernel": attn["query"]["kernel"].reshape(R.HIDDEN, 4, -1),
                         "bias": attn["query"]["bias"].reshape(4, -1)}

    _rewrite_checkpoint(d, four_heads)
    with pytest.raises(FormatError, match=r"component 'encoderblock_1'/attention/query: kernel \(32, 4, 8\).* with 2 heads"):
        republish_reference(d, tmp_path / "out2", tasks=[TASK_A], progress=False)


def test_missing_files(msgpack_state, tmp_path):
    d = _copy(msgpack_state, tmp_path)
    (d / "checkpoint_10_0").unlink()
    with pytest.raises(FormatError, match="no Flax checkpoint"):
        read_reference_state(d)
    (d / "population.csv").unlink()
    with pytest.raises(FormatError, match="neither a µ2Net state folder"):
        read_reference_state(d)


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[: len(b) // 2], r"runs past the end of the file|truncated"),
    (lambda b: b + b"\x00", "data after the top-level map"),
    (lambda b: b"\x93" + b[1:], "the top level is not a map"),
    (lambda b: b.replace(b"float32", b"objectx", 1), "is not a numeric array"),
])
def test_damaged_checkpoint_is_refused(msgpack_state, tmp_path, damage, match):
    d = _copy(msgpack_state, tmp_path)
    (d / "checkpoint_10_0").write_bytes(damage((d / "checkpoint_10_0").read_bytes()))
    with pytest.raises(FormatError, match=f"checkpoint_10_0: not a Flax msgpack checkpoint: .*({match})"):
        republish_reference(d, tmp_path / "out", progress=False)


# A protocol-0 pickle whose loading would call os.mkdir(MARKER); written by hand so nothing here imports pickle.
def _evil_pickle(marker: Path, proto2: bool) -> bytes:
    return (b"\x80\x02" if proto2 else b"") + b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


@pytest.mark.parametrize("proto2", [False, True])
def test_pickle_is_never_loaded(msgpack_state, tmp_path, proto2):
    d = _copy(msgpack_state, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("checkpoint_10_1.pkl", "population.pkl", "checkpoint_10_0.pickle"):
        (d / name).write_bytes(_evil_pickle(marker, proto2))
    assert republish_reference(d, tmp_path / "ok", tasks=[TASK_B], progress=False).tasks  # other names never opened
    (d / "checkpoint_12_0").write_bytes(_evil_pickle(marker, proto2))  # now the latest "checkpoint" is a pickle
    with pytest.raises(FormatError, match="checkpoint_12_0: not a Flax msgpack checkpoint"):
        republish_reference(d, tmp_path / "bad", progress=False)
    assert not marker.exists()


def test_adapter_layers_quirks():
    assert adapter_layers_of(None) == adapter_layers_of(float("nan")) == adapter_layers_of("") == []
    assert adapter_layers_of(3.0) == adapter_layers_of("3.0") == adapter_layers_of(3) == [3]
    assert adapter_layers_of("2_0") == [0, 2]
    with pytest.raises(FormatError):
        adapter_layers_of("0,2")


def test_pre_linen_names_read_the_same():
    """vit_jax's .npz numbering (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3) maps like Linen's."""
    name, tree = component_params()[3]
    renamed = {"LayerNorm_0": tree["LayerNorm_0"], "MultiHeadDotProductAttention_1": tree["MultiHeadDotProductAttention_0"],
               "LayerNorm_2": tree["LayerNorm_1"], "MlpBlock_3": tree["MlpBlock_0"]}
    slot, a = convert_component(name, tree)
    _, b = convert_component(name, renamed)
    assert slot == "block.0" and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a["attn.query.kernel"].shape == (R.HIDDEN, R.HIDDEN) and a["attn.out.kernel"].shape == (R.HIDDEN, R.HIDDEN)
    with pytest.raises(FormatError, match="expected 2 LayerNorm"):
        convert_component(name, {k: v for k, v in tree.items() if k != "LayerNorm_1"})
