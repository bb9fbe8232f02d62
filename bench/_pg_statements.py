"""The executor's statements, counted from PostgreSQL's statement log (``bench executor --single-rate``)."""

from __future__ import annotations

from pathlib import Path

import psycopg

APP_NAME = "tt-executor"  # every connection of the executor is named so ("tt-executor", "tt-executor-intents")


def log_statements(db_url: str) -> None:
    """Make PostgreSQL log every statement with its application name (to count the executor's)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("ALTER SYSTEM SET log_line_prefix = '%a|'")
        conn.execute("SELECT pg_reload_conf()")


def count_statements(log_file: Path, start: int) -> tuple[int, int, dict[str, int]]:
    """(statements, transactions, statements by first words) the executor sent, from the PostgreSQL log
    after byte ``start``."""
    statements = begins = 0
    kinds: dict[str, int] = {}
    with log_file.open("rb") as f:
        f.seek(start)
        lines = f.read().split(b"\n")
    for i, line in enumerate(lines):
        if not line.startswith(APP_NAME.encode()) or b"|" not in line[:40]:
            continue
        for marker in (b"LOG:  statement: ", b"LOG:  execute "):
            at = line.find(marker)
            if at < 0:
                continue
            text = line[at + len(marker):].decode(errors="replace")
            if marker.startswith(b"LOG:  execute"):
                text = text.split(":", 1)[-1]
            if not text.strip() and i + 1 < len(lines):  # the SQL starts on the next line
                text = lines[i + 1].decode(errors="replace")
            kind = " ".join(text.split()[:3])[:40]
            kinds[kind] = kinds.get(kind, 0) + 1
            statements += 1
            if text.strip() == "BEGIN":
                begins += 1
    return statements, begins, dict(sorted(kinds.items(), key=lambda kv: -kv[1]))
