"""The code's shape: services stay apart, and no module grows past what one reader holds."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from common.config import project_root

ROOT = project_root()
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())
MAX_LINES = 400
CHECKED = ("services", "common", "tools", "sim", "bench", "tests")


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service(service: str) -> None:
    others = {s for s in SERVICES if s != service}
    wrong = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.split(".")[:2] in
                                                ([["services", o] for o in others]))
             for p in _modules(f"services/{service}")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_common_imports_no_service() -> None:
    wrong = {str(p.relative_to(ROOT)): sorted(n for n in _imports(p) if n.startswith("services"))
             for p in _modules("common")}
    assert {k: v for k, v in wrong.items() if v} == {}


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules(*CHECKED)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, "split these by responsibility"


CANCEL_CHECKS = {"reraise_if_cancelling", "reraise_if_cancelled"}


def _own_nodes(node: ast.AST) -> list[ast.AST]:
    """``node``'s descendants, not looking into nested functions or classes."""
    out: list[ast.AST] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue
        out.append(child)
        stack.extend(ast.iter_child_nodes(child))
    return out


def _checks_cancel(statements: list[ast.stmt]) -> bool:
    return any(isinstance(s, ast.Expr) and isinstance(s.value, ast.Call) and isinstance(s.value.func, ast.Name)
               and s.value.func.id in CANCEL_CHECKS for s in statements)


def _loops_that_outlive_a_cancel(path: Path) -> list[str]:
    found = []
    for fn in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(fn, ast.AsyncFunctionDef):
            continue
        for loop in (n for n in _own_nodes(fn) if isinstance(n, ast.While)):
            if _checks_cancel(loop.body):
                continue
            for attempt in (n for n in _own_nodes(loop) if isinstance(n, ast.Try)):
                if not any(isinstance(n, ast.Await | ast.AsyncWith | ast.AsyncFor)
                           for s in attempt.body for n in [s, *_own_nodes(s)]):
                    continue
                for handler in attempt.handlers:
                    caught = ast.unparse(handler.type) if handler.type else "BaseException"
                    leaves = any(isinstance(n, ast.Raise | ast.Return | ast.Break)
                                 for s in handler.body for n in [s, *_own_nodes(s)])
                    if caught.endswith("CancelledError") or leaves or _checks_cancel(handler.body):
                        continue
                    found.append(f"{path.relative_to(ROOT)}:{handler.lineno} ({fn.name}, except {caught})")
    return found


def test_a_retry_loop_ends_when_its_task_is_cancelled() -> None:
    """Client libraries can hand a cancel back as an ordinary error (redis-py, aiohttp and 3.11's wait_for when it
    meets their own timeout): a loop that catches it and goes on must ask whether its task is being cancelled,
    at the top of each round or in the handler, or a shutdown waits for it for ever."""
    found = [f for p in _modules("services", "common") for f in _loops_that_outlive_a_cancel(p)]
    assert found == [], "call common.cancel.reraise_if_cancelling() there"
