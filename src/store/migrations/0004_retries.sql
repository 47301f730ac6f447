-- 0004: reconnects mean outages recovered.
--
-- `reconnects` counted every connection attempt after a failure, so a camera down for a
-- minute showed dozens of "reconnects" and one that never came back kept counting. It
-- now counts outages the source came back from; the attempts are `retries`. Rows
-- written before this migration counted attempts: they move to `retries`.

ALTER TABLE source_states ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
UPDATE source_states SET retries = reconnects, reconnects = 0;
