-- grain: one row per shard file that the ledger does not know, per ledger row whose file is
-- gone, per temporary file a killed writer left behind (a shard's, or a store's beside the
-- store), and per entry of the shard folder that ingest would refuse (a run folder without
-- run.json, a folder or broken link under a shard's name, a .parquet file not named as a shard).
-- shard_files(path, present), shard_entries(path, kind, depth) and leftover_stores(path, pid)
-- are filled by ibdb.store.checks from the file system: every file in the shard folder, every path
-- the ledger names, every entry of the folder and its run folders, and the temporary stores
-- whose process is gone. A shard's name carries the first 16 hex digits of its sha256, so a
-- file counts as ingested when the ledger holds that hash under any path.
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
UNION ALL
SELECT 'temporary store', l.path, NULL,
       'left by process ' || l.pid || ' (gone) while it created the store; '
       || '`ibdb check --fix` removes it'
FROM leftover_stores l
UNION ALL
SELECT 'no run.json', e.path, NULL,
       'ingest cannot load this folder (a run killed before it wrote run.json, or an '
       || 'emptied folder): delete it, or re-run its spec'
FROM shard_entries e
WHERE e.depth = 1 AND e.kind = 'folder'
  AND e.path || '/run.json' NOT IN (SELECT path FROM shard_entries WHERE kind = 'file')
UNION ALL
SELECT CASE e.kind WHEN 'broken link' THEN 'broken link' ELSE 'not a file' END, e.path, NULL,
       'ingest refuses the run folder while it is there: remove it, or restore the file'
FROM shard_entries e
WHERE e.depth = 2 AND e.kind <> 'file' AND regexp_matches(e.path, '\.parquet$')
UNION ALL
SELECT 'not a shard name', e.path, NULL,
       'ingest refuses the run folder while it is there: move the file out of it'
FROM shard_entries e
WHERE e.depth = 2 AND e.kind = 'file' AND regexp_matches(e.path, '\.parquet$')
  AND NOT regexp_matches(e.path, '/(losses-\d{9}-\d{9}|spectrum|levels-r\d{3}-l\d{4})-[0-9a-f]{16}\.parquet$')
ORDER BY problem, path
