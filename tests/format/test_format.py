"""The published format: canonical component bytes, ids, and validation of every JSON a repo holds."""

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as st_load

from mu2hub.errors import ComponentIntegrityError, FormatError, FormatVersionError, UnsafePathError
from mu2hub.format.system import (
    ComponentRef,
    Dims,
    SystemConfig,
    TaskFile,
    check_relpath,
    component_bytes,
    component_id,
    parse_component,
    slot_names,
)

HEX = "ab" * 32


def assert_canonical_layout(data: bytes, tensors: dict[str, np.ndarray], kind: str) -> None:
    """docs/FORMAT.md's component layout, read byte by byte rather than through safetensors: header JSON with sorted
    keys and no whitespace, padded with spaces to a multiple of 8 bytes, then the tensors sorted by name and packed
    without gaps as float32 little-endian."""
    (size,) = struct.unpack("<Q", data[:8])
    header = data[8:8 + size].decode()
    text = header.rstrip(" ")
    assert size % 8 == 0 and len(header) - len(text) < 8, f"header of {size} bytes, {len(header) - len(text)} spaces"
    parsed = json.loads(text)
    assert text == json.dumps(parsed, sort_keys=True, separators=(",", ":"))
    assert parsed.pop("__metadata__") == {"format": "mu2hub/1", "kind": kind}
    assert list(parsed) == sorted(tensors)
    offset, body = 0, data[8 + size:]
    for name in sorted(tensors):
        arr = np.asarray(tensors[name])
        end = offset + arr.size * 4
        assert parsed[name] == {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, end]}
        assert body[offset:end] == arr.astype("<f4").tobytes()
        offset = end
    assert len(body) == offset


def test_component_bytes_are_valid_safetensors_and_canonical():
    rng = np.random.default_rng(0)
    t = {"b": rng.standard_normal((3, 4)).astype(np.float32), "a": rng.standard_normal(5).astype(np.float32)}
    data = component_bytes(t, "block")
    assert_canonical_layout(data, t, "block")
    # insertion order must not matter: same tensors -> same bytes -> same id
    assert component_bytes(dict(reversed(list(t.items()))), "block") == data
    loaded = st_load(data)
    assert set(loaded) == {"a", "b"} and np.array_equal(loaded["b"], t["b"])
    kind, back = parse_component(data, expected_id=component_id(data))
    assert kind == "block" and np.array_equal(back["a"], t["a"])
    # a different kind is a different component
    assert component_id(component_bytes(t, "norm")) != component_id(data)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3), st.integers(0, 2**31 - 1), st.text("abz_.0", max_size=9))
def test_component_roundtrip_any_shape(shape, seed, other):
    """Any shape, beside a tensor whose name (1 to 10 characters) changes the header's length."""
    arr = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    tensors = {"x": arr, "y" + other: np.ones(2, np.float32)}
    data = component_bytes(tensors, "cls")
    assert_canonical_layout(data, tensors, "cls")
    _, back = parse_component(data, expected_id=component_id(data))
    assert back["x"].shape == tuple(shape) and np.array_equal(back["x"], arr)


def test_header_padding_takes_every_value_from_0_to_7():
    """Names of 8 consecutive lengths give headers of 8 consecutive lengths: each padding 0-7 occurs, and each is the
    least that reaches a multiple of 8 (assert_canonical_layout)."""
    pads = set()
    for k in range(1, 9):
        tensors = {"w" * k: np.zeros(3, np.float32)}
        data = component_bytes(tensors, "norm")
        assert_canonical_layout(data, tensors, "norm")
        (size,) = struct.unpack("<Q", data[:8])
        pads.add(size - len(data[8:8 + size].rstrip(b" ")))
    assert pads == set(range(8))


