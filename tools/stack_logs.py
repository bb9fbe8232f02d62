"""Reading the stack's logs: the tail of one file, or all of them followed like ``tail -F``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

Printer = Callable[[str], None]


def tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a file ("" when missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            data = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def follow_logs(logs_dir: Path, names: Sequence[str] = (), lines: int = 20, follow: bool = True,
                out: Printer = print) -> int:
    """Print the last lines of every log (or of ``names``) and follow them, prefixed by name."""
    if not logs_dir.exists():
        out(f"no logs yet in {logs_dir} (make up)")
        return 1
    positions: dict[Path, tuple[int, int]] = {}

    def wanted() -> list[Path]:
        files = sorted(logs_dir.glob("*.log"))
        return [f for f in files if not names or f.stem in names]

    for path in wanted():
        for line in tail(path, lines).splitlines():
            out(f"{path.stem:>12} | {line}")
        st = path.stat()
        positions[path] = (st.st_ino, st.st_size)
    if not follow:
        return 0
    try:
        while True:
            for path in wanted():
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                inode, offset = positions.get(path, (st.st_ino, 0))
                if inode != st.st_ino or st.st_size < offset:
                    offset = 0
                if st.st_size > offset:
                    with path.open("rb") as fh:
                        fh.seek(offset)
                        data = fh.read()
                    complete = data.rfind(b"\n") + 1
                    for line in data[:complete].decode(errors="replace").splitlines():
                        out(f"{path.stem:>12} | {line}")
                    offset += complete
                positions[path] = (st.st_ino, offset)
            time.sleep(0.25)
    except KeyboardInterrupt:
        return 0
