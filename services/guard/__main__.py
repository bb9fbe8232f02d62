"""``python -m services.guard``: run the TP/SL engine and performance rules until SIGTERM / SIGINT."""

from __future__ import annotations

import logging
import sys

from common.config import ConfigError
from common.grpcserver import run, wait_for_termination
from common.logs import setup_logging
from common.telemetry import setup_telemetry
from services.guard.app import start
from services.guard.config import Settings

log = logging.getLogger("services.guard")


async def main(settings: Settings) -> None:
    """Start, serve until a termination signal, stop gracefully."""
    running = await start(settings)
    try:
        await wait_for_termination(running.server, settings.grace_s)
    finally:
        await running.stop()


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    setup_logging("guard")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    setup_telemetry("guard", settings.metrics)
    log.info("starting", extra={"settings": repr(settings)})
    run(lambda: main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
