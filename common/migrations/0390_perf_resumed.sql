-- Guard records when a subscription its loss-stop paused is found ACTIVE again (the user resumed it), with the
-- PnL then: the next loss-stop counts from that PnL, so a resume is not undone at once by the loss it was made with.
ALTER TABLE guard_perf_decisions DROP CONSTRAINT IF EXISTS guard_perf_decisions_action_check;
ALTER TABLE guard_perf_decisions ADD CONSTRAINT guard_perf_decisions_action_check
    CHECK (action IN ('PAUSE', 'SCALE', 'RESUMED'));
