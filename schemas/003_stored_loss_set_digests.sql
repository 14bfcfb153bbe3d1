-- ibdb store, version 3: loss-set digests are computed when data are ingested and stored, so
-- that telling a stale estimate is a join over runs instead of a hash of every stored loss on
-- every query; and each estimate names the loss set it read, so views need no method names.
-- After this file the store fills loss_set_digests from the data (queries/loss_set_contents.sql)
-- and carries each estimate that was fresh under version 2's md5 digests over to the new
-- digest, in the same transaction (ibdb.store.database.Store, see docs/decisions.md).

-- One row per run and loss set: a loss column ('test_mse', 'test_error': the hypotheses that fit)
-- or 'spectrum' (a gp run's posterior spectrum). digest: see queries/loss_set_contents.sql.
CREATE TABLE loss_set_digests (
    run_id   VARCHAR NOT NULL,
    loss     VARCHAR NOT NULL,
    n        BIGINT  NOT NULL,
    digest   VARCHAR NOT NULL,
    PRIMARY KEY (run_id, loss)
);

-- The loss set an estimate was computed from (NULL: none, e.g. the 2023 bound, never stale).
ALTER TABLE estimates ADD COLUMN loss_set VARCHAR;

-- Version 2 knew five methods; which set each read is fixed for the rows they left.
UPDATE estimates SET loss_set = CASE WHEN method = 'exact' THEN 'spectrum'
                                     WHEN method = 'bound' THEN NULL
                                     ELSE loss END;

-- Version 2's digests (md5 over "id:value" in id order), kept until the store has carried the
-- fresh estimates over; the store drops this table in the same transaction.
CREATE TABLE legacy_loss_set_md5 AS
SELECT run_id, loss, md5(string_agg(hypothesis_id::VARCHAR || ':' || value::VARCHAR, ','
                                    ORDER BY hypothesis_id)) AS digest
FROM (
    UNPIVOT (SELECT run_id, hypothesis_id, test_mse, test_error FROM losses
             WHERE fitted IS NOT FALSE)
    ON test_mse, test_error INTO NAME loss VALUE value
)
GROUP BY run_id, loss
UNION ALL
SELECT run_id, 'spectrum', md5(string_agg(component::VARCHAR || ':' || eigenvalue::VARCHAR || ':'
                                          || residuals::VARCHAR, ',' ORDER BY component))
FROM spectra
GROUP BY run_id;
