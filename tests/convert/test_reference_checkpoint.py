"""The Flax checkpoint reader: every entry `flax.serialization` writes reads back equal, one entry at a time;
damaged or hostile files are refused before anything is allocated."""

from __future__ import annotations

import struct

import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from mu2hub.errors import FormatError
from mu2hub.convert.reference_checkpoint import Spec, open_checkpoint

import reference_states as R

TREE = {
    "embedding:0": {"kernel": np.arange(48, dtype=np.float32).reshape(2, 2, 3, 4), "bias": np.ones(4, np.float32)},
    "opt_state:embedding:0": {"kernel": np.ones((2, 2, 3, 4), jnp.bfloat16)},
    "cls:1": np.linspace(-1, 1, 4, dtype=np.float32).reshape(1, 1, 4),
    "scalar:2": {"x": np.float32(3.5), "n": np.int32(7)},
    "big:3": {"w": np.random.default_rng(0).standard_normal((300, 7)).astype(np.float32)},
}


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return np.asarray(a).dtype == np.asarray(b).dtype and np.array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    """A msgpack checkpoint whose large arrays flax split into chunks (MAX_CHUNK_SIZE lowered from 2**30)."""
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 1000)
    path = tmp_path / "checkpoint_0_0"
    path.write_bytes(serialization.msgpack_serialize(TREE))
    return path


def test_every_entry_reads_back_as_flax_restores_it(chunked):
    ckpt, restored = open_checkpoint(chunked), serialization.msgpack_restore(chunked.read_bytes())
    assert sorted(ckpt.keys()) == sorted(TREE)
    for key in TREE:
        assert _equal(ckpt.read(key), restored[key]), key
    assert ckpt.spec("big:3") == {"w": Spec((300, 7), "float32")}
    assert ckpt.nbytes("embedding:0") == 52 * 4 and ckpt.nbytes("opt_state:embedding:0") == 48 * 2


def test_orbax_directory_reads_entry_by_entry(tmp_path):
    path = R.save_checkpoint(tmp_path, {k: v for k, v in TREE.items() if k != "scalar:2"}, 3, 0, orbax=True)
    ckpt = open_checkpoint(path)
    assert path.is_dir() and sorted(ckpt.keys()) == sorted(k for k in TREE if k != "scalar:2")
    assert ckpt.spec("embedding:0") == {"bias": Spec((4,), "float32"), "kernel": Spec((2, 2, 3, 4), "float32")}
    for key in ("embedding:0", "big:3", "cls:1", "opt_state:embedding:0"):
        assert _equal(ckpt.read(key), TREE[key]), key
    (path / "_METADATA").write_text("{ not json")
    with pytest.raises(FormatError, match=r"checkpoint_3_0: (not a readable|an) Orbax checkpoint"):
        open_checkpoint(path)


def _ext(payload: bytes, claimed: int = 0) -> bytes:
    return b"\xc9" + struct.pack(">I", len(payload) + claimed) + b"\x01" + payload


@pytest.mark.parametrize("data, match", [
    # a 4 GiB array claimed by a 40-byte file: refused from the header, nothing allocated
    (b"\x81\xa1k" + _ext(b"\x93\x91\xce\x40\x00\x00\x00\xa5uint8\xc6\x40\x00\x00\x00", 2**30), "runs past the end"),
    (b"\x81\xa1k" + _ext(b"\x93\x91\x02\xa6object\xc4\x02ab"), "not a numeric array"),
    (b"\x81\xa1k" + _ext(b"\x93\x91\x03\xa7float32\xc4\x04abcd"), "holds 4 bytes where it needs 12"),
    (b"\x81\xa1k\xd4\x05\x00", "ext type 5"),
    (b"\x81\xa1k" + b"\x91" * 40 + b"\xc0", "nested deeper"),
    (b"\x82\xa1k\xc0\xa1k\xc0", "appears twice"),
    (b"\x81\x01\xc0", "top-level key 1 is not a string"),
    (b"\x81\xa1k\xc1", "byte 0xc1 is not a msgpack type"),
    (b"\x81\xa1k\x81\xa1a\x83\xb9__msgpack_chunked_array__\xc3\xa5shape\x81\xa10\x05\xa6chunks\x80", "does not add up"),
])
def test_hostile_files_are_refused(tmp_path, data, match):
    path = tmp_path / "checkpoint_0_0"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=f"checkpoint_0_0: not a Flax msgpack checkpoint: .*{match}"):
        open_checkpoint(path).read("k")
