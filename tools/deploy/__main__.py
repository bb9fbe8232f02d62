"""``python -m tools.deploy``: write ``deploy/k8s/`` and ``deploy/compose.yaml`` from ``tools/deploy/spec.py``, and
the Grafana dashboard and Prometheus rules from ``tools/deploy/monitoring.py``.

``--check`` writes nothing and exits 1 naming the files that differ from what would be written;
``secrets [DIR]`` creates the compose secret files missing from DIR (default ``deploy/secrets``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.config import project_root
from tools.deploy import compose, k8s, monitoring

DEPLOY = project_root() / "deploy"


def generated() -> dict[Path, str]:
    """Every generated file under ``deploy/`` and its content."""
    out = {DEPLOY / "k8s" / name: text for name, text in k8s.files().items()}
    out[DEPLOY / "compose.yaml"] = compose.text()
    out.update({DEPLOY / path: text for path, text in monitoring.files().items()})
    return out


def stale() -> list[Path]:
    """Generated files whose content on disk differs (or that are missing)."""
    return [p for p, text in generated().items() if not p.is_file() or p.read_text() != text]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs="?", choices=("write", "secrets"), default="write")
    parser.add_argument("dir", nargs="?", type=Path, default=DEPLOY / compose.SECRETS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    if args.command == "secrets":
        created = compose.create_secret_files(args.dir)
        print(f"{args.dir}: created {', '.join(created) if created else 'nothing (every file exists)'}")
        return 0
    if args.check:
        late = stale()
        for path in late:
            print(f"out of date: {path.relative_to(project_root())} (run python -m tools.deploy)")
        return 1 if late else 0
    for path, text in generated().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(project_root())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
