"""An order's state changes written through the journal, retried until they are (the runner never moves on from a
change that is not durable)."""

from __future__ import annotations

import asyncio
import logging

from common.cancel import reraise_if_cancelling
from services.executor.adapters.order_store import Change
from services.executor.journal import Journal

log = logging.getLogger(__name__)


async def persist(journal: Journal, changes: list[Change], *, urgent: bool = False) -> None:
    """Write ``changes`` (``urgent``: see :meth:`Journal.write`), retrying with a growing pause until written."""
    delay = 0.1
    while True:
        try:
            await journal.write(changes, urgent=urgent)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            reraise_if_cancelling()
            log.exception("order state not persisted; retrying",
                          extra={"client_order_id": changes[0].life.client_order_id if changes else ""})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
