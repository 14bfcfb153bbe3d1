-- grain: one row per run and hypothesis id stored more than once, and per run and seed that
-- more than one hypothesis used (the same draw counted twice).
-- Ingest proves the first kind absent (docs/decisions.md: no primary key on losses); rows
-- inserted by hand (`ibdb sql --write`) are not checked, so this check looks.
SELECT 'hypothesis_id' AS duplicated, run_id, hypothesis_id::VARCHAR AS value, count(*) AS n_rows
FROM losses
GROUP BY run_id, hypothesis_id
HAVING count(*) > 1
UNION ALL
SELECT 'seed', run_id, seed::VARCHAR, count(*)
FROM losses
GROUP BY run_id, seed
HAVING count(*) > 1
ORDER BY duplicated, run_id, value
