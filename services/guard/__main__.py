"""``python -m services.guard``: run the TP/SL engine and performance rules until SIGTERM / SIGINT."""

from __future__ import annotations

import sys

from common.grpcserver import service_cli, wait_for_termination
from common.heap import settle_start_up_heap
from services.guard.app import start
from services.guard.config import Settings


async def main(settings: Settings) -> None:
    """Start, serve until a termination signal, stop gracefully."""
    running = await start(settings)
    settle_start_up_heap()  # the armed triggers loaded at start (100,000 of them: 100 ms a full collection)
    try:
        await wait_for_termination(running.server, settings.tuning.grace_s)
    finally:
        await running.stop()


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    return service_cli("guard", Settings.from_env, main)


if __name__ == "__main__":
    sys.exit(cli())
