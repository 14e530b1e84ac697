-- A snapshot is stored as it is encoded, not compressed by Postgres
-- (bench/snapshot-storage.ts; docs/performance.md#snapshots-in-postgres).
-- The default storage of a bytea is EXTENDED: pglz over the whole value. A hot
-- SKU's snapshot (100,000 live holds: 17.7 MB) then costs Postgres ~450 ms of
-- CPU to write, against ~130 ms stored out of line uncompressed, and more to
-- read back at recovery; pglz halves its size, which two kept snapshots per SKU
-- do not need. lz4 costs as little but is not in every build (the embedded
-- server has none), so the column is uncompressed everywhere. Rows written
-- before keep their compression; Postgres reads both.
ALTER TABLE sku_snapshots ALTER COLUMN state SET STORAGE EXTERNAL;
