"""`python -m ray_msa.compare`: one table of every architecture x dataset from MLflow, and which
differences between architectures are significant.

For each (architecture, dataset) the latest finished study is shown: the best trial's fold mean ±
std of each metric, the test metrics of its retrained models (mean ± std over the seeds with the 95%
t-interval when the study retrained several), trials run and wall time. Then, per dataset, every pair
of architectures is compared on the study's objective (MAE, Mean_F1, Acc) with a paired permutation
test over the test samples of their seed-averaged predictions (each seed run keeps its
`test_predictions.csv`); the p-values are Holm-corrected over the dataset's pairs and a difference
significant at 0.05 is marked `*`.

    python -m ray_msa.compare                      # all datasets, text tables
    python -m ray_msa.compare --dataset mosi --format md --out results.md --plot mosi.png
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import ALL_METRICS, DEFAULT_METRIC, metric_function, mode_of
from ray_msa.statistics import holm, paired_permutation_test
from ray_msa.tables import format_table
from ray_msa.tracking import PARENT, Tracker, git_commit

EXPERIMENT_PREFIX = "ray_msa-"
METRIC_SET_OF = {"sims": "sims", "iemocap": "emotions", "mvsa": "classes"}  # studies before the metric_set tag
ALPHA = 0.05
AREA = "relative_robustness_"  # a robustness run's area under its metric-vs-missing-rate curve


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
            "experiment_id": run.info.experiment_id,
            "seeds": int(m.get("final_seeds", 1)),
            "metric": run.data.params.get("metric", "?"),
            "metric_set": run.data.tags.get("metric_set") or METRIC_SET_OF.get(key[1], "mmsa"),
        }
        for name in (n for n in ALL_METRICS if f"test_{n}" in m or f"cv_mean_{n}" in m):
            row[f"cv_{name}"] = (m.get(f"cv_mean_{name}", math.nan), m.get(f"cv_std_{name}", math.nan))
            row[f"test_{name}"] = m.get(f"test_{name}", math.nan)
            row[f"test_spread_{name}"] = tuple(
                m.get(f"test_{part}_{name}", math.nan) for part in ("std", "ci_low", "ci_high")
            )
        row["robustness"] = robustness_of(client, run)
        rows.append(row)
    return sorted(rows, key=lambda r: (r["dataset"], r["arch"]))


def robustness_of(client: MlflowClient, study) -> str:
    """The relative robustness under random feature missing of the study's latest `robustness` run, as
    "<metric> <area>" ('' when it has none: `python -m ray_msa.robustness` logs one)."""
    query = (
        f"tags.`{PARENT}` = '{study.info.run_id}' and tags.role = 'robustness' and tags.protocol = 'feature_missing'"
        " and attributes.status = 'FINISHED'"
    )
    newest = ["attributes.start_time DESC"]
    found = client.search_runs([study.info.experiment_id], query, order_by=newest, max_results=1)
    areas = {k: v for k, v in (found[0].data.metrics.items() if found else ()) if k.startswith(AREA)}
    return " ".join(f"{k[len(AREA) :]} {v:.4f}" for k, v in areas.items())


def _test_cell(row: dict, name: str) -> str:
    mean = row.get(f"test_{name}", math.nan)
    std, low, high = row.get(f"test_spread_{name}", (math.nan,) * 3)
    if row.get("seeds", 1) < 2 or math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]"


def render(rows: list[dict], fmt: str, metrics: tuple[str, ...] | None = None) -> str:
    """Rows of different datasets may have different metrics (MOSI vs SIMS vs IEMOCAP): show the union.
    A study tested over several seeds shows mean ± std [95% CI] in its test cells."""
    metrics = metrics or tuple(n for n in ALL_METRICS if any(f"test_{n}" in r for r in rows))
    rows = [
        {**{f"cv_{n}": (math.nan, math.nan) for n in metrics}, **{f"test_{n}": math.nan for n in metrics}, **r}
        for r in rows
    ]
    header = (
        ["arch", "dataset", "folds"]
        + [f"CV {n}" for n in metrics]
        + [f"test {n}" for n in metrics]
        + ["seeds", "trials", "wall min"]
        + (["robustness (feature missing, AUC)"] if any(r.get("robustness") for r in rows) else [])
    )
    body = [
        [r["arch"], r["dataset"], str(r["folds"])]
        + [f"{r[f'cv_{n}'][0]:.4f} ± {r[f'cv_{n}'][1]:.4f}" for n in metrics]
        + [_test_cell(r, n) for n in metrics]
        + [str(r.get("seeds", 1)), str(r["trials"]), f"{r['wall_min']:.1f}"]
        + ([r.get("robustness") or "-"] if any(r.get("robustness") for r in rows) else [])
        for r in rows
    ]
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out).writerows([header, *body])
        return out.getvalue()
    return format_table(header, body, fmt) + "\n"


def seed_predictions(client: MlflowClient, row: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ids, labels, predictions averaged over the study's seed runs), or None when its seed runs
    kept no predictions (a study from before they were logged)."""
    finals = client.search_runs(
        [row["experiment_id"]],
        f"tags.`{PARENT}` = '{row['run_id']}' and tags.role = 'final' and attributes.status = 'FINISHED'",
        max_results=1000,
    )
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in sorted(finals, key=lambda r: int(r.data.tags.get("seed", 0))):
            names = {a.path for a in client.list_artifacts(run.info.run_id)}
            if "test_predictions.csv" in names:
                path = client.download_artifacts(run.info.run_id, "test_predictions.csv", tmp)
                tables.append(pd.read_csv(path, dtype={"id": str}))
    if not tables:
        return None
    ids = tables[0]["id"].to_numpy()
    if any(not np.array_equal(t["id"].to_numpy(), ids) for t in tables):
        raise ValueError(f"study {row['run_id']}: its seed runs predicted different test samples")
    labels = tables[0][[c for c in tables[0] if c.startswith("label")]].to_numpy()
    predictions = np.mean([t[[c for c in t if c.startswith("prediction")]].to_numpy() for t in tables], axis=0)
    return ids, _squeeze(labels), _squeeze(predictions)


