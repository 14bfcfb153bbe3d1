-- grain: one row per shard file that the ledger does not know, per ledger row whose file is
-- gone, and per temporary file a killed writer left behind.
-- shard_files(path, present) is filled by ibdb.checks from the file system: every file in the
-- shard folder, and every path the ledger names. A shard's name carries the first 16 hex digits
-- of its sha256, so a file counts as ingested when the ledger holds that hash under any path.
SELECT 'not ingested' AS problem, f.path, NULL AS run_id,
       'ingest it: ibdb ingest <its run folder>' AS remedy
FROM shard_files f
WHERE f.present
  AND regexp_matches(f.path, '/(losses-\d{9}-\d{9}|spectrum|levels-r\d{3}-l\d{4})-[0-9a-f]{16}\.parquet$')
  AND regexp_extract(f.path, '-([0-9a-f]{16})\.parquet$', 1)
      NOT IN (SELECT left(sha256, 16) FROM shards)
UNION ALL
SELECT 'file missing', s.path, s.run_id,
       'the rows are stored; restore the file if you keep shards as the raw record'
FROM shards s
JOIN shard_files f ON f.path = s.path
WHERE NOT f.present
UNION ALL
SELECT 'temporary file', f.path, NULL,
       'left by a killed writer; delete it once no run is writing'
FROM shard_files f
WHERE f.present AND regexp_matches(f.path, '/\.[^/]*\.tmp-\d+$')
ORDER BY problem, path
