-- grain: one row per run, loss column, method and eps: the IB-vs-eps curve of each run and
-- method. Inductive bias in bits (-log2 P[loss <= eps]); `bound` says whether `bits` is a point
-- estimate, only a lower bound (empirical, no sample <= eps) or an upper bound (method bound);
-- `stale` marks estimates whose loss set (or spectrum) has changed since they were computed:
-- each estimate names the set it read (`loss_set`; NULL for inputs that are never stale, such
-- as task statistics), and its digest then is compared with the stored one (see loss_sets).
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
    e.loss_set IS NOT NULL AND e.loss_set_hash IS DISTINCT FROM ls.digest AS stale,
    e.params,
    e.diagnostics,
    e.computed_at
FROM estimates e
JOIN specs s USING (run_id)
LEFT JOIN loss_sets ls
    ON ls.run_id = e.run_id
    AND ls.loss = e.loss_set
ORDER BY e.run_id, e.loss, e.method, e.eps DESC
