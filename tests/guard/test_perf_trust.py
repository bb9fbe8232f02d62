"""Perf rules (pure): PnL of the subscription's mode's venue only, marks it can trust, the profit-scale against the
multiplier control applies now, and the basis a decision is made under."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.guard.domain import perf_rules as pr

D = Decimal
SCALE_RULES = pr.PerfRules(D(0), D(100), D(2))
BOTH_RULES = pr.PerfRules(D(400), D(100), D(2))


def _fill(asset: str, side: str, size: str, price: str, venue: str) -> pr.FillRow:
    return pr.FillRow(asset, side, D(size), D(price), D(size) * D(price), D(0), venue)


PAPER_WIN = [_fill("a", "BUY", "1000", "0.2", "PAPER"), _fill("a", "SELL", "1000", "0.8", "PAPER")]  # +600
LIVE_LOSS = [_fill("b", "BUY", "1000", "0.6", "INSIDERS"), _fill("b", "SELL", "1000", "0.1", "INSIDERS")]  # -500


@pytest.mark.parametrize(("fills", "mode", "realized"), [
    (PAPER_WIN + LIVE_LOSS, "LIVE", "-500"),  # paper profit does not offset the live loss
    (PAPER_WIN + LIVE_LOSS, "PAPER", "600"),
    (LIVE_LOSS + PAPER_WIN, "LIVE", "-500"),
    (PAPER_WIN, "LIVE", None),  # no live fill: nothing to evaluate
])
def test_the_rules_count_the_fills_of_the_modes_venue_only(fills: list[pr.FillRow], mode: str,
                                                           realized: str | None) -> None:
    ledgers = pr.fold_by_venue(fills)
    ledger = ledgers.get(pr.venue_of(mode))
    assert (ledger.realized if ledger else None) == (D(realized) if realized else None)


@pytest.mark.parametrize("cut", [0, 1, 2, 3, 4])
def test_folding_by_venue_in_two_reads_equals_at_once(cut: int) -> None:
    fills = PAPER_WIN[:1] + LIVE_LOSS[:1] + PAPER_WIN[1:] + LIVE_LOSS[1:]
    assert pr.fold_by_venue(fills[cut:], pr.fold_by_venue(fills[:cut])) == pr.fold_by_venue(fills)


def test_all_venues_together_is_what_the_stats_show() -> None:
    fills = [_fill("a", "BUY", "10", "0.5", "PAPER"), _fill("b", "BUY", "10", "0.4", "INSIDERS"),
             _fill("b", "SELL", "5", "0.6", "INSIDERS")]
    book = pr.all_venues(pr.fold_by_venue(fills))
    assert book == pr.Holdings(D(1), {"a": (D(10), D(5)), "b": (D(5), D(2))})
    assert pr.unrealized_usd(book, {"a": D("0.6"), "b": D("0.3")}) == D("0.5")


HELD = pr.Holdings(D(-150), {"a": (D(1000), D(200)), "b": (D(1000), D(500))})


@pytest.mark.parametrize(("marks", "fresh", "unrealized", "unmarked", "stale", "complete"), [
    ({"a": D("0.35"), "b": D("0.6")}, {"a", "b"}, "250", (), (), True),
    ({"a": D("0.35")}, {"a"}, "150", ("b",), (), False),  # b unmarked: at cost
    ({"a": D("0.35"), "b": D("0.6")}, {"a"}, "150", (), ("b",), False),  # b's book stale: its gain not counted
    ({"a": D("0.35"), "b": D("0.3")}, {"a"}, "-50", (), ("b",), False),  # a stale loss is counted
    ({"a": D("0.35"), "b": D("0.6")}, None, "250", (), (), True),  # no freshness given: every mark trusted
])
def test_untrusted_marks_never_add_a_gain(marks: dict[str, Decimal], fresh: set[str] | None, unrealized: str,
                                          unmarked: tuple[str, ...], stale: tuple[str, ...], complete: bool) -> None:
    out = pr.valued(HELD, marks, fresh)
    assert (out.unrealized, out.unmarked, out.stale, out.complete) == (D(unrealized), unmarked, stale, complete)


def _pnl(realized: str, unrealized: str = "0", *, complete: bool = True) -> pr.Pnl:
    return pr.Pnl(D(realized), D(unrealized), {"a": (D(1), D(1))} if not complete else {},
                  ("a",) if not complete else ())


@pytest.mark.parametrize(("result", "applied", "resumed_at", "action"), [
    (_pnl("150"), None, None, pr.Action.SCALE),
    (_pnl("150", complete=False), None, None, None),  # a scale waits for complete marks
    (_pnl("150"), D(2), None, None),  # already at x2
    (_pnl("150"), D(3), None, pr.Action.SCALE),  # the rule now says x2: scale to it
    (_pnl("150"), D(1), None, pr.Action.SCALE),  # control put it back to 1 (rule or mode changed): again
    (_pnl("50"), D(1), None, None),  # below the threshold
    (_pnl("-400", complete=False), None, None, pr.Action.PAUSE),  # a loss-stop fires on the PnL it trusts
    (_pnl("-350", "-50", complete=False), None, None, pr.Action.PAUSE),
    (_pnl("-399", complete=False), None, None, None),
    (_pnl("-500", complete=False), None, D(-400), None),  # resumed at -400 (provisional): floor -800
    (_pnl("-800", complete=False), None, D(-400), pr.Action.PAUSE),
])
def test_decisions_on_trusted_marks_and_the_applied_multiplier(result: pr.Pnl, applied: Decimal | None,
                                                               resumed_at: Decimal | None,
                                                               action: pr.Action | None) -> None:
    basis = pr.Basis("LIVE", BOTH_RULES)
    out = pr.decide("sub_1", BOTH_RULES, result, pauses_before=0, scaled_ids=frozenset(), scaled_to=applied,
                    resumed_at_pnl=resumed_at, basis=basis)
    assert (out.action if out else None) == action
    if out is not None:
        assert out.basis == basis
        assert ("marks incomplete: 1 unmarked, 0 stale" in out.reason) is (not result.complete)


def test_a_scale_after_a_reset_is_a_new_decision() -> None:
    first = pr.decide("sub_1", SCALE_RULES, _pnl("150"), pauses_before=0, scaled_ids=frozenset())
    assert first is not None
    again = pr.decide("sub_1", SCALE_RULES, _pnl("150"), pauses_before=0, scaled_ids=frozenset({first.decision_id}),
                      scaled_to=D(1))
    assert again is not None and again.decision_id != first.decision_id


@pytest.mark.parametrize("basis", [
    pr.Basis("LIVE", pr.PerfRules(D(400), D("100.5"), D("1.5"))),
    pr.Basis("PAPER", pr.PerfRules()),
])
def test_a_basis_is_kept_as_json(basis: pr.Basis) -> None:
    assert pr.Basis.from_json(basis.to_json()) == basis
    assert pr.DecisionRow("d", "s", "PAUSE", None, "", None, decided_under=basis.to_json()).basis == basis
    assert pr.DecisionRow("d", "s", "PAUSE", None, "", None).basis is None
