"""The shipped quickstart root and the generated images it was pretrained on (training/pretrain_root.py,
training/procedural.py): every source labels only its own heads, the data is reproducible, and the committed root
loads as the quickstart config names it."""

import sys

import numpy as np
from huggingface_hub import ModelCard

from locations import TRAINING

sys.path.insert(0, str(TRAINING))

import pretrain_root  # noqa: E402
import procedural  # noqa: E402
from evolve import load_config  # noqa: E402

from mu2hub.convert.roots import read_checkpoint  # noqa: E402

SOURCES = ("shapes", "glyphs", "textures")


def test_each_source_labels_only_its_own_heads_and_the_data_is_reproducible():
    x, y = pretrain_root.pretraining_data(60, 32, 1, SOURCES)
    assert x.shape == (60, 32, 32, 3) and x.dtype == np.uint8
    heads = list(pretrain_root.heads_of(SOURCES))
    for source, owned in pretrain_root.SOURCE_HEADS.items():
        cols = [heads.index(h) for h in owned]
        rows = (y[:, cols] >= 0).all(1)
        assert rows.sum() == 20, source  # an equal share per source
        others = [c for c in range(len(heads)) if c not in cols]
        assert (y[rows][:, others] == -1).all(), source  # no label for another source's heads
        for c, h in zip(cols, owned):
            assert y[rows, c].max() < len(pretrain_root.HEADS[h])
    x2, y2 = pretrain_root.pretraining_data(60, 32, 1, SOURCES)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert not np.array_equal(x, pretrain_root.pretraining_data(60, 32, 2, SOURCES)[0])


def test_generated_glyphs_and_textures_cover_their_classes_and_are_not_blank():
    for make, n_classes in ((procedural.glyphs, len(procedural.GLYPHS)), (procedural.textures, len(procedural.TEXTURES))):
        x, y = make(400, 32, 0)
        assert set(np.unique(y)) <= set(range(n_classes)) and len(np.unique(y)) > n_classes // 2
        assert (x.reshape(len(x), -1).std(1) > 1).all()  # every image has content


def test_the_quickstart_root_loads_as_its_config_names_it_and_its_card_parses():
    init = load_config(str(TRAINING / "configs" / "quickstart.py"))["root"]["init"]
    ckpt = read_checkpoint(init, head=False)
    assert ckpt.structure.num_layers == 3 and ckpt.structure.image_size == 32
    assert ckpt.source == "mu2hub:generated-vit-64#shapes-glyphs-textures-pretraining"
    card = ModelCard.load(TRAINING / "roots" / "generated-vit-64" / "README.md")
    assert card.data.library_name == "mu2hub" and "| glyph | 62 |" in card.text
