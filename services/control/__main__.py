"""``python -m services.control``: serve the control surface until SIGTERM / SIGINT."""

from __future__ import annotations

import gc
import logging
import sys

from common.config import ConfigError
from common.grpcserver import run, wait_for_termination
from common.logs import setup_logging
from common.telemetry import setup_telemetry
from services.control.app import start
from services.control.config import Settings

log = logging.getLogger("services.control")


async def main(settings: Settings) -> None:
    """Start, then serve until a termination signal; shut down gracefully."""
    running = await start(settings)
    # Start-up objects (modules, descriptors, pools) live as long as the process: keep them out of
    # the cyclic collector's full passes, which otherwise pause every call in flight.
    gc.collect()
    gc.freeze()
    await wait_for_termination(running.server, settings.grace_s)


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    setup_logging("control")
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    setup_telemetry("control", settings.metrics)
    log.info("starting", extra={"settings": repr(settings)})
    run(lambda: main(settings))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
