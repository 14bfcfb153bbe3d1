-- ibdb store, version 4: the levels of rare-event (splitting) runs, stored raw.

-- One row per run, repeat, level and particle of a subset simulation (ibdb.run.splitting): a
-- particle is a hypothesis whose noise was moved into {loss <= threshold, fitted}. threshold is
-- the level's b (+inf at level 0, whose particles are i.i.d. draws of the space); rho the pCN
-- correlation of its moves (NaN at level 0); chain, parent (the index in the previous level of
-- the chain's seed; -1 at level 0), step (0 = the seed itself) and accepted replay its noise from
-- the run seed; loss is the test MSE; n_evaluations counts the level's loss evaluations.
CREATE TABLE splitting_particles (
    run_id         VARCHAR NOT NULL,
    repeat         INTEGER NOT NULL,
    level          INTEGER NOT NULL,
    particle       BIGINT  NOT NULL,
    threshold      DOUBLE  NOT NULL,
    rho            DOUBLE,
    loss           DOUBLE  NOT NULL,
    fitted         BOOLEAN NOT NULL,
    chain          BIGINT  NOT NULL,
    parent         BIGINT  NOT NULL,
    step           INTEGER NOT NULL,
    accepted       BOOLEAN NOT NULL,
    n_evaluations  BIGINT  NOT NULL,
    shard_sha256   VARCHAR NOT NULL,
    PRIMARY KEY (run_id, repeat, level, particle)
);
