"""Strict, bounded JSON for every file mu2hub reads, and typed access that names the offending key.

`load_json` refuses what lets two readers disagree or a small file exhaust memory: invalid UTF-8, more than
`MAX_JSON_BYTES`, nesting deeper than `MAX_JSON_DEPTH`, duplicate keys, `NaN` / `Infinity` / overflowing floats.
`Obj` reads one object field by field with type and range checks (`'path.components[3].id' must be ...`), and
`check_free` bounds the free-form sections readers ignore. The rules of each file are in `schema.py`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Iterable

from ..errors import FormatError

MAX_JSON_BYTES = 32 * 2**20  # a 21k-label task with its probe is ~2 MB
MAX_JSON_DEPTH = 32  # the format needs 5
MAX_NAME_CHARS = 1_024
MAX_TEXT_CHARS = 65_536
MAX_LIST = 100_000  # any other list (ids in lineage, tasks in shared_with, hparam lists)
MAX_KEYS = 10_000  # keys of any free-form object

MISSING = object()
#: Control characters, lone surrogates (unencodable), bidirectional overrides/isolates ("trojan source").
_BAD_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")
_BAD_TEXT_CHARS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\u202a-\u202e\u2066-\u2069]")  # \t \n ok


# ---------------------------------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (every number must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a float (every number must be finite)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r} (readers would disagree on its value)")
    return out


def load_json(data: bytes | str, where: str, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Strict JSON: UTF-8, at most `max_bytes`, nesting at most `MAX_JSON_DEPTH`, no duplicate keys, no NaN/Infinity."""
    if len(data) > max_bytes:
        raise FormatError(f"{len(data):,} bytes, over the {max_bytes:,}-byte limit for a JSON file", path=where)
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise FormatError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels", path=where) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"malformed JSON: {e}", path=where) from e
    _check_depth(value, where)
    return value


def _check_depth(value: Any, where: str) -> None:
    stack = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise FormatError(f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels", path=where)
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)


# ---------------------------------------------------------------------------------------------------
# Typed access to one JSON object, naming the offending key (`path.components[3].id`)
# ---------------------------------------------------------------------------------------------------


def show_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class Obj:
    """A JSON object read field by field; every accessor checks type and range and names the key on failure."""

    def __init__(self, data: Any, where: str, prefix: str = ""):
        if not isinstance(data, dict):
            raise FormatError(f"{prefix or 'top level'} must be a JSON object, got {type(data).__name__}", path=where)
        self.data, self.where, self.prefix = data, where, prefix

    def key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, key: str, message: str) -> FormatError:
        return FormatError(f"{self.key(key)!r} {message}", path=self.where)

    def _get(self, key: str, default: Any) -> Any:
        if key not in self.data:
            if default is MISSING:
                raise FormatError(f"missing required key {self.key(key)!r}", path=self.where)
            return default
        return self.data[key]

    def int(self, key: str, lo: int, hi: int, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        return check_int(value, self.key(key), self.where, lo, hi)

    def num(self, key: str, lo: float = -math.inf, hi: float = math.inf, default: Any = MISSING, *,
            nullable: bool = False) -> Any:
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        return check_num(value, self.key(key), self.where, lo, hi)

    def bool(self, key: str, default: Any = MISSING) -> Any:
        value = self._get(key, default)
        if key in self.data and not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {show_value(value)}")
        return value

    def str(self, key: str, max_chars: int = MAX_NAME_CHARS, default: Any = MISSING, *,
            choices: Iterable[str] | None = None, pattern: re.Pattern | None = None, text: bool = False,
            nullable: bool = False) -> Any:
        value = self._get(key, default)
        if (value is default and key not in self.data) or (value is None and nullable):
            return value
        return check_str(value, self.key(key), self.where, max_chars, choices=choices, pattern=pattern, text=text)

    def list(self, key: str, max_len: int, default: Any = MISSING, *, min_len: int = 0) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, list):
            raise self.fail(key, f"must be a list, got {type(value).__name__} {show_value(value)}")
        if not min_len <= len(value) <= max_len:
            raise self.fail(key, f"must hold {min_len} to {max_len:,} items, got {len(value):,}")
        return value

    def items(self, key: str, max_len: int, check: Callable[[Any, str], Any], default: Any = MISSING, *,
              min_len: int = 0) -> Any:
        """A list whose every item passes `check(item, key_of_item)`."""
        value = self.list(key, max_len, default, min_len=min_len)
        if value is default and key not in self.data:
            return value
        return [check(v, f"{self.key(key)}[{i}]") for i, v in enumerate(value)]

    def sub(self, key: str, default: Any = MISSING) -> "Obj | None":
        value = self._get(key, default)
        if value is default and key not in self.data:
            return None if value is None else Obj(value, self.where, self.key(key))
        return Obj(value, self.where, self.key(key))

    def free(self, key: str, default: Any = MISSING) -> Any:
        """A free-form section (readers ignore its unknown keys): any bounded JSON."""
        value = self._get(key, default)
        check_free(value, self.key(key), self.where)
        return value


