-- grain: one row per run, loss column, method and eps.
-- Inductive bias in bits (-log2 P[loss <= eps]) with the run's labels; `bound` says whether
-- `bits` is a point estimate or only a lower bound; `stale` marks estimates computed from a
-- different number of hypotheses than the run now holds.
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
    e.method <> 'exact' AND e.n <> coalesce(c.n_stored, 0) AS stale,
    e.params,
    e.diagnostics,
    e.computed_at
FROM estimates e
JOIN specs s USING (run_id)
LEFT JOIN (SELECT run_id, count(*) AS n_stored FROM losses GROUP BY run_id) c USING (run_id)
