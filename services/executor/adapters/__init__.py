"""The executor's I/O for positions after the copy: PostgreSQL and the venue calls of settlement, redemption and
reconciliation."""
