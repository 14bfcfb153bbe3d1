-- grain: one row per run and loss set (test_mse, test_error, or the gp spectrum).
-- What an estimate was computed from: the number of values and their digest, as stored when
-- the data were ingested (queries/loss_set_contents.sql computes them; reading this view costs
-- one row per run, not a scan of the losses). An estimate whose loss_set_hash differs from its
-- set's digest here is stale.
SELECT run_id, loss, n, digest
FROM loss_set_digests
