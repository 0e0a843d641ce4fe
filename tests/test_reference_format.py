"""Republishing a µ2Net reference state directory (population.csv, components.csv, Flax msgpack checkpoint).

The state directory is built here the way the reference notebook writes it: parameter trees come from Linen modules
named as vit_jax's (`embedding`, `cls`, `Transformer/{posembed_input, encoderblock_i, residual_adapter_i,
encoder_norm}`, `head`), flattened to top-level components; CSVs are pandas-style with `hparams.`/`metrics.` columns
(written with `csv`: pandas is not a dependency); the checkpoint is `flax.serialization.msgpack_serialize` of
`{"name:id": params, "opt_state:name:id": bf16 trace}` named `checkpoint_{loop}_{generation}`.
Logits are checked against a forward written here in plain jax.numpy over the Linen-shaped trees.
"""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import mu2hub
from mu2hub.errors import FormatError, ShapeMismatchError, TaskNotFoundError
from mu2hub.republish import republish_reference
from mu2hub.reference_format import (
    NOT_TRAINABLE,
    adapter_layers_of,
    convert_component,
    read_reference_state,

)

HIDDEN, HEADS, MLP, PATCH, ADAPTER = 32, 2, 64, 4, 8
TASK_A, TASK_B, TASK_C = "cifar10", "visual_domain_decathlon/aircraft", "cmaterdb/bangla"


# ---------------------------------------------------------------------------------------------------------
# Linen modules with vit_jax's / the notebook's names (class names drive Linen's auto-naming)
# ---------------------------------------------------------------------------------------------------------
class MlpBlock(nn.Module):
    mlp_dim: int
    approximate: bool

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.mlp_dim)(x), approximate=self.approximate)  # Dense_0, then Dense_1
        return nn.Dense(x.shape[-1])(y)


class Encoder1DBlock(nn.Module):
    mlp_dim: int
    num_heads: int
    approximate: bool

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.num_heads)(y, y)
        return x + MlpBlock(self.mlp_dim, self.approximate)(nn.LayerNorm()(x))


class ResidualAdapter(nn.Module):
    adapter_dim: int
    approximate: bool

    @nn.compact
    def __call__(self, x):
        y = nn.gelu(nn.Dense(self.adapter_dim)(nn.LayerNorm()(x)), approximate=self.approximate)
        return x + nn.Dense(x.shape[-1])(y)


class AddPositionEmbs(nn.Module):
    @nn.compact
    def __call__(self, x):
        return x + self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], x.shape[2]))


class Encoder(nn.Module):
    num_layers: int
    adapter_layers: tuple[int, ...]
    approximate: bool

    @nn.compact
    def __call__(self, x):
        x = AddPositionEmbs(name="posembed_input")(x)
        for i in range(self.num_layers):
            if i in self.adapter_layers:
                x = ResidualAdapter(ADAPTER, self.approximate, name=f"residual_adapter_{i}")(x)
            x = Encoder1DBlock(MLP, HEADS, self.approximate, name=f"encoderblock_{i}")(x)
        return nn.LayerNorm(name="encoder_norm")(x)


class VisionTransformer(nn.Module):
    num_classes: int
    num_layers: int
    adapter_layers: tuple[int, ...] = ()
    approximate: bool = True  # vit_jax: nn.gelu's default, the tanh approximation

    @nn.compact
    def __call__(self, images):
        x = nn.Conv(HIDDEN, (PATCH, PATCH), strides=(PATCH, PATCH), padding="VALID", name="embedding")(images)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
        x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)
        x = Encoder(self.num_layers, self.adapter_layers, self.approximate, name="Transformer")(x)
        return nn.Dense(self.num_classes, name="head")(x[:, 0])


def _linen(cfg, approximate=True):
    return VisionTransformer(cfg["classes"], cfg["layers"], tuple(adapter_layers_of(cfg["adapters"])), approximate)


def _to_comps(params):
    """The notebook's params_model_to_comps: lift `Transformer`'s children to top-level components."""
    return {**{k: v for k, v in params.items() if k != "Transformer"}, **params["Transformer"]}


