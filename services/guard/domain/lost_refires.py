"""Which client order id a fire sends when an earlier fire of the same row, whose record failed, sent a SELL that has
since ended LOST.

A fire whose record failed leaves its row ARMED with the same fire number: the next fire computes the same client
order id, so a SELL the executor has is not sent twice. But once that SELL has ended, the executor answers the
new fire with it (a duplicate, its last event): taken for the new fire's own, a LOST one ended the trigger FAILED
and left the position with no exit, though it may have sold nothing. A LOST SELL may still have sold: the executor
and guard count its unfilled size as being sold until the venue's count shows it (``common.lost_sells``). So a fire
whose id names a LOST SELL with no fill known:

- sends nothing while that SELL is counted so (the trigger stays ARMED, decided again later);
- then sends a SELL of its own, with the next fire number's id, sized on what is held (the count has the LOST
  SELL's sale): when the trigger sells the whole position, or the count shows nothing sold since that SELL ended;
- else (a part only, and the count went down since: the LOST SELL may have sold it) takes that SELL for its own, as
  before, rather than sell its share twice.

Any other ended SELL (filled, in part or whole, or ended with nothing sold for a known reason) is taken as before.
The LOST SELLs of a fire's ids are read with its position, under its lock (``adapters.trigger_sql.FACTS``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from services.guard.domain.trigger_rows import TriggerRow, client_order_id

FIRE_NUMBERS = 3  # ids read per fire: the row's next fire number and the two after it


@dataclass(frozen=True, slots=True)
class LostSell:
    """A SELL sent under a row's client order id that ended LOST with no fill known: ``selling``, still counted as
    being sold (as a fire's reads count them, common.lost_sells); ``sold_since``, the venue's count corrected down
    since it ended."""

    selling: bool
    sold_since: Decimal


def candidate_ids(trigger_id: str) -> list[str]:
    """The client order ids a fire of ``trigger_id`` may send (an ARMED row has never recorded a fire)."""
    return [client_order_id(trigger_id, n) for n in range(1, FIRE_NUMBERS + 1)]


def fire_number(row: TriggerRow, lost: Mapping[str, LostSell]) -> int | None:
    """The fire number whose client order id ``row``'s fire sends, None when it must wait (see the module)."""
    whole = row.size <= 0 and row.sell_fraction >= 1
    n = row.fire_count + 1
    while True:
        sell = lost.get(client_order_id(row.id, n))
        if sell is None:
            return n
        if sell.selling:
            return None
        if sell.sold_since > 0 and not whole:
            return n
        n += 1
