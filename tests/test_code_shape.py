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
