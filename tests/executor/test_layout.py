"""The executor keeps its shape: ``domain/`` pure, ``adapters/`` below the runners, no other service's modules, no
module over 400 lines (read from the source, nothing imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "services" / "executor"
MAX_LINES = 400
# What a domain module may not import: I/O, clocks, randomness, process state.
IMPURE = frozenset({"asyncio", "time", "datetime", "os", "random", "socket", "subprocess", "threading", "psycopg",
                    "psycopg_pool", "redis", "grpc", "opentelemetry", "httpx", "aiohttp", "logging",
                    "common.storage", "common.fastredis", "common.streams", "common.http1", "common.resp"})
# What an adapter may import of the executor: the domain, the ports and the other adapters.
ADAPTER_MAY_USE = ("services.executor.domain", "services.executor.ports", "services.executor.adapters")


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.py") if p.name != "__init__.py")


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports (``from a import b`` counts as ``a`` and ``a.b``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _under(name: str, prefixes: frozenset[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", _modules(PACKAGE / "domain"), ids=lambda p: p.stem)
def test_a_domain_module_does_no_io_and_knows_only_the_domain(path: Path) -> None:
    names = imported(path)
    assert sorted(n for n in names if _under(n, IMPURE)) == []
    outside = [n for n in names if n.startswith("services.") and not _under(n, ("services.executor.domain",))]
    assert outside == []


@pytest.mark.parametrize("path", _modules(PACKAGE / "adapters"), ids=lambda p: p.stem)
def test_an_adapter_uses_no_runner(path: Path) -> None:
    names = imported(path)
    assert [n for n in names if n.startswith("services.") and not _under(n, ADAPTER_MAY_USE)] == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_is_short_and_imports_no_other_service(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES
    assert [n for n in imported(path) if n.startswith("services.") and not _under(n, ("services.executor",))] == []


def test_the_checks_see_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import time\nfrom services.executor.order_runner import OrderRunner\n"
                      "from services.executor.domain import ticket\n")
    assert imported(module) == {"time", "services.executor.order_runner",
                                "services.executor.order_runner.OrderRunner", "services.executor.domain",
                                "services.executor.domain.ticket"}