def _squeeze(values: np.ndarray) -> np.ndarray:
    return values[:, 0] if values.shape[1] == 1 else values


def pairwise_tests(client: MlflowClient, rows: list[dict], n_resamples: int = 9999, seed: int = 0) -> list[dict]:
    """Per dataset, every pair of architectures on the objective of their studies: the difference
    (first - second) of their seed-averaged test predictions' metric, the paired permutation test's
    p-value and its Holm correction over the dataset's pairs. Pairs that cannot be paired (another
    test split, no predictions) are listed with the reason instead of a p-value."""
    out = []
    for dataset, group in itertools.groupby(rows, key=lambda r: r["dataset"]):
        group = list(group)
        predictions = {r["arch"]: seed_predictions(client, r) for r in group}
        tests = []
        for a, b in itertools.combinations(group, 2):
            test = {"dataset": dataset, "first": a["arch"], "second": b["arch"], "metric": a["metric"]}
            left, right = predictions[a["arch"]], predictions[b["arch"]]
            if a["metric"] != b["metric"] or a["metric_set"] != b["metric_set"]:
                test["note"] = f"different objectives ({a['metric']}, {b['metric']})"
            elif left is None or right is None:
                test["note"] = "no test predictions (a study from before seed runs kept them)"
            elif not (np.array_equal(left[0], right[0]) and np.allclose(left[1], right[1])):
                test["note"] = "different test samples or labels (another data version)"
            elif (np.asarray(left[1]) < 0).all():
                test["note"] = "unlabelled test split (MVSA's posts to tag)"
            else:
                metric = metric_function(a["metric_set"], a["metric"])
                test["difference"], test["p"] = paired_permutation_test(
                    left[1], left[2], right[2], metric, n_resamples, seed
                )
            tests.append(test)
        adjusted = holm([t.get("p", math.nan) for t in tests])
        for test, p_holm in zip(tests, adjusted):
            test["p_holm"] = p_holm
            test["significant"] = bool(p_holm <= ALPHA)
            better = (
                test.get("difference", 0.0) < 0 if mode_of(test["metric"]) == "min" else test.get("difference", 0.0) > 0
            )
            test["better"] = test["first"] if better else test["second"]
        out.extend(tests)
    return out


def render_tests(tests: list[dict], fmt: str) -> str:
    header = ["dataset", "first", "second", "metric", "first - second", "p", "p (Holm)", f"at {ALPHA}"]
    body = []
    for t in tests:
        if "p" not in t:
            body.append([t["dataset"], t["first"], t["second"], t["metric"], "-", "-", "-", t["note"]])
            continue
        mark = f"* {t['better']} better" if t["significant"] else "not significant"
        cells = [f"{t['difference']:+.4f}", f"{t['p']:.4f}", f"{t['p_holm']:.4f}", mark]
        body.append([t["dataset"], t["first"], t["second"], t["metric"], *cells])
    return format_table(header, body, fmt) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    """Per dataset, each architecture's test objective with its 95% interval over seeds."""
    import matplotlib  # heavy: only --plot draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(1.2 + 1.0 * max(len(rows), 3), 3.6), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        group = [r for r in rows if r["dataset"] == dataset]
        metric = group[0]["metric"] if group[0]["metric"] != "?" else DEFAULT_METRIC[group[0]["metric_set"]]
        means = np.array([r.get(f"test_{metric}", math.nan) for r in group])
        spread = np.array([r.get(f"test_spread_{metric}", (math.nan,) * 3) for r in group])
        errors = np.nan_to_num(np.stack([means - spread[:, 1], spread[:, 2] - means]), nan=0.0)
        ax.errorbar(range(len(group)), means, yerr=errors, fmt="o", capsize=4)
        ax.set_xticks(range(len(group)), [r["arch"] for r in group], rotation=30)
        ax.set_title(f"{dataset}: test {metric} (95% CI over seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def log_comparison(tracking_uri: str, table: str, tests_table: str, plot_path: Path | None) -> str:
    """A `comparison` run (experiment `ray_msa-comparisons`) holding the tables and the plot."""
    tracker = Tracker(tracking_uri)
    run_id = tracker.start(
        tracker.experiment(f"{EXPERIMENT_PREFIX}comparisons"),
        "compare",
        {"role": "comparison", "mlflow.source.git.commit": git_commit()},
    )
    tracker.client.log_text(run_id, table, "comparison.md")
    tracker.client.log_text(run_id, tests_table, "significance.md")
    if plot_path is not None:
        tracker.client.log_artifact(run_id, str(plot_path))
    tracker.finish(run_id)
    return run_id


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
    parser.add_argument("--out", help="write the tables to this file as well")
    parser.add_argument("--plot", help="write a PNG of each architecture's test objective with its 95%% CI")
    parser.add_argument("--resamples", type=int, default=9999, help="permutations per paired test (default 9999)")
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
    tests_table = render_tests(pairwise_tests(MlflowClient(uri), rows, args.resamples), args.format)
    text = table + "\n" + tests_table
    sys.stdout.write(text)
    if args.out:
        Path(args.out).write_text(text)
    plot_path = None
    if args.plot:
        plot_path = Path(args.plot)
        plot(rows, plot_path)
    run_id = log_comparison(uri, table, tests_table, plot_path)
    print(f"MLflow: comparison run {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
