-- grain: one row per stored estimate whose loss set changed after it was computed.
-- Recompute them with `ibdb estimate --run RUN_ID` (no resampling needed).
SELECT run_id, experiment, task_name, space_name, loss, method, eps, bits, n, computed_at
FROM ib_estimates
WHERE stale
