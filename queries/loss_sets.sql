-- grain: one row per run and loss set (test_mse, test_error, or the gp spectrum).
-- What an estimate was computed from: the number of values and a digest of them (md5 over
-- "id:value" in id order; DuckDB prints doubles in shortest round-trip form, so any change of
-- any value changes the digest). Sample sets hold only hypotheses that fit the training data.
SELECT
    run_id,
    'test_mse' AS loss,
    count(test_mse) AS n,
    md5(string_agg(hypothesis_id::VARCHAR || ':' || test_mse::VARCHAR, ','
                   ORDER BY hypothesis_id)) AS digest
FROM losses
WHERE fitted IS NOT FALSE
GROUP BY run_id
UNION ALL
SELECT
    run_id,
    'test_error' AS loss,
    count(test_error) AS n,
    md5(string_agg(hypothesis_id::VARCHAR || ':' || test_error::VARCHAR, ','
                   ORDER BY hypothesis_id)) AS digest
FROM losses
WHERE fitted IS NOT FALSE
GROUP BY run_id
UNION ALL
SELECT
    run_id,
    'spectrum' AS loss,
    count(*) AS n,
    md5(string_agg(component::VARCHAR || ':' || eigenvalue::VARCHAR || ':'
                   || residuals::VARCHAR, ',' ORDER BY component)) AS digest
FROM spectra
GROUP BY run_id
