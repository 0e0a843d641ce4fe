"""Contributor text made inert, one function per sink: markdown text, markdown code, fenced blocks, one-line plain text.

Every string a task file carries (task and label names, `lineage.*`, anything a pull request adds) is hostile where
it is shown: raw HTML (`<img onerror=...>`), links and images, a `|` that splits a table row, a backtick that ends a
code span, a newline that ends a fence or the card's YAML front matter. The schema bounds these strings (length, no
control or bidi characters, no newline in the fields a card shows); these functions render what is left literally.
The Hub renders CommonMark with GFM tables, so `tests/utils/test_trust_text.py` checks them with markdown-it-py.
"""

from __future__ import annotations

import json
import re

#: Punctuation with a meaning in CommonMark/GFM inline text (HTML, entities, links, images, emphasis, code, tables).
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>&|~!])")
#: `_` opens or closes emphasis only beside a non-alphanumeric character (`task_0` is plain text).
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_SPACE = re.compile(r"\s+")
_BACKTICKS = re.compile(r"`+")


def one_line(text: object, max_chars: int = 200) -> str:
    """`text` as one bounded line: whitespace runs (newlines included) become one space, the rest is cut with '…'."""
    s = _SPACE.sub(" ", str(text)).strip()
    return s if len(s) <= max_chars else s[:max_chars - 1] + "\u2026"


def md_text(text: object, max_chars: int = 200) -> str:
    """Markdown inline text (a list item, a table cell) that renders as exactly these characters: no tag, entity,
    link, image, emphasis or cell break survives (each special character is backslash-escaped)."""
    s = _MD_SPECIAL.sub(r"\\\1", one_line(text, max_chars))
    return _MD_UNDERSCORE.sub(r"\\_", s)


def md_code(text: object, max_chars: int = 200) -> str:
    """A markdown code span holding `text` literally, in a table cell too: a fence longer than any backtick run in
    it, `|` escaped (GFM strips the backslash inside code in tables)."""
    s = one_line(text, max_chars).replace("|", "\\|")
    fence = "`" * (max((len(m) for m in _BACKTICKS.findall(s)), default=0) + 1)
    pad = " " if s.startswith("`") or s.endswith("`") or not s.strip() else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def md_fence(text: str, info: str = "") -> str:
    """A fenced code block holding `text` verbatim: its fence is longer than any backtick run inside."""
    fence = "`" * max(3, max((len(m) for m in _BACKTICKS.findall(text)), default=0) + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def py_string(text: object, max_chars: int = 200) -> str:
    """A Python string literal for a usage snippet (inside a fenced block): quoted and escaped, one line."""
    return json.dumps(one_line(text, max_chars))  # a JSON string (ASCII, escaped) is a valid Python literal
