-- grain: one row per splitting run, repeat and level: each level's threshold (test MSE), the
-- pCN correlation and acceptance rate of its moves, its particles and loss evaluations, and the
-- evaluations spent up to it. The particles themselves are in splitting_particles.
SELECT
    run_id,
    repeat,
    level,
    any_value(threshold) AS threshold,
    any_value(rho) AS rho,
    count(*) AS n_particles,
    avg(accepted::INTEGER) FILTER (step > 0) AS acceptance_rate,
    min(loss) AS min_loss,
    any_value(n_evaluations) AS n_evaluations,
    sum(any_value(n_evaluations)) OVER (PARTITION BY run_id, repeat ORDER BY level)
        AS evaluations_so_far
FROM splitting_particles
GROUP BY run_id, repeat, level