def _to_model(comps):
    inner = {"posembed_input", "encoder_norm"}
    t = {k: v for k, v in comps.items() if k in inner or k.startswith(("encoderblock_", "residual_adapter_"))}
    return {**{k: v for k, v in comps.items() if k not in t}, "Transformer": t}


# ---------------------------------------------------------------------------------------------------------
# The state directory, as the reference writes it
# ---------------------------------------------------------------------------------------------------------
# Each path: task, id, parent, config, {component name: id}, score. Shared ids = shared (frozen) components:
# block.0 (3) is in every path, task B reuses task A's encoderblock_1 (9), A's older row (3) loses on score.
ROOT = dict(layers=3, adapters="", size=16, classes=1)
PATHS = [
    (NOT_TRAINABLE, 0, -1, None, ROOT, dict(embedding=0, cls=1, posembed_input=2, encoderblock_0=3, encoderblock_1=4,
                                            encoderblock_2=5, encoder_norm=6, head=7), None),
    (TASK_A, 3, 0, NOT_TRAINABLE, dict(layers=3, adapters="1", size=16, classes=5),
     dict(embedding=0, cls=1, posembed_input=2, residual_adapter_1=8, encoderblock_0=3, encoderblock_1=9,
          encoderblock_2=5, encoder_norm=22, head=21), 0.80),
    (TASK_A, 5, 3, TASK_A, dict(layers=3, adapters="1", size=16, classes=5),
     dict(embedding=0, cls=1, posembed_input=2, residual_adapter_1=8, encoderblock_0=3, encoderblock_1=9,
          encoderblock_2=10, encoder_norm=11, head=12), 0.90),
    (TASK_B, 9, 5, TASK_A, dict(layers=2, adapters="", size=8, classes=3, layers_cell="2.0"),
     dict(embedding=0, cls=1, posembed_input=13, encoderblock_0=3, encoderblock_1=9, encoder_norm=14, head=15), 0.75),
    (TASK_C, 14, 0, NOT_TRAINABLE, dict(layers=3, adapters="0_2", size=16, classes=4),
     dict(embedding=16, cls=1, posembed_input=2, residual_adapter_0=17, encoderblock_0=3, encoderblock_1=4,
          residual_adapter_2=18, encoderblock_2=5, encoder_norm=19, head=20), 0.60),
]
LIVE = {TASK_A: 5, TASK_B: 9, TASK_C: 14}