def check_int(value: Any, key: str, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise FormatError(f"{key!r} must be an integer, got {type(value).__name__} {show_value(value)}", path=where)
    if not lo <= value <= hi:
        raise FormatError(f"{key!r} must lie in [{lo:,}, {hi:,}], got {show_value(value)}", path=where)
    return value


def check_num(value: Any, key: str, where: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise FormatError(f"{key!r} must be a number, got {type(value).__name__} {show_value(value)}", path=where)
    if not math.isfinite(value) or not lo <= value <= hi:
        raise FormatError(f"{key!r} must be a finite number in [{lo:g}, {hi:g}], got {show_value(value)}", path=where)
    return float(value)


def check_str(value: Any, key: str, where: str, max_chars: int = MAX_NAME_CHARS, *,
              choices: Iterable[str] | None = None, pattern: re.Pattern | None = None, text: bool = False,
              min_chars: int = 0) -> str:
    if not isinstance(value, str):
        raise FormatError(f"{key!r} must be a string, got {type(value).__name__} {show_value(value)}", path=where)
    if not min_chars <= len(value) <= max_chars:
        raise FormatError(f"{key!r} must have {min_chars} to {max_chars:,} characters, got {len(value):,}", path=where)
    bad = (_BAD_TEXT_CHARS if text else _BAD_CHARS).search(value)
    if bad:
        raise FormatError(f"{key!r} contains the control/bidi character U+{ord(bad.group()):04X}: {show_value(value)}",
                          path=where)
    if choices is not None and value not in tuple(choices):
        raise FormatError(f"{key!r} must be one of {list(choices)}, got {show_value(value)}", path=where)
    if pattern is not None and not pattern.match(value):
        raise FormatError(f"{key!r} is malformed: {show_value(value)}", path=where)
    return value


def check_free(value: Any, key: str, where: str) -> None:
    """Bounded JSON: finite numbers, strings without control characters, lists/objects of bounded size."""
    stack = [(value, key)]
    while stack:
        v, k = stack.pop()
        if isinstance(v, dict):
            if len(v) > MAX_KEYS:
                raise FormatError(f"{k!r} has {len(v):,} keys, over the {MAX_KEYS:,} limit", path=where)
            for name, item in v.items():
                check_str(name, f"{k} key", where, MAX_NAME_CHARS)
                stack.append((item, f"{k}.{name}"))
        elif isinstance(v, list):
            if len(v) > MAX_LIST:
                raise FormatError(f"{k!r} has {len(v):,} items, over the {MAX_LIST:,} limit", path=where)
            stack.extend((item, f"{k}[{i}]") for i, item in enumerate(v))
        elif isinstance(v, str):
            check_str(v, k, where, MAX_TEXT_CHARS, text=True)
        elif isinstance(v, float) and not math.isfinite(v):
            raise FormatError(f"{k!r} must be finite, got {v!r}", path=where)
        elif not (v is None or isinstance(v, (bool, int, float))):
            raise FormatError(f"{k!r} has unsupported value {show_value(v)}", path=where)


def has_bad_chars(text: str) -> bool:
    """Control characters, lone surrogates or bidi overrides: never part of a name a repo may hold."""
    return _BAD_CHARS.search(text) is not None
