"""The shape of streamlite.py (DESIGN.md): sections in order, each using only the sections above
it; no socket or asyncio in a section whose banner says "(no I/O)"; short functions."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = (ROOT / "streamlite.py").read_text(encoding="utf-8")
TREE = ast.parse(SOURCE)
BANNER = re.compile(r"^# (.+?) #{4,}$")
EXPECTED = [
    "Errors", "Helpers", "Value types", "SSE decoder (no I/O)", "Wire dialects (no I/O)", "Accumulator (no I/O)",
    "Stream decoding (no I/O)", "HTTP/1.1 (no I/O)", "Connection settings (no I/O)", "Sync driver", "Async driver",
    "Client API", "Command line",
]


def sections():
    """[(name, first line)] in file order."""
    found = []
    for number, line in enumerate(SOURCE.splitlines(), 1):
        match = BANNER.match(line)
        if match:
            found.append((match.group(1).strip(), number))
    return found


def section_of(line, table):
    current = None
    for index, (_, start) in enumerate(table):
        if start <= line:
            current = index
    return current


def top_level_names():
    """Each module-level name with the line that defines it."""
    defined = {}
    for node in TREE.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.setdefault(node.name, node.lineno)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        defined.setdefault(name.id, node.lineno)
    return defined


def runtime_names(node):
    """Names a node loads when it runs (annotations left out: they are never evaluated)."""
    skip = set()
    for child in ast.walk(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for arg in child.args.args + child.args.kwonlyargs + child.args.posonlyargs:
                if arg.annotation is not None:
                    skip.update(map(id, ast.walk(arg.annotation)))
            for arg in (child.args.vararg, child.args.kwarg):
                if arg is not None and arg.annotation is not None:
                    skip.update(map(id, ast.walk(arg.annotation)))
            if child.returns is not None:
                skip.update(map(id, ast.walk(child.returns)))
        elif isinstance(child, ast.AnnAssign):
            skip.update(map(id, ast.walk(child.annotation)))
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load) and id(child) not in skip:
            yield child


def test_the_sections_are_the_designed_ones_in_order():
    assert [name for name, _ in sections()] == EXPECTED


def test_no_section_uses_a_name_defined_below_it():
    table = sections()
    defined = top_level_names()
    problems = []
    for node in TREE.body:
        home = section_of(node.lineno, table)
        if home is None:
            continue
        for name in runtime_names(node):
            line = defined.get(name.id)
            if line is not None and section_of(line, table) is not None and section_of(line, table) > home:
                problems.append("%s (line %d, %s) uses %s from %s" % (
                    getattr(node, "name", "?"), name.lineno, table[home][0], name.id, table[section_of(line, table)][0]))
    assert not problems, "\n".join(problems)


def test_no_io_sections_hold_no_socket_or_asyncio():
    table = sections()
    problems = []
    for node in TREE.body:
        home = section_of(node.lineno, table)
        if home is None or "(no I/O)" not in table[home][0]:
            continue
        for child in ast.walk(node):
            names = []
            if isinstance(child, ast.Name):
                names = [child.id]
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in child.names] + [getattr(child, "module", None) or ""]
            for name in names:
                if name.split(".")[0] in ("socket", "asyncio", "select"):
                    problems.append("%s: %s at line %d" % (table[home][0], name, child.lineno))
    assert not problems, "\n".join(problems)


def function_lengths():
    for node in ast.walk(TREE):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body_start = node.body[0].lineno
            if isinstance(node.body[0], ast.Expr) and isinstance(getattr(node.body[0], "value", None), ast.Constant):
                body_start = node.body[0].end_lineno + 1  # the docstring does not count
            yield node.name, node.lineno, node.end_lineno - body_start + 1


def test_no_function_is_longer_than_about_forty_lines():
    long = ["%s (line %d): %d lines" % item for item in function_lengths() if item[2] > 45]
    assert not long, "\n".join(long)
