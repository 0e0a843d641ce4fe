"""Hostile reference states and roots: a `FormatError` naming the file, in bounded time and memory, and exit 2
through the CLI. Non-regular files (FIFO, device) are refused before anything opens them
(`mu2hub.format.files`); depth is counted on every msgpack recursion path; CSV cells and hparams are bounded by
the same rules as the schema; a root's weights must be finite."""

from __future__ import annotations

import os
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from mu2hub import cli
from mu2hub.errors import FormatError
from mu2hub.convert.reference_checkpoint import open_checkpoint
from mu2hub.convert.reference_format import read_reference_state
from mu2hub.publishing.republish import republish_reference

import mu2net_state as M2

SECONDS = 8.0


def _bounded(fn):
    """`fn()` in a thread: (finished within SECONDS, its exception or None). A FIFO left blocking is released."""
    out: dict = {}

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(SECONDS)
    return not t.is_alive(), out.get("error")


def _release(fifo: Path) -> None:
    """Unblock a reader stuck opening `fifo` (what the code before the fix did)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass


@pytest.fixture(scope="module")
def state(tmp_path_factory) -> Path:
    return M2.write_mu2net_state(tmp_path_factory.mktemp("hostile") / "experiment", orbax=False)


def _copy(state: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "state_10_0"
    shutil.copytree(state, dst)
    return dst


@pytest.mark.parametrize("name", ["checkpoint_10_0", "population.csv", "components.csv"])
def test_fifo_in_a_reference_state_is_refused_before_opening(state, tmp_path, name):
    d = _copy(state, tmp_path)
    (d / name).unlink()
    os.mkfifo(d / name)
    try:
        done, error = _bounded(lambda: republish_reference(d, tmp_path / "out", progress=False))
    finally:
        _release(d / name)
    assert done, "blocked on a FIFO"
    assert isinstance(error, FormatError) and name in str(error) and "FIFO" in str(error), error


def test_cli_republish_of_a_state_with_a_fifo_exits_2(state, tmp_path, capsys):
    d = _copy(state, tmp_path)
    (d / "checkpoint_10_0").unlink()
    os.mkfifo(d / "checkpoint_10_0")
    try:
        done, error = _bounded(lambda: pytest.fail("x") if cli.main(["republish", str(d), "--to", str(tmp_path / "o")]) != 2
                               else None)
    finally:
        _release(d / "checkpoint_10_0")
    assert done and error is None, error
    assert "FIFO" in capsys.readouterr().err


def test_device_in_place_of_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint_0_0"
    path.symlink_to("/dev/urandom")
    with pytest.raises(FormatError, match="checkpoint_0_0: the checkpoint is a character device"):
        open_checkpoint(path)


def _ext(payload: bytes) -> bytes:
    return b"\xc9" + struct.pack(">I", len(payload)) + b"\x01" + payload


def _nested_shape(levels: int) -> bytes:
    """An array whose shape holds an array whose shape holds ... (depth through ext, not maps or lists)."""
    inner = b"\x01"
    for _ in range(levels):
        inner = _ext(b"\x93\x91" + inner + b"\xa7float32\xc4\x00")
    return inner


@pytest.mark.parametrize("payload, match", [
    (_nested_shape(5000), "nested deeper"),
    (_ext(b"\x93\x91\x01\x80\xc4\x04abcd"), "not a numeric array"),  # dtype {}: unhashable
    (_ext(b"\x93\x91\x01\x91\xa7float32\xc4\x04abcd"), "not a numeric array"),  # dtype [..]: unhashable
    (_ext(b"\x93\xdd\xff\xff\xff\xff\xa7float32\xc4\x04abcd"), "runs past the end"),  # 4G dims claimed
])
def test_hostile_msgpack_is_a_format_error_in_bounded_time(tmp_path, payload, match):
    path = tmp_path / "checkpoint_0_0"
    path.write_bytes(b"\x81\xa1k" + payload)
    done, error = _bounded(lambda: open_checkpoint(path).read("k"))
    assert done and isinstance(error, FormatError) and match in str(error) and "checkpoint_0_0" in str(error), error


@pytest.mark.parametrize("cell, match", [
    ("num_layers", 10**9), ("num_layers", "nan"), ("num_layers", 2.5), ("ds_image_size", 10**7),
    ("ds_image_size", -16), ("adapter_layers", "0_999999999"),
])
def test_hostile_hparams_are_bounded_by_the_schema(state, tmp_path, cell, match):
    d = _copy(state, tmp_path)
    M2.edit_population(d, M2.TASK_A, **{f"hparams.{cell}": str(match)})
    done, error = _bounded(lambda: republish_reference(d, tmp_path / "out", progress=False))
    assert done and isinstance(error, FormatError) and cell in str(error), error


def test_json_cell_of_any_depth_is_read_in_bounded_time(state, tmp_path):
    d = _copy(state, tmp_path)
    M2.edit_population(d, M2.TASK_A, **{"metrics.mutations": "[" * 50_000 + "]" * 50_000})  # under csv's cell limit
    done, error = _bounded(lambda: read_reference_state(d))
    assert done and error is None, error  # an opaque metrics cell: kept as text, never a RecursionError


def _big_vision_arrays(d: int = 16, heads: int = 2, mlp: int = 32, p: int = 4) -> dict[str, np.ndarray]:
    """A one-block big_vision ViT (Linen names), 8x8 inputs, two classes."""
    b, h = "Transformer/encoderblock_0/", d // heads
    t = {"embedding/kernel": (p, p, 3, d), "embedding/bias": (d,), "cls": (1, 1, d),
         "Transformer/posembed_input/pos_embedding": (1, 5, d), "Transformer/encoder_norm/scale": (d,),
         "Transformer/encoder_norm/bias": (d,), "head/kernel": (d, 2), "head/bias": (2,),
         **{f"{b}LayerNorm_{i}/{n}": (d,) for i in (0, 1) for n in ("scale", "bias")},
         **{f"{b}MultiHeadDotProductAttention_0/{n}/kernel": (d, heads, h) for n in ("query", "key", "value")},
         **{f"{b}MultiHeadDotProductAttention_0/{n}/bias": (heads, h) for n in ("query", "key", "value")},
         f"{b}MultiHeadDotProductAttention_0/out/kernel": (heads, h, d), f"{b}MultiHeadDotProductAttention_0/out/bias": (d,),
         f"{b}MlpBlock_0/Dense_0/kernel": (d, mlp), f"{b}MlpBlock_0/Dense_0/bias": (mlp,),
         f"{b}MlpBlock_0/Dense_1/kernel": (mlp, d), f"{b}MlpBlock_0/Dense_1/bias": (d,)}
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(shape).astype(np.float32) * 0.1 for k, shape in t.items()}


def test_root_with_non_finite_weights_is_refused(tmp_path):
    import mu2hub

    arrays = _big_vision_arrays()
    np.savez(tmp_path / "ok.npz", **arrays)
    mu2hub.from_big_vision(tmp_path / "ok.npz")  # the honest file imports
    arrays["Transformer/encoder_norm/scale"][3] = np.inf
    np.savez(tmp_path / "vit.npz", **arrays)
    with pytest.raises(FormatError, match=r"vit.npz \(norm\).*NaN or Inf"):
        mu2hub.from_big_vision(tmp_path / "vit.npz")


def test_big_vision_file_with_missing_or_misshapen_tensors_is_a_format_error(tmp_path):
    import mu2hub

    arrays = _big_vision_arrays()
    del arrays["Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel"]
    arrays["embedding/kernel"] = arrays["embedding/kernel"][0]  # rank 3
    np.savez(tmp_path / "vit.npz", **arrays)
    with pytest.raises(FormatError, match=r"vit.npz: not a plain big_vision / vit_jax ViT: ValueError"):
        mu2hub.from_big_vision(tmp_path / "vit.npz")


def test_fifo_in_place_of_a_big_vision_checkpoint_is_refused(tmp_path):
    import mu2hub

    path = tmp_path / "vit.npz"
    os.mkfifo(path)
    try:
        done, error = _bounded(lambda: mu2hub.from_big_vision(path))
    finally:
        _release(path)
    assert done and isinstance(error, FormatError) and "FIFO" in str(error), error


def test_fifo_in_a_timm_folder_is_refused(tmp_path):
    import json

    import mu2hub

    (tmp_path / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    os.mkfifo(tmp_path / "model.safetensors")
    try:
        done, error = _bounded(lambda: mu2hub.from_timm(tmp_path))
    finally:
        _release(tmp_path / "model.safetensors")
    assert done and isinstance(error, FormatError) and "model.safetensors" in str(error) and "FIFO" in str(error), error
