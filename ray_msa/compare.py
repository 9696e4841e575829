"""`python -m ray_msa.compare`: one table of every architecture x dataset from MLflow.

For each (architecture, dataset) the latest finished study is shown: the best trial's
fold mean ± std of each metric, the test metrics of its retrained model, trials run
and wall time.

    python -m ray_msa.compare                      # all datasets, text table
    python -m ray_msa.compare --dataset mosi --format md --out results.md
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from pathlib import Path

from mlflow.tracking import MlflowClient

from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import ALL_METRICS

EXPERIMENT_PREFIX = "ray_msa-"


def collect(tracking_uri: str, dataset: str | None = None) -> list[dict]:
    """One row per (architecture, dataset): the latest finished study run."""
    client = MlflowClient(tracking_uri)
    experiments = [e for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX)]
    if dataset:
        experiments = [e for e in experiments if e.name == EXPERIMENT_PREFIX + dataset]
    if not experiments:
        return []
    studies = client.search_runs(
        [e.experiment_id for e in experiments],
        "tags.role = 'study' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    rows, seen = [], set()
    for run in studies:
        key = (run.data.tags.get("arch", "?"), run.data.tags.get("dataset", "?"))
        if key in seen:
            continue
        seen.add(key)
        m = run.data.metrics
        row = {
            "arch": key[0],
            "dataset": key[1],
            "trials": int(m.get("trials_run", 0)),
            "wall_min": m.get("wall_time_s", math.nan) / 60,
            "folds": run.data.params.get("folds", "?"),
            "run_id": run.info.run_id,
        }
        for name in (n for n in ALL_METRICS if f"test_{n}" in m or f"cv_mean_{n}" in m):
            row[f"cv_{name}"] = (m.get(f"cv_mean_{name}", math.nan), m.get(f"cv_std_{name}", math.nan))
            row[f"test_{name}"] = m.get(f"test_{name}", math.nan)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["arch"]))


def render(rows: list[dict], fmt: str, metrics: tuple[str, ...] | None = None) -> str:
    """Rows of different datasets may have different metrics (MOSI vs SIMS vs IEMOCAP): show the union."""
    metrics = metrics or tuple(n for n in ALL_METRICS if any(f"test_{n}" in r for r in rows))
    rows = [
        {**{f"cv_{n}": (math.nan, math.nan) for n in metrics}, **{f"test_{n}": math.nan for n in metrics}, **r}
        for r in rows
    ]
    header = (
        ["arch", "dataset", "folds"]
        + [f"CV {n}" for n in metrics]
        + [f"test {n}" for n in metrics]
        + ["trials", "wall min"]
    )
    body = [
        [r["arch"], r["dataset"], r["folds"]]
        + [f"{r[f'cv_{n}'][0]:.4f} ± {r[f'cv_{n}'][1]:.4f}" for n in metrics]
        + [f"{r[f'test_{n}']:.4f}" for n in metrics]
        + [str(r["trials"]), f"{r['wall_min']:.1f}"]
        for r in rows
    ]
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerows([header, *body])
        return out.getvalue()
    if fmt == "md":
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    return "\n".join("  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [header, *body]) + "\n"


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", help="only this dataset (default: all)")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"), help="default sqlite under ./mlruns"
    )
    parser.add_argument("--format", choices=("text", "md", "csv"), default="text")
    parser.add_argument("--out", help="write the table to this file as well")
    args = parser.parse_args(argv)
    uri = args.tracking_uri
    if uri is None:
        db = Path("mlruns/mlflow.db").resolve()
        if not db.is_file():
            raise InputError(
                db,
                "tracking store",
                "no MLflow database here",
                "run from the directory of your studies or pass --tracking-uri",
            )
        uri = f"sqlite:///{db}"
    rows = collect(uri, args.dataset)
    if not rows:
        raise InputError(
            uri,
            "studies",
            f"no finished study{' for ' + args.dataset if args.dataset else ''}",
            "run python -m ray_msa.tune DATASET first",
        )
    table = render(rows, args.format)
    sys.stdout.write(table)
    if args.out:
        Path(args.out).write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
