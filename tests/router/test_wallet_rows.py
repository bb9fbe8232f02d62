"""The router's reading of LOAD's per-wallet rows and unclaimed SELLs in flight (pure)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.router.adapters.store import _read_wallets

D = Decimal
SPLIT = {"sub_A": ["100", "40"], "sub_B": ["50", "30"]}


@pytest.mark.parametrize(("rows", "unclaimed", "totals", "market_costs", "asset_sizes", "realized", "parts", "exiting",
                          "unrouted"), [
    ([], [], {}, {}, {}, {}, {}, {}, {}),
    # one position in the trade's market and asset
    ([["w_1", "10", "0xc", [["0xc", "10"]], [["111", "20"]], None]], [],
     {"w_1": (D(10), frozenset({"0xc"}))}, {("w_1", "0xc"): D(10)}, {("w_1", "111"): D(20)}, {}, {}, {}, {}),
    # both outcomes of one market held: the market's cost is their sum; only the trade's asset has a size
    ([["w_1", "45.5", "0xc,0xc,0xd", [["0xc", "40"], ["0xc", "5.5"]], [["111", "100"]], "-2.5"]], [],
     {"w_1": (D("45.5"), frozenset({"0xc", "0xd"}))}, {("w_1", "0xc"): D("45.5")}, {("w_1", "111"): D(100)},
     {"w_1": D("-2.5")}, {}, {}, {}),
    # nothing held any more, but PnL realized today
    ([["w_2", None, None, None, None, "-1"]], [], {}, {}, {}, {"w_2": D(-1)}, {}, {}, {}),
    # a SELL's asset whose position keeps a split: each subscription's shares when it adds up to the position
    ([["w_1", "70", "0xc", [["0xc", "70"]], [["111", "150", "70", SPLIT], ["222", "150"],
                                           ["333", "150", "70", {"sub_A": ["100", "40"]}]], None]], [],
     {"w_1": (D(70), frozenset({"0xc"}))}, {("w_1", "0xc"): D(70)},
     {("w_1", "111"): D(150), ("w_1", "222"): D(150), ("w_1", "333"): D(150)}, {},
     {("w_1", "111"): {"sub_A": D(100), "sub_B": D(50)}}, {}, {}),
    # SELLs' assets with exits or manual SELLs in flight (no subscription): what they may still sell
    ([["w_1", "10", "0xc", [["0xc", "10"]], [["111", "20"], ["222", "5"]], None]],
     [["w_1", "111", None, "12.5"], ["w_1", "222", None, "5"]],
     {"w_1": (D(10), frozenset({"0xc"}))}, {("w_1", "0xc"): D(10)}, {("w_1", "111"): D(20), ("w_1", "222"): D(5)},
     {}, {}, {("w_1", "111"): D("12.5"), ("w_1", "222"): D(5)}, {}),
    # copies in flight the router did not send (re-sized by the executor): by subscription, beside the exits
    ([["w_1", "10", "0xc", [["0xc", "10"]], [["111", "100"], ["222", "50"]], None]],
     [["w_1", "111", None, "10"], ["w_1", "111", "sub_A", "60"], ["w_1", "111", "sub_B", "5.5"],
      ["w_1", "222", "sub_A", "20"]],
     {"w_1": (D(10), frozenset({"0xc"}))}, {("w_1", "0xc"): D(10)}, {("w_1", "111"): D(100), ("w_1", "222"): D(50)},
     {}, {}, {("w_1", "111"): D(10)},
     {("w_1", "111"): {"sub_A": D(60), "sub_B": D("5.5")}, ("w_1", "222"): {"sub_A": D(20)}}),
    # SELLs in flight of a position not held (none, or less than a share step: no asset size), or of a wallet with
    # no row: left out, as nothing is sized on them
    ([["w_1", "10", "0xc", [["0xc", "10"]], [["111", "20"]], None], ["w_2", None, None, None, None, "-1"]],
     [["w_1", "222", None, "5"], ["w_2", "111", "sub_A", "5"], ["w_3", "111", None, "5"], ["w_1", "111", None, "3"]],
     {"w_1": (D(10), frozenset({"0xc"}))}, {("w_1", "0xc"): D(10)}, {("w_1", "111"): D(20)}, {"w_2": D(-1)}, {},
     {("w_1", "111"): D(3)}, {}),
])
def test_wallet_rows(rows: list[list[object]], unclaimed: list[list[object]], totals: dict[str, object],
                     market_costs: dict[object, Decimal], asset_sizes: dict[object, Decimal],
                     realized: dict[str, Decimal], parts: dict[tuple[str, str], dict[str, Decimal]],
                     exiting: dict[tuple[str, str], Decimal],
                     unrouted: dict[tuple[str, str], dict[str, Decimal]]) -> None:
    assert _read_wallets(rows, unclaimed)[0] == (totals, market_costs, asset_sizes, realized, parts, exiting, unrouted)
