"""One side of one ``bench compare`` comparison, in a process of its own.

    python -m bench._cmp_worker <component> <side> <params as JSON>

Runs ``bench._cmp_<component>.run(side, params)`` and prints its metrics as one JSON line (the last
line of stdout), so each side's CPU is its own process's and neither warms the other's caches.
"""

from __future__ import annotations

import importlib
import sys

import orjson


def main(argv: list[str]) -> int:
    """Run one side; print ``{"metric": value, ...}``."""
    component, side, params = argv[0], argv[1], orjson.loads(argv[2])
    module = importlib.import_module(f"bench._cmp_{component}")
    metrics = module.run(side, params)
    sys.stdout.write(orjson.dumps(metrics).decode() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
