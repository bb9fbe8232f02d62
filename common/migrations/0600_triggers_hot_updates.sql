-- Guard writes every risen trailing high-water mark back to its trigger row: a burst after a restart or a
-- market-wide move (20,000 rows, then 8,000 ten seconds later, in `bench pipeline --only e`), then a few
-- rows every flush. The mark is in no index, yet rows written densely left no room on their page for the
-- new version: 4 % of 44,000 mark updates stayed on their page (HOT) over 100,000 densely written rows;
-- the rest wrote a new entry in each of the table's indexes and left a dead version for vacuum to clear
-- from the table and every index. Free room on each page (as for positions) keeps them HOT: 100 % on the
-- same rows, and the vacuum after them took 25 ms instead of 46. Pages written before this change stay as
-- full as they were: new rows, and the new versions of rows updated from now on, get the room.
ALTER TABLE triggers SET (fillfactor = 70);
