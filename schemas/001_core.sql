-- ibdb store, version 1: every raw sample with its provenance, plus estimates computed from them.
-- Applied once per store, in one transaction, by ibdb.store.database (files run in name order).

CREATE TABLE ibdb_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);

-- One row per run: the spec as written and the identity hashed into run_id.
CREATE TABLE specs (
    run_id        VARCHAR PRIMARY KEY,
    experiment    VARCHAR NOT NULL,
    task_name     VARCHAR NOT NULL,
    space_name    VARCHAR NOT NULL,
    budget_name   VARCHAR NOT NULL,
    space_kind    VARCHAR NOT NULL,
    runner        VARCHAR NOT NULL,      -- kind/version, e.g. gp/1
    n_hypotheses  BIGINT  NOT NULL,      -- as last requested
    eps           DOUBLE[] NOT NULL,     -- the task's target errors on test MSE
    spec          JSON    NOT NULL,
    identity      JSON    NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- One row per run: what the runner found and where and how it ran (latest execution).
CREATE TABLE runs (
    run_id            VARCHAR PRIMARY KEY,
    n_train           INTEGER NOT NULL,
    n_test            INTEGER NOT NULL,
    n_outputs         INTEGER NOT NULL,
    data_fingerprint  VARCHAR NOT NULL,
    task_statistics   JSON,              -- n, intrinsic dimension, radius, separation, classes
    runner_info       JSON    NOT NULL,
    ibdb_version      VARCHAR NOT NULL,
    torch_version     VARCHAR NOT NULL,
    duckdb_version    VARCHAR NOT NULL,
    device            VARCHAR NOT NULL,
    host              VARCHAR NOT NULL,
    started_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ,
    wall_seconds      DOUBLE
);

-- One row per ingested shard file: the ledger that makes ingest idempotent.
CREATE TABLE shards (
    sha256           VARCHAR PRIMARY KEY,
    run_id           VARCHAR NOT NULL,
    kind             VARCHAR NOT NULL,   -- losses | spectrum
    path             VARCHAR NOT NULL,
    n_rows           BIGINT  NOT NULL,
    first_hypothesis BIGINT,
    last_hypothesis  BIGINT,
    provenance       JSON,
    ingested_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

-- One row per hypothesis: its raw losses (test_mse: mean squared error over test points and
-- outputs against one-hot targets; test_error: 0-1 error rate on the test points; train_*: the
-- same on the training set). Runners that fit by construction (gp) leave train_*, epochs and
-- fitted NULL; trained networks record whether they met the spec's fit criterion.
-- (Version 2, 002_losses_without_key.sql, rebuilds this table without its primary key.)
CREATE TABLE losses (
    run_id         VARCHAR NOT NULL,
    hypothesis_id  BIGINT  NOT NULL,
    seed           BIGINT  NOT NULL,
    test_mse       DOUBLE,
    test_error     DOUBLE,
    train_mse      DOUBLE,
    train_error    DOUBLE,
    epochs         INTEGER,
    fitted         BOOLEAN,
    shard_sha256   VARCHAR NOT NULL,
    PRIMARY KEY (run_id, hypothesis_id)
);

-- One row per run and eigen-direction of the posterior covariance (gp runs): the loss's exact
-- distribution. residuals[c] = (Q^T (mu - y))_jc for output c.
CREATE TABLE spectra (
    run_id      VARCHAR NOT NULL,
    component   INTEGER NOT NULL,
    eigenvalue  DOUBLE  NOT NULL,
    residuals   DOUBLE[] NOT NULL,
    PRIMARY KEY (run_id, component)
);

-- One row per run, loss column, method and eps: an inductive-bias estimate in bits.
CREATE TABLE estimates (
    run_id          VARCHAR NOT NULL,
    loss            VARCHAR NOT NULL,
    method          VARCHAR NOT NULL,
    method_version  VARCHAR NOT NULL,
    eps             DOUBLE  NOT NULL,
    bits            DOUBLE,
    lower_bits      DOUBLE,
    upper_bits      DOUBLE,
    bound           VARCHAR NOT NULL,    -- point | lower
    n               BIGINT  NOT NULL,
    params          JSON,
    diagnostics     JSON,
    loss_set_hash   VARCHAR NOT NULL,
    computed_at     TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (run_id, loss, method, eps)
);
