"""Contributor text is inert in every markdown sink (`mu2hub.utils.text`), checked with a CommonMark + GFM-table
renderer (markdown-it-py), the family the Hub renders cards with: no tag, entity, link, image or cell break survives.

The end-to-end case (a hostile pull request merged through the loopback Hub, the refreshed README.md parsed with
`ModelCard.load` and rendered) is in `tests/e2e/test_adversarial.py` (section 1b).
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from mu2hub.utils.text import md_code, md_fence, md_text, one_line, py_string

HOSTILE = [
    "<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "[click](javascript:alert(1))",
    "![i](https://evil.example/i.png)", "a | b | c", "`` ` ``` code", "&lt;b&gt; &#60;i&#62;", "<https://evil.example>",
    "_emph_ *strong* ~~gone~~", "line\nbreak\n```\n<b>", "\\|\\`\\<", "`", " ", "[x]: https://evil.example",
]
MD = MarkdownIt("commonmark").enable("table")


def _inline(text: str) -> list:
    """The inline tokens of `text` rendered inside one GFM table row (header | cell | end)."""
    tokens = MD.parse(f"| h | x | y |\n|---|---|---|\n| a | {text} | z |\n")
    cells = [t for t in tokens if t.type == "td_open"]
    assert len(cells) == 3, text  # the row keeps its column count
    return [c for t in tokens if t.type == "inline" for c in (t.children or [])]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_text_renders_exactly_the_characters(text):
    children = _inline(md_text(text))
    assert not [c for c in children if c.type not in ("text", "softbreak")], [c.type for c in children]
    shown = [c.content for c in children if c.type == "text"]
    assert one_line(text) in "".join(shown)


@pytest.mark.parametrize("text", HOSTILE)
def test_md_code_is_one_code_span_holding_the_text(text):
    children = _inline(md_code(text))
    spans = [c for c in children if c.type == "code_inline"]
    assert len(spans) == 1 and not [c for c in children if c.type not in ("text", "code_inline")]
    assert spans[0].content.strip() == one_line(text).strip()


@pytest.mark.parametrize("text", HOSTILE)
def test_md_fence_keeps_the_block_closed(text):
    tokens = MD.parse(md_fence(f"report\n{text}") + "\n\nafter <b>x</b>")
    fences = [t for t in tokens if t.type == "fence"]
    assert len(fences) == 1 and fences[0].content == f"report\n{text}\n"


@pytest.mark.parametrize("text", HOSTILE)
def test_py_string_is_one_python_literal(text):
    import ast

    literal = py_string(text)
    assert "\n" not in literal and ast.literal_eval(literal) == one_line(text)


def test_bounds_cut_long_text():
    assert len(one_line("x" * 10_000)) == 200 and len(md_code("y" * 10_000, 50)) <= 52
