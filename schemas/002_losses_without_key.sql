-- ibdb store, version 2: the losses table without its (run_id, hypothesis_id) primary key.
-- The key's index halved ingest throughput (benchmarks/bench_ingest.py) and guarded nothing
-- ingest does not already prove: every loss shard holds ids first..last in order (checked row
-- by row as it is inserted), and no two ledgered shards of a run overlap unless ingest skipped
-- the stored ids. `ibdb check` (queries/checks/duplicate_rows.sql) finds repeats in a store
-- edited by hand. docs/decisions.md has the reasoning. Existing rows are copied in key order.

-- CREATE TABLE AS keeps the columns and their types but no constraints: the NOT NULLs of
-- version 1 are put back one by one.
CREATE TABLE losses_unkeyed AS
SELECT * FROM losses ORDER BY run_id, hypothesis_id;

ALTER TABLE losses_unkeyed ALTER COLUMN run_id SET NOT NULL;
ALTER TABLE losses_unkeyed ALTER COLUMN hypothesis_id SET NOT NULL;
ALTER TABLE losses_unkeyed ALTER COLUMN seed SET NOT NULL;
ALTER TABLE losses_unkeyed ALTER COLUMN shard_sha256 SET NOT NULL;

DROP TABLE losses;

ALTER TABLE losses_unkeyed RENAME TO losses;
