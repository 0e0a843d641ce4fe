"""Images from wherever users have them: uploads decoded safely (the Space), and `predict`'s inputs expanded."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mu2hub.errors import InputNotFoundError, Mu2hubError
from mu2hub.data.images import MAX_SIDE, expand_inputs, load_image

from locations import REPO

def _image(path, size, mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    data = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(data[..., 0] if channels == 1 else data, mode).save(path)
    return path

def test_load_image_normalises_and_bounds(tmp_path):
    for name, size, mode in (("gray.png", (20, 20), "L"), ("rgba.png", (25, 17), "RGBA"), ("pixel.png", (1, 1), "RGB")):
        path = _image(tmp_path / name, size, mode)
        im = load_image(str(path))
        assert im.mode == "RGB" and im.size == size
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    for bad, match in ((None, "No image"), ("", "No image"), (str(tmp_path / "junk.png"), "Could not read")):
        with pytest.raises(ValueError, match=match):
            load_image(bad)

def test_a_huge_jpeg_is_decoded_at_a_fraction_of_its_size(tmp_path):
    """A 10,000 x 10,000 JPEG (300 MB as a full RGB buffer) is decoded at 1/8 scale (`draft`) and thumbnailed: in a
    fresh process, loading it raises the peak resident memory (VmHWM, which a new process starts afresh, unlike
    ru_maxrss) by less than a third of a full decode; a full decode raises it by ~390 MB. Measured in memory, not
    time, so a loaded machine cannot fail it."""
    big = tmp_path / "big.jpg"
    Image.new("RGB", (10_000, 10_000), (200, 30, 30)).save(big, quality=80)
    script = ("import sys\n"
              "from mu2hub.data.images import load_image\n"
              "def peak():\n"
              "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM:')).split()[1])\n"
              "before = peak()\n"
              "im = load_image(sys.argv[1])\n"
              "print(max(im.size), peak() - before)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", script, str(big)], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    side, grown_kib = map(int, out.stdout.split())
    full = 10_000 * 10_000 * 3
    assert side <= MAX_SIDE and grown_kib * 1024 < full // 3, f"peak memory grew by {grown_kib} KiB"


def test_expand_inputs_files_folders_and_missing(tmp_path):
    a = _image(tmp_path / "a.png", (8, 8))
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    b = _image(tmp_path / "dir" / "sub" / "b.JPG", (8, 8), seed=1)
    c = _image(tmp_path / "dir" / "c.png", (8, 8), seed=2)
    (tmp_path / "dir" / "readme.txt").write_text("no")
    items = expand_inputs([str(a), str(tmp_path / "dir")])
    assert [i.name for i in items] == [str(a), str(c), str(b)]  # sorted by path below each folder
    assert np.asarray(items[2].load()).shape == (8, 8, 3)
    with pytest.raises(InputNotFoundError, match="nope.png: no such file or folder") as e:
        expand_inputs([str(a), str(tmp_path / "nope.png")])
    assert isinstance(e.value, (Mu2hubError, FileNotFoundError))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputNotFoundError, match="empty: no image files"):
        expand_inputs([str(tmp_path / "empty")])

def test_predict_in_batches_keeps_order_duplicates_and_errors(tmp_path):
    from mu2hub.data.images import predict_in_batches

    good = [_image(tmp_path / f"{i}.png", (4 + i, 4)) for i in range(4)]
    (tmp_path / "bad.png").write_bytes(b"junk")
    items = expand_inputs([str(good[0]), str(tmp_path / "bad.png"), str(good[1]), str(good[0]), str(good[2]),
                           str(good[3])])
    batches, done = [], []
    out = list(predict_in_batches(lambda ims: [im.size for im in ims] if not batches.append(len(ims)) else None,
                                  items, batch_size=4, progress=done.append))
    assert [o[0].name for o in out] == [i.name for i in items]  # input order, the repeated file twice
    assert [o[1] for o in out] == [(4, 4), None, (5, 4), (4, 4), (6, 4), (7, 4)]
    assert out[1][2].startswith("Could not read") and all(o[2] is None for o in out if o[1] is not None)
    assert batches == [3, 2] and done == [4, 2]  # decoded and classified 4 inputs at a time
