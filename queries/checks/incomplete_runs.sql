-- grain: one row per run that holds fewer hypotheses than its spec asked for.
-- Finish it with `ibdb run SPEC` (resumes at the missing ids), or `ibdb ingest` its shard folder.
SELECT run_id, experiment || '/' || task_name || '/' || space_name || '/' || budget_name AS label,
       n_requested, n_stored, n_requested - n_stored AS n_missing
FROM run_summary
WHERE NOT complete
ORDER BY run_id
