"""``python -m services.executor``: place routed orders until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from common.config import ConfigError, StorageSettings
from common.grpcserver import run, wait_for_termination
from common.heap import settle_start_up_heap
from common.logs import setup_logging
from common.telemetry import setup_telemetry
from services.executor.app import start
from services.executor.config import Settings

log = logging.getLogger("services.executor")


async def main(settings: Settings, storage: StorageSettings) -> None:
    """Start, serve until a termination signal, shut down gracefully."""
    running = await start(settings, storage.database_url.value, storage.redis_url.value)
    fatal = [t for t in running.tasks if t.get_name() in _FATAL]
    for task in fatal:
        task.add_done_callback(_fatal_unless_cancelled)
    settle_start_up_heap()  # a fan-out allocates heavily for a few hundred ms
    try:
        await wait_for_termination(running.server, settings.tuning.grace_s)
    finally:
        for task in fatal:  # stopping ends them on purpose
            task.remove_done_callback(_fatal_unless_cancelled)
        await running.stop(settings.tuning.grace_s)


# Tasks whose end ends the process: the journal is the only writer of order state (without it orders go out
# unrecorded); the lease watch ends when another executor took over (this one may write nothing more). The
# supervisor starts a new process, which waits for the lease and resumes every unfinished order from PostgreSQL.
_FATAL = {"journal": "journal stopped; exiting", "lease": "executor lease lost to another executor; exiting"}


def _fatal_unless_cancelled(task: asyncio.Task[object]) -> None:
    """End the process at once when a task of :data:`_FATAL` ended other than by being cancelled."""
    if task.cancelled():
        return
    log.critical(_FATAL[task.get_name()], extra={"error": repr(task.exception())[:300]})
    logging.shutdown()
    os._exit(70)


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    setup_logging("executor")
    try:
        settings = Settings.from_env()
        storage = StorageSettings.from_env()
    except ConfigError as exc:
        log.error("invalid configuration: %s", exc)
        return 2
    setup_telemetry("executor", settings.metrics)
    log.info("starting", extra={"settings": repr(settings)})
    run(lambda: main(settings, storage))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
