"""The public API end to end: a transformers checkpoint in, a mu2hub repo, and a transformers checkpoint out."""

import numpy as np
import pytest
import torch
import transformers

import mu2hub
from mu2hub.errors import IncompatibleTaskError


@pytest.mark.parametrize(
    "cfg",
    [
        dict(hidden_size=64, num_attention_heads=4, intermediate_size=128, patch_size=4, image_size=32, num_hidden_layers=2,
             num_labels=3, layer_norm_eps=1e-6),
        dict(hidden_size=48, num_attention_heads=3, intermediate_size=96, patch_size=8, image_size=48, num_hidden_layers=3,
             num_labels=5),
    ],
)
def test_from_transformers_save_load_to_transformers(tmp_path, cfg):
    torch.manual_seed(0)
    config = transformers.ViTConfig(**cfg, id2label={i: f"class_{i}" for i in range(cfg["num_labels"])},
                                    label2id={f"class_{i}": i for i in range(cfg["num_labels"])})
    peer = transformers.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in peer.classifier.parameters():
            p.normal_()
    peer.save_pretrained(tmp_path / "hf")
    pixels = np.random.default_rng(0).uniform(-1, 1, (2, cfg["image_size"], cfg["image_size"], 3)).astype(np.float32)
    with torch.no_grad():
        want = peer(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).logits.numpy()

    model = mu2hub.from_transformers(tmp_path / "hf", task="imported")
    rel = lambda a: np.abs(a - want).max() / np.abs(want).max()  # noqa: E731
    assert rel(model.logits(pixels)) < 1e-4
    assert model.labels == [f"class_{i}" for i in range(cfg["num_labels"])]

    model.save_pretrained(tmp_path / "mu")
    loaded = mu2hub.from_pretrained(tmp_path / "mu", task="imported")
    assert rel(loaded.logits(pixels)) < 1e-4

    loaded.to_transformers(tmp_path / "back")
    again = transformers.ViTForImageClassification.from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        back = again(torch.from_numpy(pixels.transpose(0, 3, 1, 2))).logits.numpy()
    assert rel(back) < 1e-4
    pipe = transformers.pipeline("image-classification", model=str(tmp_path / "back"), device="cpu")
    from PIL import Image

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    assert pipe(image)[0]["label"] in loaded.labels


def test_paths_with_adapters_refuse_transformers_export(tmp_path):
    from mu2hub.format.system import Dims
    from mu2hub.testing import random_system

    random_system(tmp_path / "s", dims=Dims(32, 2, 64, 4), image_size=16, num_layers=2, num_tasks=1)
    m = mu2hub.from_pretrained(tmp_path / "s", task="task_0")
    import jax

    from mu2hub import model as vit
    from mu2hub.inference.task import TaskModel

    tf = m.task_file
    tf.adapter_layers = (1,)
    params = dict(m.params, **{"adapter.1": vit.init_component("adapter", m.config.dims, jax.random.key(0), adapter_dim=16)})
    with_adapter = TaskModel(m.config, tf, params)
    with pytest.raises(IncompatibleTaskError, match="adapters"):
        with_adapter.to_transformers(tmp_path / "out")
