-- The trailing marks guard writes back (0600) are changes to `triggers` like any other: after ~10 % of the
-- rows, autovacuum analyzes the table. That ANALYZE took 0.25 s of CPU in one go over 100,000 triggers
-- (measured here), and in `bench pipeline --only e` it came twenty seconds after guard's restart, where the
-- SELLs of that second were among the run's slowest. As for `orders` (0570), the columns no query filters, joins
-- or sorts on (a trigger's numbers, its kind and price source, the fire's figures and SELL) keep no
-- statistics now, and the same ANALYZE takes 0.13 s. Keys, states and the columns the lists page on keep theirs.
ALTER TABLE triggers
    ALTER COLUMN kind SET STATISTICS 0,
    ALTER COLUMN trigger_price SET STATISTICS 0,
    ALTER COLUMN trail_pct SET STATISTICS 0,
    ALTER COLUMN activation_price SET STATISTICS 0,
    ALTER COLUMN size SET STATISTICS 0,
    ALTER COLUMN sell_fraction SET STATISTICS 0,
    ALTER COLUMN price_source SET STATISTICS 0,
    ALTER COLUMN high_water_mark SET STATISTICS 0,
    ALTER COLUMN fire_count SET STATISTICS 0,
    ALTER COLUMN version SET STATISTICS 0,
    ALTER COLUMN update_time SET STATISTICS 0,
    ALTER COLUMN fire_price SET STATISTICS 0,
    ALTER COLUMN fire_size SET STATISTICS 0,
    ALTER COLUMN fire_held SET STATISTICS 0,
    ALTER COLUMN filled_size SET STATISTICS 0,
    ALTER COLUMN avg_fill_price SET STATISTICS 0,
    ALTER COLUMN done_time SET STATISTICS 0,
    ALTER COLUMN fire_order SET STATISTICS 0;
