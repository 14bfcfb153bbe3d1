-- grain: one row per run stored under an id its spec no longer gives: a task with test_set:
-- shared, stored before test_set entered the run identity (docs/decisions/0104), when it
-- shared its id with the same task's after_train run. Its rows are hypotheses of its stored
-- spec; `ibdb run` of that spec samples it again under its new id (`ibdb validate` lists it).
SELECT run_id, experiment || '/' || task_name || '/' || space_name || '/' || budget_name
       AS label
FROM specs
WHERE json_extract_string(spec, '$.task.test_set') = 'shared'
  AND json_extract(identity, '$.task.test_set') IS NULL
ORDER BY run_id
