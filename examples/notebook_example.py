"""The README's "Python API (notebooks)" example as a script: runs, losses, the IB curve, a
recomputed estimate and SQL with ib_fit, from a store that `ibdb quickstart` (or any run) made.

    python examples/notebook_example.py [STORE]      # default: ibdb.duckdb
"""

from __future__ import annotations

import sys

from ibdb.api import Ibdb


def main(db_path: str = "ibdb.duckdb") -> None:
    db = Ibdb(db_path)
    runs = db.runs(frame="pandas")  # one row per run (the run_summary view)
    print(runs[["run_id", "experiment", "task_name", "space_name", "n_stored"]])
    run_id = runs["run_id"][0]

    losses = db.losses(run_id)  # a pyarrow Table, one row per hypothesis
    print(losses.num_rows, "losses; mean test MSE",
          losses.column("test_mse").to_pandas().mean())

    curve = db.ib_curve(run_id, frame="pandas")  # eps, bits, interval per method
    print(curve[["method", "eps", "bits", "lower_bits", "upper_bits", "bound"]])
    print(db.provenance(run_id, frame="pandas")[["run_id", "ibdb_version", "device", "host"]])

    again = db.recompute(0.5, run_ids=run_id, methods=["ncx2"], frame="pandas")  # stored too
    print(again[["method", "eps", "bits"]])

    con = db.connect()  # read-only DuckDB, with the views and the ib_* functions
    print(con.sql("SELECT run_id, ib_fit(list(test_mse ORDER BY hypothesis_id), 0.5, 'ncx2')"
                  ".bits AS bits FROM losses WHERE fitted IS NOT FALSE GROUP BY run_id").df())
    con.close()  # before writing to the store from this process again


if __name__ == "__main__":
    main(*sys.argv[1:2])