def _randomize(tree, seed):
    """Non-degenerate values of the init tree's shapes: O(1) activations, so GELU and LayerNorm matter."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    rng = np.random.default_rng(seed)
    out = []
    for path, leaf in leaves:
        name, shape = jax.tree_util.keystr(path), np.shape(leaf)
        if name.endswith("['scale']"):
            v = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith("['kernel']"):
            v = rng.standard_normal(shape) / np.sqrt(np.prod(shape[:-1]) if len(shape) != 3 or "out" in name else shape[0])
        else:
            v = 0.2 * rng.standard_normal(shape)
        out.append(np.asarray(v, np.float32))
    return jax.tree_util.tree_unflatten(treedef, out)


@functools.lru_cache(maxsize=1)
def _component_params():
    """Component id -> (name, Linen subtree), each drawn once from the Linen init of a path that uses it."""
    comps = {}
    for _, _, _, _, cfg, names, _ in PATHS:
        images = jax.ShapeDtypeStruct((1, cfg["size"], cfg["size"], 3), jnp.float32)
        init = jax.eval_shape(_linen(cfg).init, jax.random.PRNGKey(0), images)["params"]  # shapes only: no compiles
        trees = _to_comps(init)
        assert sorted(trees) == sorted(names)  # the table above lists exactly the model's components
        for name, tree in trees.items():
            if names[name] not in comps:
                comps[names[name]] = (name, _randomize(tree, names[name]))
    return comps


def _cells(value):
    return "" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def write_reference_state(experiment: Path) -> Path:
    """An experiment folder with `state_10_0` (the live state) and an older `state_9_3` decoy; returns state_10_0."""
    state = experiment / "state_10_0"
    state.mkdir(parents=True)
    comps = _component_params()
    hp_keys = ["opt_lr", "adapter_layers", "ds_image_size", "num_layers", "_mu_", "num_classes", "adapter_dim",
               "opt_nesterov", "opt_lr_schedule", "ds_crop"]  # pandas writes a set's order: any order must do
    m_keys = ["quality", "test_quality", "offsprings_per_task", "mutations", "evals", "private", "reloads", "improved"]
    header = ["task_name", "id", "parent_id", "parent_task_name", "final_accounted_params", "components"]
    header += [f"hparams.{k}" for k in hp_keys] + [f"metrics.{k}" for k in m_keys] + ["score"]
    with open(state / "population.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        for task, pid, parent, parent_task, cfg, names, score in PATHS:
            hp = dict(opt_lr=0.01, adapter_layers=cfg["adapters"], ds_image_size=cfg["size"],
                      num_layers=cfg.get("layers_cell", cfg["layers"]), _mu_=0.2, num_classes=cfg["classes"],
                      adapter_dim=ADAPTER, opt_nesterov=False, opt_lr_schedule="cosine", ds_crop=True)
            trained = score is not None
            metrics = dict(quality=score, test_quality=score and score - 0.05,
                           offsprings_per_task={TASK_A: 2} if trained else {}, mutations={"opt_lr": [0.02, 0.01]},
                           evals=[0.5, score] if trained else None, private=False, reloads=1, improved=trained)
            w.writerow([task, pid, parent, _cells(parent_task), 1234.5 if trained else "", "_".join(map(str, names.values()))]
                       + [_cells(hp[k]) for k in hp_keys] + [_cells(metrics[k]) for k in m_keys] + [_cells(score)])
    users = {}
    for task, _, _, _, _, names, _ in PATHS:
        for cid in names.values():
            users.setdefault(cid, set()).add(task)
    with open(state / "components.csv", "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "name", "num_params", "train_locks"])
        for cid, (name, tree) in sorted(comps.items()):
            w.writerow([cid, name, sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)), ",".join(sorted(users[cid]))])
    target = {f"{name}:{cid}": tree for cid, (name, tree) in comps.items()}
    target.update({f"opt_state:{name}:{cid}": jax.tree_util.tree_map(lambda x: np.asarray(x, jnp.bfloat16) * 0, tree)
                   for cid, (name, tree) in comps.items() if cid > 7})  # momentum traces of the trained components
    (state / "checkpoint_10_0").write_bytes(serialization.msgpack_serialize(target))
    (state / "checkpoint_9_3").write_bytes(b"older, and not msgpack")  # lexically later: natural order must win
    (state / "checkpoint_11_0_tmp").write_bytes(b"a save in progress")
    decoy = experiment / "state_9_3"
    decoy.mkdir()
    shutil.copy(state / "population.csv", decoy)
    (decoy / "checkpoint_9_3").write_bytes(b"stale")
    return state


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return write_reference_state(tmp_path_factory.mktemp("ref") / "experiment:large:2022-05-25-10-00-00")


@pytest.fixture(scope="module")
def published(state_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pub")
    return out, republish_reference(state_dir.parent, out)  # the experiment folder: its latest state is read


# ---------------------------------------------------------------------------------------------------------
# An independent forward over the Linen-shaped checkpoint trees, in plain jax.numpy
# ---------------------------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("num_layers", "adapter_layers", "approximate"))
def direct_forward(comps, images, *, num_layers, adapter_layers, approximate):
    gelu = functools.partial(jax.nn.gelu, approximate=approximate)
    dense = lambda p, x: x @ p["kernel"] + p["bias"]  # noqa: E731

    def ln(p, x):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-6) * p["scale"] + p["bias"]

    k = comps["embedding"]["kernel"]
    p, c = k.shape[0], k.shape[2]
    b, s = images.shape[0], images.shape[1]
    g = s // p
    patches = images.reshape(b, g, p, g, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * c)
    x = patches @ k.reshape(p * p * c, -1) + comps["embedding"]["bias"]
    x = jnp.concatenate([jnp.broadcast_to(comps["cls"], (b, 1, x.shape[-1])), x], 1) + comps["posembed_input"]["pos_embedding"]
    for i in range(num_layers):
        if i in adapter_layers:
            a = comps[f"residual_adapter_{i}"]
            x = x + dense(a["Dense_1"], gelu(dense(a["Dense_0"], ln(a["LayerNorm_0"], x))))
        blk = comps[f"encoderblock_{i}"]
        att = blk["MultiHeadDotProductAttention_0"]
        y = ln(blk["LayerNorm_0"], x)
        q, kk, v = (jnp.einsum("bnd,dhk->bnhk", y, att[n]["kernel"]) + att[n]["bias"] for n in ("query", "key", "value"))
        w = jax.nn.softmax(jnp.einsum("bqhk,bshk->bhqs", q, kk) / np.sqrt(q.shape[-1]), axis=-1)
        x = x + jnp.einsum("bqhk,hkd->bqd", jnp.einsum("bhqs,bshk->bqhk", w, v), att["out"]["kernel"]) + att["out"]["bias"]
        mlp = blk["MlpBlock_0"]
        x = x + dense(mlp["Dense_1"], gelu(dense(mlp["Dense_0"], ln(blk["LayerNorm_1"], x))))
    return dense(comps["head"], ln(comps["encoder_norm"], x)[:, 0])


def _path_comps(pid):
    state_comps = _component_params()
    (names,) = [names for _, i, _, _, _, names, _ in PATHS if i == pid]
    return {name: state_comps[cid][1] for name, cid in names.items()}, [row for row in PATHS if row[1] == pid][0][4]


def _rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


# ---------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", [TASK_A, TASK_B, TASK_C])
def test_each_task_matches_its_path_from_the_checkpoint(published, task):
    out, _ = published
    model = mu2hub.from_pretrained(out, task=task)
    comps, cfg = _path_comps(LIVE[task])
    images = np.random.default_rng(1).uniform(-1, 1, (4, cfg["size"], cfg["size"], 3)).astype(np.float32)
    kw = dict(num_layers=cfg["layers"], adapter_layers=tuple(adapter_layers_of(cfg["adapters"])))
    exact = direct_forward(comps, images, approximate=False, **kw)
    ours = model.logits(images)
    assert ours.shape == (4, cfg["classes"])
    assert _rel(ours, exact) < 1e-5
    # The direct forward is the reference model: with tanh GELU it reproduces the Linen modules' apply.
    tanh = direct_forward(comps, images, approximate=True, **kw)
    linen = jax.jit(_linen(cfg).apply)({"params": _to_model(comps)}, images)
    assert _rel(tanh, linen) < 1e-5
    gelu_gap = _rel(ours, linen)  # exact vs tanh GELU: the only difference from the reference run's logits
    print(f"{task}: rel |ours - direct(exact)| = {_rel(ours, exact):.2e}, rel |ours - linen(tanh)| = {gelu_gap:.2e}")
    assert gelu_gap < 1e-2


def test_published_layout(published, state_dir):
    out, files = published
    assert sorted(files) == sorted(LIVE) and NOT_TRAINABLE not in mu2hub.list_tasks(out)
    by_task = {t: tf.component_map() for t, tf in files.items()}
    # Shared reference components are one content-addressed file.
    assert by_task[TASK_A]["block.0"].id == by_task[TASK_B]["block.0"].id == by_task[TASK_C]["block.0"].id
    assert by_task[TASK_A]["block.1"].id == by_task[TASK_B]["block.1"].id
    assert by_task[TASK_A]["patch_embed"].id != by_task[TASK_C]["patch_embed"].id
    ids = {c.id for tf in files.values() for c in tf.components}
    assert len(list((out / "components").rglob("*.safetensors"))) == len(ids)
    # The best row of task A (path 5, score 0.9) was published, not the older one (path 3).
    a = files[TASK_A]
    assert a.lineage["path_id"] == "5" and a.lineage["parent"] == "3" and a.lineage["parent_task"] == TASK_A
    assert a.lineage["reference"]["components"]["head"] == "head:12"
    assert a.lineage["reference"]["checkpoint"] == "checkpoint_10_0" and a.lineage["reference"]["labels"] == "placeholder"
    assert a.labels == [f"class_{i}" for i in range(5)]
    assert a.adapter_layers == (1,) and a.adapter_dim == ADAPTER and a.hparams["adapter_layers"] == [1]
    assert a.metrics["validation_accuracy"] == 0.9 and a.metrics["test_accuracy"] == pytest.approx(0.85)
    assert a.metrics["reference"]["mutations"] == {"opt_lr": [0.02, 0.01]}
    assert files[TASK_C].adapter_layers == (0, 2) and files[TASK_C].hparams["adapter_layers"] == [0, 2]
    b = files[TASK_B]
    assert b.num_layers == 2 and b.hparams["num_layers"] == 2 and b.image_size == 8 and b.hparams["adapter_layers"] == []
    # "created" = components only this task's path uses (A's block.1 is shared with B, so it is not A's alone).
    assert by_task[TASK_A]["block.1"].id not in a.lineage["created"] and by_task[TASK_A]["head"].id in a.lineage["created"]
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_heads"], config["mlp_dim"], config["patch_size"]) == (HIDDEN, HEADS, MLP, PATCH)
    assert config["root"] == {"image_size": 16, "num_layers": 3}


def test_opt_state_dropped_and_state_parsed(state_dir):
    state = read_reference_state(state_dir)
    assert state.checkpoint == "checkpoint_10_0"
    assert all(not name.startswith("opt_state") for name, _ in state.params.values())
    assert sorted(state.params) == sorted({cid for row in PATHS for cid in row[5].values()})
    assert state.root.id == 0 and state.tasks() == sorted(LIVE)
    assert state.best_path(TASK_A).id == 5
    assert state.components[3]["train_locks"] == sorted({NOT_TRAINABLE, TASK_A, TASK_B, TASK_C})
    b = state.best_path(TASK_B)
    assert b.hparams["num_layers"] == 2.0 and b.hparams["adapter_layers"] is None and b.parent_task == TASK_A
    assert state.best_path(TASK_A).metrics["offsprings_per_task"] == {TASK_A: 2}


def test_labels_and_task_subset(state_dir, tmp_path):
    files = republish_reference(state_dir, tmp_path, tasks=[TASK_B], labels={TASK_B: ["a", "b", "c"]})
    assert list(files) == [TASK_B] and mu2hub.list_tasks(tmp_path) == [TASK_B]
    assert files[TASK_B].labels == ["a", "b", "c"] and files[TASK_B].lineage["reference"]["labels"] == "given"
    with pytest.raises(FormatError, match="2 names for a 3-class head"):
        republish_reference(state_dir, tmp_path / "x", tasks=[TASK_B], labels={TASK_B: ["a", "b"]})
    with pytest.raises(TaskNotFoundError, match="imagenet2012"):
        republish_reference(state_dir, tmp_path / "y", tasks=["imagenet2012"])


def _copy_state(state_dir, tmp_path):
    dst = tmp_path / "state_10_0"
    shutil.copytree(state_dir, dst)
    return dst


def test_missing_checkpoint_key(state_dir, tmp_path):
    d = _copy_state(state_dir, tmp_path)
    target = serialization.msgpack_restore((d / "checkpoint_10_0").read_bytes())
    del target["encoderblock_1:9"]
    (d / "checkpoint_10_0").write_bytes(serialization.msgpack_serialize(target))
    with pytest.raises(FormatError, match=r"component 9 is not in checkpoint_10_0 \(no key 'encoderblock_1:9'\)"):
        republish_reference(d, tmp_path / "out")


@pytest.mark.parametrize("bad, match", [
    ("short", r"population.csv: line 3: \d+ fields where the header has \d+"),
    ("ids", r"population.csv: line 3: components '0_x_1' are not '_'-joined component ids"),
    ("column", r"population.csv: missing column\(s\) \['components'\]"),
])
def test_malformed_population_csv(state_dir, tmp_path, bad, match):
    d = _copy_state(state_dir, tmp_path)
    lines = (d / "population.csv").read_text().splitlines()
    if bad == "short":
        lines[2] = ",".join(lines[2].split(",")[:4])
    elif bad == "ids":
        lines[2] = lines[2].replace("0_1_2_8_3_9_5_22_21", "0_x_1")
    else:
        lines[0] = lines[0].replace(",components,", ",comps,")
    (d / "population.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=match):
        republish_reference(d, tmp_path / "out")


def _edit_population(d, task, **cells):
    with open(d / "population.csv", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    for row in rows[1:]:
        if row[0] == task:
            for k, v in cells.items():
                row[header.index(k)] = v
    with open(d / "population.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def test_shapes_that_do_not_fit(state_dir, tmp_path):
    d = _copy_state(state_dir, tmp_path)
    _edit_population(d, TASK_B, **{"hparams.ds_image_size": "16", "hparams.num_classes": "7"})
    with pytest.raises(ShapeMismatchError, match=r"checkpoint_10_0: population.csv line 5 \(task 'visual_domain_decathlon/"
                       r"aircraft', path 9\): pos_embed: 5 tokens where ds_image_size 16 needs 17; head: 3 classes"):
        republish_reference(d, tmp_path / "out")
    d = _copy_state(state_dir, tmp_path / "heads")
    target = serialization.msgpack_restore((d / "checkpoint_10_0").read_bytes())
    attn = target["encoderblock_1:9"]["MultiHeadDotProductAttention_0"]
    attn["query"] = {"kernel": attn["query"]["kernel"].reshape(HIDDEN, 4, -1), "bias": attn["query"]["bias"].reshape(4, -1)}
    (d / "checkpoint_10_0").write_bytes(serialization.msgpack_serialize(target))
    with pytest.raises(FormatError, match=r"component 'encoderblock_1'/attention/query: kernel \(32, 4, 8\).* with 2 heads"):
        republish_reference(d, tmp_path / "out2", tasks=[TASK_A])


def test_missing_files(state_dir, tmp_path):
    d = _copy_state(state_dir, tmp_path)
    (d / "checkpoint_10_0").unlink()
    (d / "checkpoint_9_3").unlink()
    with pytest.raises(FormatError, match="no Flax checkpoint file"):
        read_reference_state(d)
    (d / "population.csv").unlink()
    with pytest.raises(FormatError, match="missing population.csv"):
        read_reference_state(d)


# A protocol-0 pickle whose loading would call os.mkdir(MARKER); written by hand so nothing here imports pickle.
def _evil_pickle(marker: Path, proto2: bool) -> bytes:
    return (b"\x80\x02" if proto2 else b"") + b"cos\nmkdir\n(V" + str(marker).encode() + b"\ntR."


@pytest.mark.parametrize("proto2", [False, True])
def test_pickle_is_never_loaded(state_dir, tmp_path, proto2):
    d = _copy_state(state_dir, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("checkpoint_10_1.pkl", "population.pkl", "checkpoint_10_0.pickle"):
        (d / name).write_bytes(_evil_pickle(marker, proto2))
    assert republish_reference(d, tmp_path / "ok")  # other names are never opened
    (d / "checkpoint_12_0").write_bytes(_evil_pickle(marker, proto2))  # now the latest "checkpoint" is a pickle
    with pytest.raises(FormatError, match="checkpoint_12_0: not a Flax msgpack checkpoint"):
        republish_reference(d, tmp_path / "bad")
    assert not marker.exists()


def test_adapter_layers_quirks():
    assert adapter_layers_of(None) == adapter_layers_of(float("nan")) == adapter_layers_of("") == []
    assert adapter_layers_of(3.0) == adapter_layers_of("3.0") == adapter_layers_of(3) == [3]
    assert adapter_layers_of("2_0") == [0, 2]
    with pytest.raises(FormatError):
        adapter_layers_of("0,2")


def test_pre_linen_names_read_the_same():
    """vit_jax's .npz numbering (MultiHeadDotProductAttention_1, LayerNorm_2, MlpBlock_3) maps like Linen's."""
    name, tree = _component_params()[3]
    renamed = {"LayerNorm_0": tree["LayerNorm_0"], "MultiHeadDotProductAttention_1": tree["MultiHeadDotProductAttention_0"],
               "LayerNorm_2": tree["LayerNorm_1"], "MlpBlock_3": tree["MlpBlock_0"]}
    slot, a = convert_component(name, tree)
    _, b = convert_component(name, renamed)
    assert slot == "block.0" and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert a["attn.query.kernel"].shape == (HIDDEN, HIDDEN) and a["attn.out.kernel"].shape == (HIDDEN, HIDDEN)
    with pytest.raises(FormatError, match="expected 2 LayerNorm"):
        convert_component(name, {k: v for k, v in tree.items() if k != "LayerNorm_1"})
