-- A copy updates its subscription's counters (subscription_stats) and, once filled, resizes its position's exit
-- group (guard_position_exits). Neither update changes an indexed column, but rows written densely leave no room
-- on their page for the new version: in a fan-out to 10,000 followers only 31 % of the counter updates and 8 % of
-- the resizes stayed on their page (HOT); the rest wrote a new entry in every index and left a dead version for
-- autovacuum. Free room on each page (as for positions) keeps them HOT.
ALTER TABLE subscription_stats SET (fillfactor = 50);
ALTER TABLE guard_position_exits SET (fillfactor = 50);
