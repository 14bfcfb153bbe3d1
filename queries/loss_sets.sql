-- grain: one row per run and loss set (test_mse, test_error, or the gp spectrum).
-- What an estimate was computed from: the number of values and a digest of them (md5 over
-- "id:value" in id order; DuckDB prints doubles in shortest round-trip form, so any change of
-- any value changes the digest). Sample sets hold only hypotheses that fit the training data;
-- UNPIVOT drops NULL values, as count() does.
SELECT
    run_id,
    loss,
    count(*) AS n,
    md5(string_agg(hypothesis_id::VARCHAR || ':' || value::VARCHAR, ','
                   ORDER BY hypothesis_id)) AS digest
FROM (
    UNPIVOT (SELECT run_id, hypothesis_id, test_mse, test_error FROM losses
             WHERE fitted IS NOT FALSE)
    ON test_mse, test_error INTO NAME loss VALUE value
)
GROUP BY run_id, loss
UNION ALL
SELECT
    run_id,
    'spectrum' AS loss,
    count(*) AS n,
    md5(string_agg(component::VARCHAR || ':' || eigenvalue::VARCHAR || ':'
                   || residuals::VARCHAR, ',' ORDER BY component)) AS digest
FROM spectra
GROUP BY run_id
