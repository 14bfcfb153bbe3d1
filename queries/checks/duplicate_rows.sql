-- grain: one row per run and hypothesis id stored more than once, and per run and seed that
-- more than one hypothesis used (the same draw counted twice).
-- The primary key keeps the first kind out of an ibdb store; a store edited by hand may not.
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
