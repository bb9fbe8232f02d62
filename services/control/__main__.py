"""``python -m services.control``: serve the control surface until SIGTERM / SIGINT."""

from __future__ import annotations

import gc
import sys

from common.grpcserver import service_cli, wait_for_termination
from services.control.app import start
from services.control.config import Settings


async def main(settings: Settings) -> None:
    """Start, then serve until a termination signal; shut down gracefully."""
    running = await start(settings)
    # Start-up objects (modules, descriptors, pools) live as long as the process: keep them out of
    # the cyclic collector's full passes, which otherwise pause every call in flight.
    gc.collect()
    gc.freeze()
    await wait_for_termination(running.server, settings.tuning.grace_s)


def cli() -> int:
    """Entry point; exit code 2 on invalid configuration."""
    return service_cli("control", Settings.from_env, main)


if __name__ == "__main__":
    sys.exit(cli())
