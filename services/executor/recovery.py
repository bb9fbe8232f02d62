"""What a restart (or a replayed intent) does with each stored order not final yet (pure: rows and time in)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Container
from typing import Any

from services.executor.adapters.order_store import Change, row_life, ticket_from_row
from services.executor.domain import order_lifecycle as lc
from services.executor.domain.answer_policy import RESTART_REASON
from services.executor.domain.ticket import Ticket
from services.executor.order_events import build_event
from services.executor.position_queue import sized_later

log = logging.getLogger(__name__)


def plan_resume(rows: list[dict[str, Any]], venues: Container[str], running: Callable[[str], bool],
                now_ns: int) -> tuple[list[tuple[Ticket, lc.OrderLife]], list[Change]]:
    """The orders to run again, in the rows' order (their arrival), and the state changes to record first.

    An order whose POST may or may not have left (SUBMITTING) is settled by status query, never POSTed
    blindly: it becomes UNKNOWN, and uncertain for good (``post_uncertain``: a not-found never makes it
    "not taken"); an UNKNOWN one keeps what its row says. A SELL sized by its fraction and not sent yet (NEW)
    is sized again in its turn. Orders already running here, final ones, and those of a venue not configured
    are left alone.
    """
    runs: list[tuple[Ticket, lc.OrderLife]] = []
    changes: list[Change] = []
    for row in rows:
        life = row_life(row)
        if life.terminal or running(life.client_order_id):
            continue
        if row["venue"] not in venues:
            log.error("unfinished order for a venue that is not configured: left as it is",
                      extra={"client_order_id": life.client_order_id, "venue": row["venue"],
                             "state": life.state.value})
            continue
        ticket = ticket_from_row(row)
        if not sized_later(ticket, life) and life.state in (lc.State.NEW, lc.State.SUBMITTING):
            event = lc.OrderTimedOut(RESTART_REASON, surely_sent=row["post_sent_ns"] is not None)
            life = lc.apply(life, event)
            changes.append(Change(ticket, life, build_event(ticket, life, event, now_ns=now_ns)))
        runs.append((ticket, life))
    return runs, changes
