"""A reader of the Dockerfile's stages and instructions (continuation lines joined, comments dropped)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Stage:
    """One ``FROM … AS name`` stage and its instructions, in order."""

    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        """The argument text of every ``keyword`` instruction."""
        return [rest for kw, rest in self.instructions if kw == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of every instruction."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """Global ``ARG`` defaults and the stages of the Dockerfile at ``path``."""
    args: dict[str, str] = {}
    found: list[Stage] = []
    for keyword, rest in instructions(path.read_text()):
        if keyword == "FROM":
            words = rest.split()
            base = words[0]
            for name, value in args.items():
                base = base.replace(f"${{{name}}}", value)
            found.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else ""))
        elif not found and keyword == "ARG":
            name, _, value = rest.partition("=")
            args[name] = value
        elif found:
            found[-1].instructions.append((keyword, rest))
    return args, found


def copy_sources(rest: str) -> tuple[str | None, list[str]]:
    """(``--from`` stage or None, source paths) of a ``COPY`` instruction."""
    words = shlex.split(rest)
    origin = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
    paths = [w for w in words if not w.startswith("--")]
    return origin, paths[:-1]
