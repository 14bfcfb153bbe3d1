-- grain: one row per run, loss column and eps.
-- Each method's inductive bias (bits) side by side, and each estimating method's difference
-- from the reference (exact) value where a gp run has one (positive: the method reports more
-- bits than the exact law). One column set per registered method (ibdb.methods): the store
-- writes them in place of the marker below when it creates the view: <method>_bits for every
-- method, <method>_is_lower_bound for methods whose rows can be lower bounds, and
-- <method>_minus_<reference> for every estimating method.
SELECT
    run_id,
    experiment,
    task_name,
    space_name,
    loss,
    eps
    /* per-method columns */
FROM ib_estimates
GROUP BY run_id, experiment, task_name, space_name, loss, eps
