"""Validation rules (pure, table-driven): every field of docs/rest-api.md, messages naming the JSON path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.control import subscription_rules as rules
from services.control import validation as v
from services.control.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.control.conftest import FOLLOWER, LEADER, subscription
from tests.control.edits import Edit, drop, ladder, many, put
from tradingtools.common.v1 import common_pb2 as cpb
from tradingtools.control.v1 import subscription_pb2 as spb

BAD_SUBSCRIPTIONS: list[tuple[Edit, str]] = [
    (put("follower_user_id", ""), "followerUserId: required"),
    (put("follower_user_id", "u 1"), "followerUserId: must be printable with no spaces"),
    (put("follower_wallet_id", "  "), "followerWalletId: required"),
    (put("follower_wallet_id", "w" * 129), "followerWalletId: must be at most 128 characters"),
    (put("follower_proxy", "0x123"), 'followerProxy: must be 0x + 40 hex characters, got "0x123"'),
    (put("follower_proxy", "6af75d4e4aaf700450efbac3708cce1665810ff1"), "followerProxy: must be 0x + 40 hex"),
    (put("leader_proxy", ""), "leaderProxy: required"),
    (put("leader_proxy", "0x" + "g" * 40), "leaderProxy: must be 0x + 40 hex"),
    (put("leader_proxy", FOLLOWER.upper().replace("0X", "0x")), "leaderProxy: must differ from followerProxy"),
    (put("mode", 0), "mode: required: one of EXECUTION_MODE_LIVE, EXECUTION_MODE_PAPER"),
    (put("mode", 99), "mode: unknown value 99"),
    (put("label", "x" * 201), "label: must be at most 200 characters"),
    (put("label", "bad\x00label"), "label: must not contain control characters"),
    (put("sizing.mode", 0), "sizing.mode: required"),
    (put("sizing.ratio", "abc"), 'sizing.ratio: must be a decimal > 0, got "abc"'),
    (put("sizing.ratio", "0"), 'sizing.ratio: must be a decimal > 0, got "0"'),
    (put("sizing.ratio", "-0.5"), 'sizing.ratio: must be a decimal > 0, got "-0.5"'),
    (put("sizing.ratio", "NaN"), 'sizing.ratio: must be a decimal > 0, got "NaN"'),
    (put("sizing.ratio", "Infinity"), "sizing.ratio: must be a decimal > 0"),
    (put("sizing.ratio", "1e999"), "sizing.ratio: must be a decimal > 0"),
    (drop("sizing.ratio"), "sizing.ratio: required when sizing.mode is SIZING_MODE_PROPORTIONAL"),
    (put("sizing.mode", spb.SIZING_MODE_FIXED_USD),
     "sizing.fixedUsd: required when sizing.mode is SIZING_MODE_FIXED_USD"),
    (many(put("sizing.mode", spb.SIZING_MODE_FIXED_USD), put("sizing.fixed_usd", "0")),
     'sizing.fixedUsd: must be a decimal > 0, got "0"'),
    (put("sizing.fixed_usd", "-1"), 'sizing.fixedUsd: must be a decimal >= 0, got "-1"'),
    (many(put("sizing.mode", spb.SIZING_MODE_PERCENT_OF_BALANCE), put("sizing.percent_of_balance", "150")),
     'sizing.percentOfBalance: must be a decimal in (0, 100], got "150"'),
    (many(put("sizing.mode", spb.SIZING_MODE_PERCENT_OF_BALANCE), put("sizing.percent_of_balance", "0")),
     "sizing.percentOfBalance: must be a decimal in (0, 100]"),
    (put("sizing.percent_of_balance", "101"), "sizing.percentOfBalance: must be a decimal in [0, 100]"),
    (put("sizing.min_order_usd", "-1"), 'sizing.minOrderUsd: must be a decimal >= 0, got "-1"'),
    (put("sizing.max_order_usd", "0"), 'sizing.maxOrderUsd: must be a decimal > 0, got "0"'),
    (many(put("sizing.min_order_usd", "10"), put("sizing.max_order_usd", "5")),
     "sizing.maxOrderUsd: must be >= sizing.minOrderUsd (10)"),
    (put("filters.min_price", "1"), 'filters.minPrice: must be a decimal in (0, 1), got "1"'),
    (put("filters.max_price", "0"), 'filters.maxPrice: must be a decimal in (0, 1), got "0"'),
    (put("filters.max_price", "x"), "filters.maxPrice: must be a decimal in (0, 1)"),
    (many(put("filters.min_price", "0.6"), put("filters.max_price", "0.5")),
     "filters.maxPrice: must be >= filters.minPrice (0.6)"),
    (put("filters.min_leader_trade_usd", "-3"), "filters.minLeaderTradeUsd: must be a decimal >= 0"),
    (put("filters.market_denylist", [""]), "filters.marketDenylist[0]: required"),
    (put("filters.market_allowlist", ["ok", "has space"]), "filters.marketAllowlist[1]: must be printable"),
    (many(put("filters.market_allowlist", ["BTC-UPDOWN-5M"])),
     'filters.marketDenylist[0]: "btc-updown-5m" is also in filters.marketAllowlist'),
    (put("filters.market_denylist", ["m"] * 1001), "filters.marketDenylist: at most 1000 entries"),
    (put("filters.max_slippage_bps", 10_001), "filters.maxSlippageBps: must be an integer in [0, 10000]"),
    (put("filters.max_slippage_bps", -1), "filters.maxSlippageBps: must be an integer in [0, 10000]"),
    (put("risk.max_market_exposure_usd", "-5"), "risk.maxMarketExposureUsd: must be a decimal >= 0"),
    (put("risk.max_total_exposure_usd", "lots"), "risk.maxTotalExposureUsd: must be a decimal >= 0"),
    (put("risk.daily_loss_limit_usd", "-0.01"), "risk.dailyLossLimitUsd: must be a decimal >= 0"),
    (put("risk.max_open_positions", -1), "risk.maxOpenPositions: must be an integer in [0, 100000]"),
    (put("exits.take_profit_pct", "-1"), "exits.takeProfitPct: must be a decimal >= 0"),
    (put("exits.stop_loss_pct", "100"), 'exits.stopLossPct: must be a decimal in [0, 100), got "100"'),
    (put("exits.trailing_stop_pct", "120"), "exits.trailingStopPct: must be a decimal in [0, 100)"),
    (ladder(("20", "0.5"), ("10", "1")), "exits.ladder[1].gainPct: must be greater than the previous step's"),
    (ladder(("0", "0.5")), 'exits.ladder[0].gainPct: must be a decimal > 0, got "0"'),
    (ladder(("20", "1.5")), 'exits.ladder[0].sellFraction: must be a decimal in (0, 1], got "1.5"'),
    (ladder(("20", "0")), "exits.ladder[0].sellFraction: must be a decimal in (0, 1]"),
    (ladder(*[(str(i + 1), "0.1") for i in range(21)]), "exits.ladder: at most 20 steps"),
    (put("perf.loss_stop_usd", "-400"), "perf.lossStopUsd: must be a decimal >= 0"),
    (put("perf.profit_scale_at_usd", "?"), "perf.profitScaleAtUsd: must be a decimal >= 0"),
    (put("perf.profit_scale_multiplier", "0"), 'perf.profitScaleMultiplier: must be a decimal in (0, 10], got "0"'),
    (put("perf.profit_scale_multiplier", "11"), "perf.profitScaleMultiplier: must be a decimal in (0, 10]"),
]

# Values the router could not route (one such follower failed the trade for every follower of the leader).
UNROUTABLE_SUBSCRIPTIONS: list[tuple[Edit, str]] = [
    (put("follower_wallet_id", "w|1"), 'followerWalletId: must contain only letters, digits, "_", ".", ":" and "-"'),
    (put("follower_wallet_id", "w,1"), 'followerWalletId: must contain only letters, digits, "_", ".", ":" and "-"'),
    (put("follower_wallet_id", "w/1"), "followerWalletId: must contain only letters, digits"),
    (put("follower_wallet_id", "wallet\u00e9"), "followerWalletId: must contain only letters, digits"),
    (many(put("sizing.mode", spb.SIZING_MODE_FIXED_USD), put("sizing.fixed_usd", "1e27")),
     'sizing.fixedUsd: must be at most 1000000000, got "1e27"'),
    (put("sizing.fixed_usd", "1000000000.01"), "sizing.fixedUsd: must be at most 1000000000"),
    (put("sizing.min_order_usd", "1e12"), 'sizing.minOrderUsd: must be at most 1000000000, got "1e12"'),
    (put("sizing.max_order_usd", "1e27"), "sizing.maxOrderUsd: must be at most 1000000000"),
    (put("filters.min_leader_trade_usd", "1e27"), "filters.minLeaderTradeUsd: must be at most 1000000000"),
    (put("risk.max_market_exposure_usd", "1e27"), "risk.maxMarketExposureUsd: must be at most 1000000000"),
    (put("risk.max_total_exposure_usd", "1e27"), "risk.maxTotalExposureUsd: must be at most 1000000000"),
    (put("risk.daily_loss_limit_usd", "1e27"), "risk.dailyLossLimitUsd: must be at most 1000000000"),
    (put("perf.loss_stop_usd", "1e27"), "perf.lossStopUsd: must be at most 1000000000"),
    (put("perf.profit_scale_at_usd", "1e27"), "perf.profitScaleAtUsd: must be at most 1000000000"),
]


def _assert_rejected_naming_the_field(edit: Edit, message: str) -> None:
    raw = subscription()
    edit(raw)
    with pytest.raises(InvalidArgument) as err:
        rules.new_subscription(raw)
    assert err.value.message.startswith(message), err.value.message
    assert err.value.message.startswith(err.value.field + ": ")


@pytest.mark.parametrize(("edit", "message"), UNROUTABLE_SUBSCRIPTIONS)
def test_unroutable_subscription_is_rejected_naming_the_field(edit: Edit, message: str) -> None:
    _assert_rejected_naming_the_field(edit, message)


@pytest.mark.parametrize("edit", [
    put("follower_wallet_id", "w_456"), put("follower_user_id", "u_123"),
    put("follower_wallet_id", "Wallet-1.a:B_9"), put("follower_user_id", "user:42-x.y_Z"),
    many(put("sizing.mode", spb.SIZING_MODE_FIXED_USD), put("sizing.fixed_usd", "1000000000")),
    put("sizing.max_order_usd", "1000000000"),
    many(put("sizing.min_order_usd", "1e9"), drop("sizing.max_order_usd")),
    put("risk.max_total_exposure_usd", "1000000000.00"), put("perf.loss_stop_usd", "999999999.99"),
])
def test_usd_amounts_up_to_the_cap_and_plain_follower_ids_are_accepted(edit: Edit) -> None:
    raw = subscription()
    edit(raw)
    rules.new_subscription(raw)


def test_a_patch_cannot_raise_a_usd_amount_above_the_cap() -> None:
    with pytest.raises(InvalidArgument, match=r"^risk\.dailyLossLimitUsd: must be at most 1000000000"):
        rules.merge_patch(_current(), spb.Subscription(risk=spb.Risk(daily_loss_limit_usd="1e27")))


@pytest.mark.parametrize(("edit", "message"), BAD_SUBSCRIPTIONS)
def test_bad_subscription_is_rejected_naming_the_field(edit: Edit, message: str) -> None:
    _assert_rejected_naming_the_field(edit, message)


def test_new_subscription_normalizes_and_applies_defaults() -> None:
    raw = subscription(follower_proxy=FOLLOWER.upper().replace("0X", "0x"),
                       leader_proxy=LEADER.upper().replace("0X", "0x"))
    raw.sizing.ratio = "0.050"
    raw.filters.ClearField("market_denylist")
    raw.filters.market_denylist.extend([" BTC-Updown-5m ", "btc-updown-5m", "0xABC"])
    raw.exits.ladder.add(gain_pct="20.0", sell_fraction="0.50")
    raw.id, raw.paused_reason = "sub_fake", "x"  # output only, ignored (a state is refused: test_create_state)
    raw.stats.copied = 9
    raw.perf.applied_multiplier = "7"
    sub = rules.new_subscription(raw)
    assert (sub.follower_proxy, sub.leader_proxy) == (FOLLOWER, LEADER)
    assert sub.sizing.ratio == "0.05" and sub.sizing.min_order_usd == "1" and sub.sizing.max_order_usd == "250"
    assert not sub.sizing.HasField("fixed_usd")
    assert list(sub.filters.market_denylist) == ["btc-updown-5m", "0xabc"]
    assert sub.filters.copy_sells is True and sub.filters.max_slippage_bps == 200
    assert sub.filters.min_leader_trade_usd == "0"
    assert (sub.risk.max_market_exposure_usd, sub.risk.max_open_positions) == ("0", 0)
    step = sub.exits.ladder[0]
    assert (sub.exits.take_profit_pct, step.gain_pct, step.sell_fraction) == ("0", "20", "0.5")
    assert (sub.perf.profit_scale_multiplier, sub.perf.applied_multiplier) == ("1", "1")
    assert (sub.id, sub.state, sub.paused_reason, sub.stats.copied) == ("", 0, "", 0)


def test_unused_sizing_fields_may_be_zero() -> None:
    raw = subscription(sizing=spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="25", ratio="0",
                                         percent_of_balance="0"))
    sub = rules.new_subscription(raw)
    assert (sub.sizing.fixed_usd, sub.sizing.ratio, sub.sizing.percent_of_balance) == ("25", "0", "0")


def test_live_needs_the_insiders_api() -> None:
    with pytest.raises(FailedPrecondition, match=r"^mode: EXECUTION_MODE_LIVE needs the Insiders API"):
        rules.check_live_allowed(cpb.EXECUTION_MODE_LIVE, live_enabled=False)
    rules.check_live_allowed(cpb.EXECUTION_MODE_LIVE, live_enabled=True)
    rules.check_live_allowed(cpb.EXECUTION_MODE_PAPER, live_enabled=False)


def _current() -> spb.Subscription:
    sub = rules.new_subscription(subscription(filters=spb.Filters(market_allowlist=["a", "b"], min_price="0.1")))
    sub.id, sub.state = "sub_1", spb.SUBSCRIPTION_STATE_ACTIVE
    sub.perf.applied_multiplier = "1.5"
    return sub


BAD_PATCHES: list[tuple[Edit, tuple[str, ...], str]] = [
    (put("leader_proxy", "0x" + "1" * 40), (), "leaderProxy: cannot change"),
    (put("follower_proxy", "0x" + "1" * 40), (), "followerProxy: cannot change"),
    (put("follower_user_id", "u_other"), (), "followerUserId: cannot change"),
    (put("follower_wallet_id", "w_other"), (), "followerWalletId: cannot change"),
    (put("id", "sub_2"), (), "id: does not match"),
    (put("state", spb.SUBSCRIPTION_STATE_PAUSED), (), "state: output only"),
    (put("sizing.ratio", "zero"), (), 'sizing.ratio: must be a decimal > 0, got "zero"'),
    (put("sizing.mode", spb.SIZING_MODE_FIXED_USD), (), "sizing.fixedUsd: required when"),
    (lambda m: None, ("filters.bogus",), 'updateMask: unknown field "filters.bogus"'),
    (lambda m: None, ("nothing",), 'updateMask: unknown field "nothing"'),
    (lambda m: None, ("filters.minPrice.x",), "updateMask: unknown field"),
    (lambda m: None, ("stats",), 'updateMask: "stats" is output only'),
    (lambda m: None, ("perf.appliedMultiplier",), 'updateMask: "perf.appliedMultiplier" is output only'),
    (lambda m: None, ("leaderProxy",), "leaderProxy: cannot change"),
    (lambda m: None, ("mode",), "mode: required"),
    (lambda m: None, ("sizing",), "sizing.mode: required"),
]


@pytest.mark.parametrize(("edit", "mask", "message"), BAD_PATCHES)
def test_bad_patch_is_rejected_naming_the_field(edit: Edit, mask: tuple[str, ...], message: str) -> None:
    patch = spb.Subscription()
    edit(patch)
    with pytest.raises(InvalidArgument) as err:
        rules.merge_patch(_current(), patch, mask)
    assert err.value.message.startswith(message), err.value.message


def test_patch_changes_only_present_fields() -> None:
    current = _current()
    patch = spb.Subscription(sizing=spb.Sizing(ratio="0.10"), label="new",
                             leader_proxy=current.leader_proxy.upper().replace("0X", "0x"))
    patch.perf.applied_multiplier = "9"  # output only: ignored
    merged = rules.merge_patch(current, patch)
    assert merged.sizing.ratio == "0.1" and merged.label == "new"
    assert merged.sizing.max_order_usd == "250" and list(merged.filters.market_allowlist) == ["a", "b"]
    assert merged.perf.applied_multiplier == "1.5"
    assert not rules.config_equal(merged, current)
    assert rules.config_equal(rules.merge_patch(current, spb.Subscription()), current)


@pytest.mark.parametrize("path", ["filters.marketAllowlist", "filters.market_allowlist"])
def test_update_mask_clears_a_list(path: str) -> None:
    merged = rules.merge_patch(_current(), spb.Subscription(), [path])
    assert list(merged.filters.market_allowlist) == []


def test_update_mask_sets_or_resets_to_default() -> None:
    current = _current()
    merged = rules.merge_patch(current, spb.Subscription(), ["filters.minPrice", "filters.copySells", "label"])
    assert not merged.filters.HasField("min_price")
    assert merged.filters.copy_sells is True and merged.label == ""
    replaced = rules.merge_patch(current, spb.Subscription(sizing=spb.Sizing(
        mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="10")), ["sizing"])
    assert replaced.sizing == spb.Sizing(mode=spb.SIZING_MODE_FIXED_USD, fixed_usd="10", min_order_usd="1")
    assert replaced.perf.applied_multiplier == "1.5"
    listed = rules.merge_patch(current, spb.Subscription(filters=spb.Filters(market_allowlist=["C"])),
                               ["filters.market_allowlist"])
    assert list(listed.filters.market_allowlist) == ["c"]


@pytest.mark.parametrize(("within", "text"), [
    (v.POSITIVE, "> 0"), (v.NON_NEGATIVE, ">= 0"), (v.PRICE, "in (0, 1)"), (v.PERCENT, "in (0, 100]"),
    (v.FRACTION, "in (0, 1]"), (v.PERCENT_OR_ZERO, "in [0, 100]"),
])
def test_range_descriptions(within: v.Range, text: str) -> None:
    assert within.describe() == text


@pytest.mark.parametrize(("raw", "canonical"), [
    ("25", "25"), ("0.05", "0.05"), ("2.5e1", "25"), (".5", "0.5"), ("5.", "5"), ("+1", "1"), ("1E-2", "0.01"),
    ("0.50", "0.5"),
    ("1_000", None), ("１２", None), ("١٢", None), (" 25", None), ("25 ", None), ("0x1", None), ("1e", None),
    ("", None), (".", None), ("NaN", None), ("Infinity", None), ("-1", None),
])
def test_a_decimal_is_ascii_digits_with_an_optional_sign_point_and_exponent(raw: str, canonical: str | None) -> None:
    if canonical is not None:
        assert v.canonical("sizing.fixedUsd", raw, v.NON_NEGATIVE) == canonical
        assert v.decimal("sizing.fixedUsd", raw, v.NON_NEGATIVE) == Decimal(canonical)
        return
    for check in (v.canonical, v.decimal):
        with pytest.raises(InvalidArgument) as err:
            check("sizing.fixedUsd", raw, v.NON_NEGATIVE)
        assert err.value.message.startswith("sizing.fixedUsd: must be a decimal >= 0")


@pytest.mark.parametrize(("raw", "message"), [
    ("s" * 200, "subscription " + "s" * 40 + "… not found"),
    ("sub nope", "subscription sub nope not found"),
    ("sub\x00", "subscription sub? not found"),
])
def test_path_id_that_cannot_be_an_id_is_not_found(raw: str, message: str) -> None:
    with pytest.raises(NotFound) as err:
        v.path_id("subscription", raw)
    assert err.value.message == message


def test_path_id_is_required_and_kept() -> None:
    assert v.path_id("trigger", " trg_1 ") == "trg_1"
    with pytest.raises(InvalidArgument, match=r"^id: required"):
        v.path_id("trigger", " ")


@pytest.mark.parametrize(("value", "expected"), [(0, 100), (1, 1), (500, 500)])
def test_page_size_accepts(value: int, expected: int) -> None:
    assert v.page_size(value) == expected


@pytest.mark.parametrize("value", [-1, 501, 10_000])
def test_page_size_rejects(value: int) -> None:
    with pytest.raises(InvalidArgument, match=r"^pageSize: must be between 1 and 500"):
        v.page_size(value)


@pytest.mark.parametrize(("header", "body", "expected"), [
    (None, None, None), ("k1", None, "k1"), (None, "k2", "k2"), ("k3", "k3", "k3"), (" ", "", None),
])
def test_idempotency_key_sources(header: str | None, body: str | None, expected: str | None) -> None:
    assert v.idempotency_key(header, body) == expected


@pytest.mark.parametrize(("header", "body", "message"), [
    ("a", "b", "requestId: differs from the Idempotency-Key header"),
    ("k" * 256, None, "requestId: idempotency key must be 1..255 printable characters"),
])
def test_idempotency_key_rejects(header: str, body: str | None, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"^{message}"):
        v.idempotency_key(header, body)


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=40, max_size=40))
def test_addresses_are_stored_lower_case(hex40: str) -> None:
    assert v.address("x", "0x" + hex40) == "0x" + hex40.lower()


@given(st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("0.999999"), places=6))
def test_canonical_price_keeps_the_value(price: Decimal) -> None:
    text = v.canonical("p", str(price), v.PRICE)
    assert Decimal(text) == price and "E" not in text


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4,
                   min_value=Decimal("-1000"), max_value=Decimal("1000")))
def test_ratio_accepted_iff_positive(ratio: Decimal) -> None:
    raw = subscription()
    raw.sizing.ratio = str(ratio)
    if ratio > 0:
        assert Decimal(rules.new_subscription(raw).sizing.ratio) == ratio
    else:
        with pytest.raises(InvalidArgument, match=r"^sizing\.ratio: must be a decimal > 0"):
            rules.new_subscription(raw)
