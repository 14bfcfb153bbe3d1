"""The store's per-hypothesis columns, defined once and without torch: the losses.

Runners return one array per loss column (``runners/base.py`` reads the dtypes here), ingest
checks shards against the SQL types here, and a test checks them against ``DESCRIBE`` of the tables
that ``schemas/`` creates.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossColumn:
    dtype: str  # numpy dtype of the array a runner's `sample` returns
    sql_type: str  # the column's type in the `losses` table and in shard files
    required: bool  # every runner returns it; optional ones are NULL in the store when absent
    estimable: bool  # an estimate can be asked of it (`ibdb estimate --loss NAME`)
    description: str


# What runners record per hypothesis; the store's `losses` table has one column each, after
# run_id, hypothesis_id and seed, and before shard_sha256.
LOSS_COLUMNS: dict[str, LossColumn] = {
    "test_mse": LossColumn("float64", "DOUBLE", True, True,
                           "mean squared error over test points and outputs against one-hot "
                           "targets"),
    "test_error": LossColumn("float64", "DOUBLE", True, True,
                             "fraction of test points whose largest output is not the true "
                             "class (0-1 error)"),
    "train_mse": LossColumn("float64", "DOUBLE", False, False,
                            "the same mean squared error on the training set"),
    "train_error": LossColumn("float64", "DOUBLE", False, False,
                              "the 0-1 error on the training set"),
    "epochs": LossColumn("int64", "INTEGER", False, False, "epochs the network trained"),
    "fitted": LossColumn("bool", "BOOLEAN", False, False,
                         "whether the network met the space's fit criterion; runners whose "
                         "hypotheses fit by construction (gp) omit it"),
}

# The losses an estimate can be asked for, in the order help texts list them.
LOSS_NAMES: tuple[str, ...] = tuple(n for n, c in LOSS_COLUMNS.items() if c.estimable)
REQUIRED_LOSSES: tuple[str, ...] = tuple(n for n, c in LOSS_COLUMNS.items() if c.required)
OPTIONAL_LOSSES: tuple[str, ...] = tuple(n for n, c in LOSS_COLUMNS.items() if not c.required)

# Identifying columns of every loss row, before the loss columns.
LOSS_KEY_COLUMNS: dict[str, str] = {"run_id": "VARCHAR", "hypothesis_id": "BIGINT",
                                    "seed": "BIGINT"}

LOSS_UNITS: dict[str, str] = {
    "test_mse": "test MSE (mean squared error against one-hot targets)",
    "test_error": "test 0-1 error",
}
