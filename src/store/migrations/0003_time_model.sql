-- 0003: one time model, and sources keyed by what they are.
--
-- Every window gets its wall-clock span, `wall_start`/`wall_end` (unix seconds): for a
-- live source the capture time; for a file the recording's start plus the window's
-- position in the file. A file's position stays in `start_ms`/`end_ms` (0-based, for
-- seeking); a live source's `start_ms`/`end_ms` are its capture time in unix ms, as
-- before, so the upsert key (source, model, start_ms) keeps its meaning. The old
-- `wall_time` was when the window was tagged: it is `processed_at` now, and retention
-- still ages rows by it (what was written longest ago goes first, whatever it shows).
--
-- A source is a (name, location) pair: pointing a name at another file or camera makes
-- another source under the same name, so two videos' windows never mix silently and a
-- re-run of the same file still replaces its own windows.

CREATE TABLE sources_new (
    id               INTEGER PRIMARY KEY,
    name             TEXT NOT NULL,
    uri              TEXT NOT NULL, -- credentials are masked by the caller
    kind             TEXT NOT NULL DEFAULT 'file' CHECK (kind IN ('file', 'live')),
    -- Files: when the recording started (unix seconds) and how that is known:
    -- 'container' (the file's date tag), 'mtime' (its modification time), 'config'
    -- (the source's `recorded_at`), 'tagged' (rows from before this migration: only when
    -- they were tagged is known).
    recorded_at      REAL,
    recorded_at_from TEXT,
    -- Files: what was tagged to the end, so a run over a pile of recordings can skip
    -- files it already did: size, modification time and "model id + label set".
    file_size        INTEGER,
    file_mtime       REAL,
    tagged_with      TEXT,
    UNIQUE (name, uri)
);
INSERT INTO sources_new (id, name, uri) SELECT id, name, uri FROM sources;
DROP TABLE sources;
ALTER TABLE sources_new RENAME TO sources;

ALTER TABLE segments RENAME COLUMN wall_time TO processed_at;
ALTER TABLE segments ADD COLUMN wall_start REAL;
ALTER TABLE segments ADD COLUMN wall_end REAL;

-- Existing rows. A live source's media times were capture times in unix ms (anything
-- after 1973 cannot be a position in a file); a file's real recording time was never
-- recorded, so its windows get when they were tagged, and say so.
UPDATE sources SET kind = 'live'
    WHERE id IN (SELECT source_id FROM segments WHERE start_ms > 100000000000);
UPDATE segments SET wall_start = start_ms / 1000.0, wall_end = end_ms / 1000.0
    WHERE source_id IN (SELECT id FROM sources WHERE kind = 'live');
UPDATE segments SET wall_start = processed_at - (end_ms - start_ms) / 1000.0,
                    wall_end = processed_at
    WHERE wall_start IS NULL;
UPDATE sources SET recorded_at_from = 'tagged'
    WHERE kind = 'file' AND id IN (SELECT source_id FROM segments);

-- "What happened yesterday" reads by wall-clock span.
CREATE INDEX segments_by_wall_start ON segments (wall_start);

-- For sqlite3 users: one row per stored match with everything a person asks about it.
-- Local times are the box's time zone as SQLite sees it ('localtime').
CREATE VIEW v_matches AS
SELECT so.name AS source,
       so.uri AS uri,
       l.text AS label,
       m.rank AS rank,
       m.probability AS probability,
       m.cosine AS cosine,
       datetime(s.wall_start, 'unixepoch', 'localtime') AS local_start,
       datetime(s.wall_end, 'unixepoch', 'localtime') AS local_end,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.wall_start, 'unixepoch') AS utc_start,
       strftime('%Y-%m-%dT%H:%M:%fZ', s.wall_end, 'unixepoch') AS utc_end,
       CASE so.kind WHEN 'file' THEN s.start_ms / 1000.0 END AS offset_s,
       CASE so.kind WHEN 'file' THEN s.end_ms / 1000.0 END AS offset_end_s,
       s.id AS segment_id,
       s.model_id AS model_id
FROM matches m
JOIN segments s ON s.id = m.segment_id
JOIN labels l ON l.id = m.label_id
JOIN sources so ON so.id = s.source_id;
