-- The order guard recorded its perf decisions in (guard_perf_decisions.seq, from a sequence at insert): the resume
-- baseline is the latest PAUSE or RESUMED record, and decisions are re-sent after a crash oldest first. Ordered by
-- decided_at, guard's wall clock, a clock that went back across a restart (an NTP step, a replica on a host whose
-- clock is behind) made a resume recorded before a later loss-stop read as the latest record: the baseline stayed
-- at the old resume's PnL and the next resume was paused again at once by the loss its user had just accepted.
-- decided_at stays, as information. Rows from before this column are numbered in their decided_at, decision_id
-- order (the order they were read in until now).
CREATE SEQUENCE IF NOT EXISTS guard_perf_decisions_seq AS bigint;
ALTER TABLE guard_perf_decisions ADD COLUMN IF NOT EXISTS seq bigint;
UPDATE guard_perf_decisions d SET seq = o.n
FROM (SELECT decision_id, (SELECT coalesce(max(seq), 0) FROM guard_perf_decisions)
                          + row_number() OVER (ORDER BY decided_at, decision_id) AS n
      FROM guard_perf_decisions WHERE seq IS NULL) o
WHERE d.decision_id = o.decision_id;
SELECT setval('guard_perf_decisions_seq', (SELECT coalesce(max(seq), 0) + 1 FROM guard_perf_decisions), false);
ALTER SEQUENCE guard_perf_decisions_seq OWNED BY guard_perf_decisions.seq;
ALTER TABLE guard_perf_decisions ALTER COLUMN seq SET DEFAULT nextval('guard_perf_decisions_seq'),
                                 ALTER COLUMN seq SET NOT NULL;
DROP INDEX IF EXISTS guard_perf_decisions_subscription;
CREATE UNIQUE INDEX IF NOT EXISTS guard_perf_decisions_subscription_seq ON guard_perf_decisions (subscription_id, seq);
