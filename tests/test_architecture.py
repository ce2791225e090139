"""The house plan, checked: the layers of ARCHITECTURE.md (import-linter), no import cycle, short
functions, and no terminal output from library code."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "wbc"
MAX_LINES = 60  # a longer function says why in a `# long:` comment on the line above it


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    p = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-2000:]
    assert "2 kept, 0 broken" in p.stdout


def _cycles(graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycle_between_modules():
    graph = grimp.build_graph("wbc")
    # a package's __init__ re-exporting from its own modules is not a cycle of the design
    for pkg in ("wbc", "wbc.cli"):
        for m in list(graph.find_modules_directly_imported_by(pkg)):
            graph.remove_import(importer=pkg, imported=m)
    assert _cycles(graph) == []


def _functions():
    for f in sorted(PACKAGE.rglob("*.py")):
        lines = f.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                yield f.relative_to(PACKAGE), node, lines[first - 2] if first >= 2 else ""


def test_functions_are_short_or_say_why():
    long = [f"{f}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)" for f, n, above in _functions()
            if n.end_lineno - n.lineno + 1 > MAX_LINES and "# long:" not in above]
    assert long == []


def test_library_code_never_prints():
    """Only wbc.cli draws on the terminal: no print() and no console anywhere else (library code logs)."""
    offenders = []
    for f in sorted(PACKAGE.rglob("*.py")):
        if f.relative_to(PACKAGE).parts[0] == "cli" or f.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


def test_the_command_line_and_the_review_commands_start_without_the_heavy_libraries():
    """`wbc --help` and `wbc review ...` build their options from plain modules: importing them loads no torch,
    timm or FastAPI (6 s of a 7 s start before), so a lab's everyday review commands answer at once."""
    code = ("import sys, wbc.cli, wbc.review.cases, wbc.review.export; "
            "print(' '.join(m for m in ('torch', 'timm', 'fastapi', 'onnxruntime') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == ""
