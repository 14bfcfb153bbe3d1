"""Print the estimator comparison on digits as a Markdown table.

Runs examples/estimators_on_digits.yaml (if not stored yet), then for each run estimates at eps
= q x {1, 1/2, 1/5, 1/10, 1/20, 1/50, 1/100}, with q the run's 0.1 % sample quantile of the test
MSE, by every method, from the stored samples.

Usage: python examples/estimator_table.py [--db estimators.duckdb]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ibdb.api import Ibdb

FACTORS = (1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
METHODS = ["exact", "ncx2", "paper", "empirical"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="estimators.duckdb")
    args = parser.parse_args()
    api = Ibdb(args.db)
    spec = Path(__file__).with_name("estimators_on_digits.yaml")
    report = api.run(spec, estimate=False)
    for planned in report.planned:
        _, ((q,),) = api.sql("SELECT quantile_cont(test_mse, 0.001) FROM losses "
                             f"WHERE run_id = '{planned.run_id}'")
        api.estimate(run_ids=[planned.run_id], methods=METHODS, eps=[q * f for f in FACTORS])
        _, rows = api.sql(
            "SELECT method, eps, bits, lower_bits, upper_bits, bound, diagnostics "
            f"FROM ib_estimates WHERE run_id = '{planned.run_id}' AND method IN "
            "('exact', 'ncx2', 'paper', 'empirical') AND loss = 'test_mse' "
            f"AND eps <= {q} * 1.000001 ORDER BY eps DESC, method")
        cells: dict[float, dict[str, str]] = {}
        gof = ""
        for method, eps, bits, lo, hi, bound, diag in rows:
            diag = json.loads(diag)
            text = f"{bits:.4g}"
            if bound == "lower":
                text = f">= {bits:.3g}"
            elif lo is not None and hi is not None:
                text += f" [{lo:.4g}, {hi:.4g}]"
            if method == "paper" and diag.get("approximation") != "scipy-logcdf":
                text += " (Sankaran)"
            if method == "ncx2":
                gof = (f"KS {diag['ks_statistic']:.3f}, nominal p {diag['ks_pvalue_nominal']:.2g}, "
                       f"AD {diag['ad_statistic']:.2f}")
            cells.setdefault(eps, {})[method] = text
        print(f"\n### {planned.spec.task.name}: n_train {planned.spec.task.n_train}, n_test "
              f"{planned.spec.task.n_test}, 10^4 hypotheses; 0.1% quantile q = {q:.4f}; "
              f"ncx2 fit: {gof}\n")
        print("| eps / q | eps (test MSE) | " + " | ".join(f"{m} (bits)" for m in METHODS) + " |")
        print("|" + "---|" * (len(METHODS) + 2))
        for eps in sorted(cells, reverse=True):
            line = [f"{eps / q:.2g}", f"{eps:.5f}"] + [cells[eps].get(m, "-") for m in METHODS]
            print("| " + " | ".join(line) + " |")


if __name__ == "__main__":
    main()
