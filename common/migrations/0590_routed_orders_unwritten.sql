-- routed_orders is no longer written. Each copy order it recorded is in its trade's RoutedTrade
-- (routed_trades.payload), and the executor's orders table holds every intent under the same unique client
-- order id: that table, not this one, is what the router's relog and the executor consult. Its 10,000-row
-- insert took about 45 ms of PostgreSQL CPU per 10,000-follower fan-out, while the executor was
-- inserting that fan-out's intents. The table stays for one release, so that a router of the previous
-- release still running during an upgrade can write to it; a later migration drops it.
COMMENT ON TABLE routed_orders IS 'No longer written (see migration 0590); dropped in a later release.';
