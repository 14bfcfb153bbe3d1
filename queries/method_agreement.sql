-- grain: one row per run, loss column and eps.
-- Each method's inductive bias (bits) side by side, and each estimating method's difference
-- from the exact value where a gp run has one and from the splitting estimate where the run has
-- levels (positive: the method reports more bits): the disagreement of an extrapolating model
-- (ncx2, paper) with a method that samples the tail. One column set per registered method
-- (ibdb.core.methods), written by the store in place of the marker below: <method>_bits for every
-- method, <method>_is_lower_bound for methods whose rows can be lower bounds, and
-- <method>_minus_<yardstick> for every estimating method and yardstick (exact, splitting).
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
