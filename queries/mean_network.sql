-- grain: one row per run whose every loss shard records its fitted hypotheses' summed test
-- residuals (networks, since 2026-12-01: `summary` in the shard footer, kept in the shard
-- ledger's provenance): the mean hypothesis's (the mean network's) test MSE, against one-hot
-- targets, over the run's fitted hypotheses. E[test MSE] of a fitted hypothesis is this plus
-- the spread around the mean (run_summary). A run is left out when a shard lacks the summary
-- (older shards) or the summed counts differ from the fitted rows stored (overlapping shards).
WITH parts AS (
    SELECT
        run_id,
        -- (TRY_CAST: a provenance edited by hand reads as a missing summary, not an error)
        TRY_CAST(provenance -> '$.summary.n_fitted' AS BIGINT) AS n_fitted,
        TRY_CAST(provenance -> '$.summary.test_residual_sum' AS DOUBLE[]) AS residual_sum
    FROM shards
    WHERE kind = 'losses'
),
covered AS (
    SELECT run_id, sum(n_fitted) AS n_fitted, count(*) FILTER (residual_sum IS NULL) AS missing
    FROM parts
    GROUP BY run_id
),
summed AS (
    SELECT run_id, i, sum(v) AS total
    FROM (
        SELECT run_id, unnest(residual_sum) AS v, generate_subscripts(residual_sum, 1) AS i
        FROM parts
        WHERE residual_sum IS NOT NULL
    )
    GROUP BY run_id, i
),
stored AS (
    SELECT run_id, count(*) FILTER (fitted IS NOT FALSE) AS n_fitted
    FROM losses
    GROUP BY run_id
)
SELECT
    c.run_id,
    c.n_fitted,
    sum(s.total * s.total) / (c.n_fitted::DOUBLE * c.n_fitted * count(*)) AS test_mse_of_mean
FROM covered c
JOIN summed s USING (run_id)
JOIN stored l USING (run_id)
WHERE c.missing = 0 AND c.n_fitted > 0 AND c.n_fitted = l.n_fitted
GROUP BY c.run_id, c.n_fitted
