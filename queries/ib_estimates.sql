-- grain: one row per run, loss column, method and eps: the IB-vs-eps curve of each run and
-- method. Inductive bias in bits (-log2 P[loss <= eps]); `bound` says whether `bits` is a point
-- estimate, only a lower bound (empirical, no sample <= eps) or an upper bound (method bound); `stale` marks estimates whose loss set (or spectrum) has
-- changed since they were computed (see loss_sets).
SELECT
    e.run_id,
    s.experiment,
    s.task_name,
    s.space_name,
    e.loss,
    e.method,
    e.method_version,
    e.eps,
    e.bits,
    e.lower_bits,
    e.upper_bits,
    e.bound,
    e.n,
    CASE WHEN e.method = 'bound' THEN false  -- from task statistics, not from samples
         ELSE e.loss_set_hash IS DISTINCT FROM ls.digest END AS stale,
    e.params,
    e.diagnostics,
    e.computed_at
FROM estimates e
JOIN specs s USING (run_id)
LEFT JOIN loss_sets ls
    ON ls.run_id = e.run_id
    AND ls.loss = CASE WHEN e.method = 'exact' THEN 'spectrum'
                       WHEN e.method = 'bound' THEN NULL
                       ELSE e.loss END