def test_corrupt_and_truncated_components_are_rejected_by_name():
    data = component_bytes({"x": np.ones(64, np.float32)}, "cls")
    cid = component_id(data)
    bad = bytearray(data)
    bad[-1] ^= 0xFF
    with pytest.raises(ComponentIntegrityError, match=cid[:8]):
        parse_component(bytes(bad), expected_id=cid)
    with pytest.raises(ComponentIntegrityError, match="force_download"):
        parse_component(data[:-10], expected_id=cid)
    with pytest.raises(FormatError, match="safetensors"):
        parse_component(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json", expected_id=None)


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/../../b", "a\\b", "", "C:/x", "a//b", "./a"])
def test_unsafe_paths_rejected(name):
    with pytest.raises(UnsafePathError):
        check_relpath(name)


def test_safe_path_accepted():
    assert check_relpath("components/ab/x.safetensors") == "components/ab/x.safetensors"


def _task_json(**over):
    comps = [{"slot": s, "id": HEX, "params": 1, "bytes": 100} for s in slot_names(2)]
    base = {"format_version": 1, "task": "t", "labels": ["a", "b"],
            "path": {"image_size": 16, "num_layers": 2, "adapter_layers": [], "adapter_dim": 16, "components": comps}}
    base.update(over)
    return base


def test_task_file_roundtrip():
    tf = TaskFile.from_json(_task_json(), "tasks/t.json")
    again = TaskFile.from_json(json.loads(json.dumps(tf.to_json())), "tasks/t.json")
    assert again == tf and tf.num_classes == 2 and tf.download_bytes == 100


@pytest.mark.parametrize(
    "mutate, error, message",
    [
        (lambda d: d.update(format_version=99), FormatVersionError, "upgrade mu2hub"),
        (lambda d: d.update(task="../evil"), UnsafePathError, "invalid task name"),
        (lambda d: d.update(task="/abs"), UnsafePathError, "invalid task name"),
        (lambda d: d["path"]["components"][0].update(id="XYZ"), FormatError, r"path.components\[0\].id|64 lowercase hex"),
        (lambda d: d["path"]["components"][0].update(params="1"), FormatError, r"path.components\[0\].params"),
        (lambda d: d["path"].pop("image_size"), FormatError, "missing required key 'path.image_size'"),
        (lambda d: d["path"]["components"].pop(), FormatError, "missing \\['head'\\]"),
        (lambda d: d["path"]["components"][0].update(slot="evil"), FormatError, "not a known slot"),
        (lambda d: d["path"]["components"][0].update(source={"repo_id": "../x", "revision": "a" * 40}), UnsafePathError, "repo id"),
        (lambda d: d["path"]["components"][0].update(source={"repo_id": "o/r", "revision": "main"}), FormatError, "40-hex"),
        (lambda d: d.update(labels=[]), FormatError, "labels"),
        (lambda d: d.update(labels="ab"), FormatError, "labels"),
    ],
)
def test_task_file_validation(mutate, error, message):
    d = _task_json()
    mutate(d)
    with pytest.raises(error, match=message):
        TaskFile.from_json(d, "tasks/t.json")


def test_task_file_top_level_must_be_object():
    with pytest.raises(FormatError, match="JSON object"):
        TaskFile.from_json([1, 2], "tasks/t.json")


def test_config_validation():
    cfg = SystemConfig(Dims(32, 2, 64, 4), 16, 2, name="x")
    assert SystemConfig.from_json(cfg.to_json()) == cfg
    other = dict(cfg.to_json(), library_name="timm")
    with pytest.raises(FormatError, match="not a mu2hub repo"):
        SystemConfig.from_json(other)
    with pytest.raises(FormatVersionError):
        SystemConfig.from_json(dict(cfg.to_json(), format_version=2))
    with pytest.raises(FormatError, match="hidden_size"):
        SystemConfig.from_json({k: v for k, v in cfg.to_json().items() if k != "hidden_size"})


def test_slot_order_puts_adapters_before_their_block():
    assert slot_names(2, (1,)) == ["patch_embed", "cls", "pos_embed", "block.0", "adapter.1", "block.1", "norm", "head"]


def test_component_ref_filename_uses_prefix_folder():
    assert ComponentRef("head", HEX, 1, 1).filename == f"components/ab/{HEX}.safetensors"
