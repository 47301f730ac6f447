-- 0002: what the daemon needs to run unattended.
--
-- The switch to auto_vacuum = INCREMENTAL (so retention can give disk space
-- back) is not here: it needs a VACUUM, which cannot run inside this
-- migration's transaction. schema.rs does it after migrating, and again on
-- any later open that finds the database still un-converted.

-- The last known state of each configured source, upserted by the daemon as
-- it changes, so `cliptag status` can answer from another process. No CHECK
-- on `state`: a new state should not need a table rebuild; the writer
-- validates it instead.
CREATE TABLE source_states (
    name            TEXT PRIMARY KEY NOT NULL,
    uri             TEXT NOT NULL, -- credentials are masked by the caller
    state           TEXT NOT NULL,
    reason          TEXT,
    last_frame_time REAL,          -- unix seconds; NULL before the first frame
    frames          INTEGER NOT NULL,
    frames_dropped  INTEGER NOT NULL,
    reconnects      INTEGER NOT NULL,
    updated_at      REAL NOT NULL  -- unix seconds
);

-- Retention deletes the oldest segments through segments_by_wall_time (0001)
-- and their matches through the matches primary key (segment_id first); it
-- needs no index of its own.
