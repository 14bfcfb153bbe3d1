-- grain: one row per run, loss column and eps.
-- Each method's inductive bias (bits) side by side, and each method's difference from the exact
-- value where a gp run has one (positive: the method reports more bits than the exact law).
SELECT
    run_id,
    experiment,
    task_name,
    space_name,
    loss,
    eps,
    max(bits) FILTER (method = 'exact') AS exact_bits,
    max(bits) FILTER (method = 'ncx2') AS ncx2_bits,
    max(bits) FILTER (method = 'paper') AS paper_bits,
    max(bits) FILTER (method = 'empirical') AS empirical_bits,
    bool_or(bound = 'lower') FILTER (method = 'empirical') AS empirical_is_lower_bound,
    max(bits) FILTER (method = 'bound') AS bound_bits,
    max(bits) FILTER (method = 'ncx2') - max(bits) FILTER (method = 'exact') AS ncx2_minus_exact,
    max(bits) FILTER (method = 'paper') - max(bits) FILTER (method = 'exact')
        AS paper_minus_exact,
    max(bits) FILTER (method = 'empirical') - max(bits) FILTER (method = 'exact')
        AS empirical_minus_exact
FROM ib_estimates
GROUP BY run_id, experiment, task_name, space_name, loss, eps
