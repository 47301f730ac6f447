-- 0001: initial schema.
--
-- No STRICT tables: sqlite3 shells older than 3.37 (still common on edge-box
-- distributions) refuse to open a database that has them, and that shell is
-- how people poke at a box in the field. Types are enforced by the writer.

CREATE TABLE models (
    -- Content hash of the ONNX files: the same weights moved to another path
    -- are the same model, and different weights at the same path are not.
    id            TEXT PRIMARY KEY NOT NULL,
    path          TEXT NOT NULL,
    embedding_dim INTEGER NOT NULL CHECK (embedding_dim > 0),
    first_seen    REAL NOT NULL -- unix seconds
);

CREATE TABLE sources (
    id   INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    uri  TEXT NOT NULL -- credentials are masked by the caller before they get here
);

-- Labels removed from the label file are marked inactive, never deleted, so
-- matches recorded while they were active keep pointing at real text.
CREATE TABLE labels (
    id        INTEGER PRIMARY KEY,
    model_id  TEXT NOT NULL REFERENCES models (id),
    text      TEXT NOT NULL,
    prompts   TEXT NOT NULL DEFAULT '[]', -- JSON array of strings
    embedding BLOB NOT NULL,              -- little-endian f32
    active    INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    UNIQUE (model_id, text)
);

-- Per-prompt text embeddings, so a restart does not re-run the text encoder.
CREATE TABLE text_embeddings (
    model_id  TEXT NOT NULL REFERENCES models (id),
    text      TEXT NOT NULL,
    embedding BLOB NOT NULL,
    PRIMARY KEY (model_id, text)
) WITHOUT ROWID;

CREATE TABLE segments (
    id           INTEGER PRIMARY KEY,
    source_id    INTEGER NOT NULL REFERENCES sources (id),
    model_id     TEXT NOT NULL REFERENCES models (id),
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER NOT NULL CHECK (end_ms >= start_ms),
    wall_time    REAL NOT NULL,    -- unix seconds when the window was captured/processed
    frame_count  INTEGER NOT NULL,
    keyframes_ms TEXT NOT NULL DEFAULT '[]', -- JSON array of media times in ms
    clip_calls   INTEGER NOT NULL, -- CLIP image passes spent; 0 when the embedding was reused
    embedding    BLOB NOT NULL,
    -- Re-running the same file replaces windows instead of duplicating them;
    -- this index also serves media-time queries within a source.
    UNIQUE (source_id, model_id, start_ms)
);
CREATE INDEX segments_by_wall_time ON segments (wall_time);
-- Startup asks "which models have segments?" to refuse mixing models.
CREATE INDEX segments_by_model ON segments (model_id);

CREATE TABLE matches (
    segment_id  INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    label_id    INTEGER NOT NULL REFERENCES labels (id),
    rank        INTEGER NOT NULL CHECK (rank >= 1),
    cosine      REAL NOT NULL,
    probability REAL NOT NULL,
    PRIMARY KEY (segment_id, rank)
) WITHOUT ROWID;
CREATE INDEX matches_by_label ON matches (label_id);
