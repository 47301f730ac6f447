-- 0006: what each window's stored embedding is of.
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
-- box with 10^7 windows would wait minutes for this migration.
ALTER TABLE segments ADD COLUMN embedding_kind TEXT
    CHECK (embedding_kind IN ('mean', 'grid', 'reused'));
