-- grain: one row per run and loss set (test_mse, test_error, the gp spectrum, or the levels of
-- its splitting repeats), computed
-- from the stored rows: the number of values and an order-independent digest of them, the sum
-- of DuckDB's 64-bit hash of every (hypothesis id, value) pair (component, eigenvalue and
-- residuals for a spectrum), so any change of any value or id changes it. This scans every
-- stored loss: the store runs it for the runs an ingest (or `ibdb sql --write`) touched and
-- keeps the result in the loss_set_digests table, which loss_sets reads. Sample sets hold only
-- hypotheses that fit the training data; NULL values are not counted.
SELECT run_id, 'test_mse' AS loss, count(test_mse) AS n,
       count(test_mse)::VARCHAR || ':'
           || coalesce(sum(hash(hypothesis_id, test_mse)::HUGEINT)
                       FILTER (test_mse IS NOT NULL), 0)::VARCHAR AS digest
FROM losses
WHERE fitted IS NOT FALSE
GROUP BY run_id
UNION ALL
SELECT run_id, 'test_error', count(test_error),
       count(test_error)::VARCHAR || ':'
           || coalesce(sum(hash(hypothesis_id, test_error)::HUGEINT)
                       FILTER (test_error IS NOT NULL), 0)::VARCHAR
FROM losses
WHERE fitted IS NOT FALSE
GROUP BY run_id
UNION ALL
SELECT run_id, 'spectrum', count(*),
       count(*)::VARCHAR || ':' || sum(hash(component, eigenvalue, residuals)::HUGEINT)::VARCHAR
FROM spectra
GROUP BY run_id
UNION ALL
SELECT run_id, 'levels', count(*),
       count(*)::VARCHAR || ':' || sum(hash(repeat, level, particle, loss, fitted, parent, step,
                                            accepted, threshold)::HUGEINT)::VARCHAR
FROM splitting_particles
GROUP BY run_id
