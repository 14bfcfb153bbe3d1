-- grain: one row per run.
-- What each run is, how many hypotheses it asked for and holds, and its loss statistics
-- (test_mse: mean squared error against one-hot targets; test_error: 0-1 error rate).
-- n_not_fitted counts trained networks that missed the fit criterion: estimates exclude them.
-- test_mse_of_mean (the mean hypothesis's test MSE) + test_mse_spread (the expected spread
-- around it) = the expected test MSE of a fitted hypothesis: for gp runs from the posterior in
-- closed form (runner info), for network runs from the sampled networks (mean_network view;
-- the spread is then mean_fitted_test_mse minus the mean network's, exactly); NULL otherwise.
-- mean_fitted_test_mse averages the hypotheses that fit (mean_test_mse averages all stored).
-- interpolates: whether a gp run's posterior mean misses no training target by more than
-- 1e-3 (interp_error: by how much it does); NULL for other runners and conditioned gp spaces.
SELECT
    s.run_id,
    s.experiment,
    s.task_name,
    s.space_name,
    s.budget_name,
    s.runner,
    s.n_hypotheses AS n_requested,
    coalesce(l.n_stored, 0) AS n_stored,
    coalesce(l.n_stored, 0) >= s.n_hypotheses AS complete,
    coalesce(l.n_not_fitted, 0) AS n_not_fitted,
    r.n_train,
    r.n_test,
    r.n_outputs,
    r.device,
    r.wall_seconds,
    l.mean_test_mse,
    l.mean_fitted_test_mse,
    -- (TRY_CAST: a runner_info edited by hand to hold text reads as NULL, not an error)
    coalesce(TRY_CAST(r.runner_info ->> '$.test_mse_of_mean' AS DOUBLE),
             m.test_mse_of_mean) AS test_mse_of_mean,
    coalesce(TRY_CAST(r.runner_info ->> '$.test_mse_spread' AS DOUBLE),
             l.mean_fitted_test_mse - m.test_mse_of_mean) AS test_mse_spread,
    TRY_CAST(r.runner_info ->> '$.interpolates' AS BOOLEAN) AS interpolates,
    TRY_CAST(r.runner_info ->> '$.train_interp_max_abs_error' AS DOUBLE) AS interp_error,
    l.min_test_mse,
    l.mean_test_error,
    l.min_test_error
FROM specs s
LEFT JOIN runs r USING (run_id)
LEFT JOIN (
    SELECT
        run_id,
        count(*) AS n_stored,
        count(*) FILTER (fitted = false) AS n_not_fitted,
        avg(test_mse) AS mean_test_mse,
        avg(test_mse) FILTER (fitted IS NOT FALSE) AS mean_fitted_test_mse,
        min(test_mse) AS min_test_mse,
        avg(test_error) AS mean_test_error,
        min(test_error) AS min_test_error
    FROM losses
    GROUP BY run_id
) l USING (run_id)
LEFT JOIN mean_network m USING (run_id)
