-- grain: one row per stored estimate whose loss set changed after it was computed.
-- Recompute with `ibdb estimate --run RUN_ID` (no resampling).
SELECT run_id, loss, method, eps, computed_at
FROM stale_estimates
ORDER BY run_id, loss, method, eps
