-- 0006: what each window's stored embedding is of, and its keyframes' under "max".
--
-- Search ranks windows by their stored embedding, so it has to be a true CLIP embedding of
-- the window, and a user looking at a hit should know which kind it is:
--   'mean'   the re-normalised mean of the window's keyframes' embeddings (also under
--            `aggregate = "max"`, which scores labels per keyframe but stores the mean);
--   'grid'   the embedding of one super image tiling the window's keyframes;
--   'reused' the scene was judged unchanged, so the window carries the embedding of its
--            source's last embedded window (clip_calls = 0).
-- Windows written before this column are NULL, and readers tell their kind from what was
-- always stored (clip_calls 0: reused; one CLIP pass for several keyframes: grid; else
-- mean) rather than rewriting every 2 KB row here: an UPDATE rewrites whole rows, and a
-- box with 10^7 windows would wait minutes for this migration. For the same reason the
-- column has no CHECK: SQLite tests a new column's CHECK against every existing row,
-- which read all 42 GB of a 10^7-window database; the writer writes only the three
-- values and readers refuse any other.
ALTER TABLE segments ADD COLUMN embedding_kind TEXT;

-- Under `aggregate = "max"` a window's labels are scored per keyframe (each label's best
-- keyframe), which its mean embedding cannot reproduce: the keyframes' own embeddings are
-- kept here, so a backfill scores a new label set the way the window was tagged. Only
-- windows tagged under "max" have rows (k × 2 KB for ViT-B/32; a reused window repeats
-- its reference's), and they go with their window.
CREATE TABLE keyframe_embeddings (
    segment_id INTEGER NOT NULL REFERENCES segments (id) ON DELETE CASCADE,
    keyframe   INTEGER NOT NULL,
    embedding  BLOB NOT NULL,
    PRIMARY KEY (segment_id, keyframe)
);
