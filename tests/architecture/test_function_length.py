"""No function in `mu2hub/` longer than 60 lines of code (its docstring, blank lines and comments not counted): a
longer one is split into named steps, so a reader sees what it does before how."""

from __future__ import annotations

import ast
import io
import tokenize

from layers import PACKAGE

MAX_LINES = 60
_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENCODING,
             tokenize.ENDMARKER}


def code_lines(source: str) -> set[int]:
    """The lines that hold a token of code (a string spanning lines holds each of them)."""
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in _NOT_CODE:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return lines


def function_lengths(source: str, filename: str = "<string>") -> dict[str, int]:
    """`Class.method` / `function` (nested ones as `outer.inner`) -> its lines of code, the `def` line included."""
    code = code_lines(source)
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                span = set(range(child.lineno, (child.end_lineno or child.lineno) + 1))
                first = child.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):  # the docstring
                    span -= set(range(first.lineno, (first.end_lineno or first.lineno) + 1))
                found[name] = len(span & code)
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename), "")
    return found


def test_the_counter_counts_code_only():
    source = '''
def f(x):
    """A docstring
    on two lines."""
    # a comment

    y = (x +
         1)
    return y
'''
    assert function_lengths(source) == {"f": 4}
    long = "def g():\n" + "".join(f"    a{i} = {i}\n" for i in range(MAX_LINES)) + "    return 0\n"
    assert function_lengths(long) == {"g": MAX_LINES + 2}


def test_no_function_is_longer_than_60_lines_of_code():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for name, n in function_lengths(path.read_text(), str(path)).items():
            if n > MAX_LINES:
                offenders.append(f"{path.relative_to(PACKAGE.parent)}: {name} has {n} lines of code")
    assert not offenders, f"split into named steps (at most {MAX_LINES} lines of code each):\n" + "\n".join(offenders)
