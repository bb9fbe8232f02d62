"""``python -m services.guard``: run the TP/SL engine and performance rules until SIGTERM / SIGINT."""

from __future__ import annotations

import sys

from common.grpcserver import service_cli, wait_for_termination
from common.heap import collect_less_often, settle_start_up_heap
from services.guard.app import start
from services.guard.config import Settings


async def main(settings: Settings) -> None:
    """Start, serve until a termination signal, stop gracefully."""
    collect_less_often()  # loading 100,500 armed triggers took five full collections of 50-105 ms that freed nothing
    running = await start(settings)
    settle_start_up_heap()  # the loaded triggers leave the collector's scans
    try:
        # the bands first: the graceful stop may wait the grace period for open trigger-event streams
        await wait_for_termination(running.server, settings.tuning.grace_s, first=running.stand_down_bands)
    finally:
        await running.stop()


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    return service_cli("guard", Settings.from_env, main)


if __name__ == "__main__":
    sys.exit(cli())
