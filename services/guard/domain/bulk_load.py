"""Many triggers into an engine's structures at once (start-up: each price structure is sorted once; pure)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from services.guard.domain.source_book import SourceBook, book_for
from services.guard.domain.trigger_model import Kind, OcoKey, Source, TriggerSpec


def fill(specs: Iterable[TriggerSpec], by_id: dict[str, TriggerSpec], by_asset: dict[str, set[str]],
         oco: dict[OcoKey, set[str]], books: dict[str, dict[Source, SourceBook]]) -> None:
    """Index ``specs`` (none known yet) by id, asset, OCO group and in their books; trailing stops are armed at 0
    (not known: every price lifts them)."""
    tp: dict[tuple[str, Source], list[tuple[Decimal, str]]] = {}
    sl: dict[tuple[str, Source], list[tuple[Decimal, str]]] = {}
    trailing: list[TriggerSpec] = []
    for spec in specs:
        if spec.id in by_id:
            raise ValueError(f"duplicate trigger {spec.id}")
        by_id[spec.id] = spec
        ids = by_asset.get(spec.asset_id)
        if ids is None:
            ids = by_asset[spec.asset_id] = set()
        ids.add(spec.id)
        if spec.oco_group:
            oco.setdefault(spec.oco_key, set()).add(spec.id)
        if spec.kind is Kind.TAKE_PROFIT:
            tp.setdefault((spec.asset_id, spec.source), []).append((spec.trigger_price, spec.id))
        elif spec.kind is Kind.STOP_LOSS:
            sl.setdefault((spec.asset_id, spec.source), []).append((spec.trigger_price, spec.id))
        else:
            trailing.append(spec)
    for (asset_id, source), items in tp.items():
        book_for(books, asset_id, source).tp.update(items)
    for (asset_id, source), items in sl.items():
        book_for(books, asset_id, source).sl.update(items)
    for spec in trailing:
        book_for(books, spec.asset_id, spec.source).add(spec)
