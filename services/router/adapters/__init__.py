"""I/O behind small ports: Redis, PostgreSQL, CLOB REST, Insiders balances."""
