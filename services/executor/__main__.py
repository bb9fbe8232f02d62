"""``python -m services.executor``: place routed orders until SIGTERM / SIGINT."""

from __future__ import annotations

import gc
import logging
import sys

from common.config import ConfigError, StorageSettings
from common.grpcserver import run, wait_for_termination
from common.logs import setup_logging
from common.telemetry import setup_telemetry
from services.executor.app import start
from services.executor.config import Settings

log = logging.getLogger("services.executor")


async def main(settings: Settings, storage: StorageSettings) -> None:
    """Start, serve until a termination signal, shut down gracefully."""
    running = await start(settings, storage.database_url.value, storage.redis_url.value)
    # A fan-out allocates heavily for a few hundred ms: keep the start-up heap out of the collector's
    # scans and collect young objects less often, so no full collection lands inside a burst.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        await wait_for_termination(running.server, settings.grace_s)
    finally:
        await running.stop(settings.grace_s)


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    setup_logging("executor")
    try:
        settings = Settings.from_env()
        storage = StorageSettings.from_env()
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    setup_telemetry("executor")
    log.info("starting", extra={"settings": repr(settings)})
    run(lambda: main(settings, storage))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
