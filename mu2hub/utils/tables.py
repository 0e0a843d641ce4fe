"""Plain-text tables and human sizes for the CLI, the demo and benchmarks."""

from __future__ import annotations

from typing import Any, Sequence


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A fixed-width table; numbers right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_is_num(r[i]) for r in rows if r[i] is not None) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), sep] + [line(r) for r in cells[1:]])


def _is_num(v: Any) -> bool:
    if isinstance(v, (int, float)):
        return True
    return isinstance(v, str) and v.replace(",", "").replace(".", "", 1).replace("%", "").replace("x", "").strip().lstrip("-").isdigit()
