"""``python -m bench [name ...] [options]``: run benchmarks (all of them when no name is given).

Every module ``bench/<name>.py`` that defines ``main(argv: list[str]) -> int`` is a benchmark;
options after the names go to each benchmark run. ``--list`` prints the names.
"""

from __future__ import annotations

import importlib
import pkgutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import cast

import bench

BenchMain = Callable[[list[str]], int]


def available() -> dict[str, BenchMain]:
    """The benchmarks in this package, by name, in name order."""
    found: dict[str, BenchMain] = {}
    for info in sorted(pkgutil.iter_modules(bench.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        module = importlib.import_module(f"bench.{info.name}")
        entry = getattr(module, "main", None)
        if callable(entry):
            found[info.name] = cast(BenchMain, entry)
    return found


def _stop_on_signals() -> None:
    """SIGTERM (``timeout``, ``kill``) ends a run as Ctrl-C does: through the benchmarks' ``finally`` blocks,
    which stop the stack they started. A second signal during that clean-up is ignored."""
    def stop(signum: int, _frame: FrameType | None) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        print(f"bench: {signal.Signals(signum).name}; stopping what the run started", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the named benchmarks (or all); non-zero if any of them fails."""
    _stop_on_signals()
    args = list(sys.argv[1:] if argv is None else argv)
    benches = available()
    if "--list" in args:
        print("\n".join(benches))
        return 0
    names: list[str] = []
    while args and not args[0].startswith("-"):
        name = args.pop(0)
        if name not in benches:
            print(f"unknown benchmark {name!r}; have: {', '.join(benches)}", file=sys.stderr)
            return 2
        names.append(name)
    failed: list[str] = []
    for name in names or list(benches):
        print(f"=== bench {name} ===", flush=True)
        started = time.monotonic()
        code = benches[name](list(args))
        print(f"=== bench {name}: exit {code} in {time.monotonic() - started:.1f}s ===", flush=True)
        if code != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
