-- grain: one row per run and loss set whose stored rows no longer match the digest stored when
-- they were ingested or last estimated: they were edited outside ibdb (a plain DuckDB
-- connection; `ibdb sql --write` keeps digests current), so which estimates are stale cannot be
-- told. Recompute with `ibdb estimate --run RUN_ID`, which digests the run's losses first. The
-- one check that reads every stored loss (queries/loss_set_contents.sql).
SELECT coalesce(c.run_id, d.run_id) AS run_id, coalesce(c.loss, d.loss) AS loss_set,
       d.n AS n_when_digested, c.n AS n_now
FROM loss_set_contents c
FULL JOIN loss_set_digests d ON d.run_id = c.run_id AND d.loss = c.loss
WHERE c.digest IS DISTINCT FROM d.digest
ORDER BY run_id, loss_set
