"""The trigger population of the guard benchmarks: positions and ARMED triggers seeded with COPY, and a
random price walk on the 0.01 grid that fires some of them."""

from __future__ import annotations

import contextlib
import os
import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg


def asset_id(i: int) -> str:
    """The token id of the ``i``-th seeded asset."""
    return f"{7_000_000_000 + i:d}" + "1" * 66


SEEDED_SIZE, SEEDED_COST = Decimal(100), Decimal(50)  # each seeded position: 100 shares bought at 0.50


def seeded_positions(n_triggers: int, n_assets: int) -> list[tuple[int, str]]:
    """(k, asset) of the positions :func:`seed_triggers` writes: wallet ``w_{k}`` holds ``asset``."""
    per_asset = max(1, n_triggers // n_assets)
    return [(k, asset_id(a)) for a in range(n_assets) for k in range(per_asset)]


def seed_triggers(db_url: str, n_triggers: int, n_assets: int, rng: random.Random, *,
                  trailing_mark: Decimal = Decimal(0)) -> None:
    """Positions and ARMED triggers (TP / SL / trailing, some in OCO pairs), written with COPY; the trailing
    stops' stored high-water mark is ``trailing_mark`` (0: none yet, each takes the first price it sees)."""
    per_asset = max(1, n_triggers // n_assets)
    now = datetime.now(UTC)
    # created a day ago, as triggers gathered over time are: guard's sweep of the newest ARMED triggers nobody
    # announced (services.guard.unwatched) reads the last ~35 s of them at each run, so seeded as created now, all
    # of them were read again every 5 s during (e)'s measurement, charged to the ticks and fires measured
    created = now - timedelta(days=1)
    with psycopg.connect(db_url) as conn:
        with conn.cursor().copy("COPY positions (follower_wallet_id, asset_id, condition_id, wallet, size, avg_price,"
                                " cost_usd) FROM STDIN") as cp:
            for k, asset in seeded_positions(n_triggers, n_assets):
                cp.write_row((f"w_{k}", asset, "0x" + "ab" * 32, "0x" + f"{k:040x}", SEEDED_SIZE, 0.5, SEEDED_COST))
        with conn.cursor().copy(
                "COPY triggers (id, wallet, follower_wallet_id, asset_id, kind, trigger_price, trail_pct,"
                " activation_price, size, sell_fraction, oco_group, price_source, state, state_reason,"
                " high_water_mark, source, create_time, update_time) FROM STDIN") as cp:
            for a in range(n_assets):
                for k in range(per_asset):
                    kind = ("TAKE_PROFIT", "STOP_LOSS", "TRAILING_STOP", "TAKE_PROFIT", "STOP_LOSS")[k % 5]
                    price = trail = Decimal(0)
                    # prices spread so that the random walk below fires a few dozen a second
                    if kind == "TAKE_PROFIT":
                        price = Decimal(rng.randint(58, 95)) / 100
                    elif kind == "STOP_LOSS":
                        price = Decimal(rng.randint(5, 42)) / 100
                    else:
                        trail = Decimal(rng.randint(15, 45))
                    oco = f"grp_{a}_{k // 2}" if k % 5 in (3, 4) else ""
                    mark = trailing_mark if kind == "TRAILING_STOP" else 0
                    cp.write_row((f"trg_{a}_{k}", "0x" + f"{k:040x}", f"w_{k}", asset_id(a), kind, price, trail, 0, 0,
                                  1, oco, "BEST_BID", "ARMED", "", mark, "MANUAL", created, now))
        conn.commit()
        # Statistics, as a database that gathered these rows over time has them (autovacuum would analyze
        # only a minute or so later): without them the planner takes the 100,000 rows for a handful, and
        # e.g. the trailing-mark flush hash-joins every ARMED trigger (63 ms a 500-row chunk, 11 ms with).
        conn.execute("ANALYZE positions")
        conn.execute("ANALYZE triggers")
        conn.commit()
        # On disk, too. The rows leave ~140 MB of dirty pages in the OS's cache, which the kernel writes back
        # ~30 s later (vm.dirty_expire_centisecs): in the middle of ``bench pipeline``'s (e), where a commit
        # waiting behind that writeback held one SELL 23-90 ms between admission and POST in 5 of 6 runs.
        conn.autocommit = True
        with contextlib.suppress(psycopg.Error):  # CHECKPOINT needs a privileged role (an external database)
            conn.execute("CHECKPOINT")
    os.sync()


class Walk:
    """A random walk per asset on the 0.01 grid, kept inside [0.02, 0.97]."""

    def __init__(self, n_assets: int, rng: random.Random) -> None:
        self.prices = [50] * n_assets
        self.rng = rng

    def step(self) -> tuple[int, Decimal]:
        """Move one random asset by -1, 0 or +1 cent; returns (asset index, new price)."""
        a = self.rng.randrange(len(self.prices))
        p = min(97, max(2, self.prices[a] + self.rng.choice((-1, 0, 1))))
        self.prices[a] = p
        return a, Decimal(p) / 100
