-- Which label set scored each window's matches: the label set's fingerprint (its labels'
-- texts and embeddings, and any tuned head). A backfill rescoring the past from the stored
-- embeddings moves a window to the current label set in the same transaction as its new
-- matches, so a window's matches always come from one label set, and a backfill that was
-- interrupted goes on where it stopped. No row: scored before this table existed (a
-- backfill rescores those too).
--
-- A table of its own rather than a column of `segments`: SQLite rewrites a whole row on
-- UPDATE, and a segment row carries its 2 KB embedding; moving a million windows to a new
-- label set would rewrite every embedding (measured: 22 000 windows/s with the column).
CREATE TABLE scored_by (
    segment_id INTEGER PRIMARY KEY REFERENCES segments (id) ON DELETE CASCADE,
    label_set  TEXT NOT NULL
);
