-- grain: one row per gp run and eigen-direction of the posterior covariance.
-- The test MSE of a gp hypothesis is sum_j weight_j * chi2'(dof, noncentrality_j), a
-- generalized chi-squared (REFERENCE.md section 2); this view derives its parameters.
SELECT
    sp.run_id,
    sp.component,
    sp.eigenvalue,
    list_inner_product(sp.residuals, sp.residuals) AS residual_sq,
    sp.eigenvalue / (r.n_test * r.n_outputs) AS weight,
    r.n_outputs AS dof,
    CASE WHEN sp.eigenvalue > 0
         THEN list_inner_product(sp.residuals, sp.residuals) / sp.eigenvalue END AS noncentrality
FROM spectra sp
JOIN runs r USING (run_id)
