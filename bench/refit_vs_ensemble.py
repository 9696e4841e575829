"""`--final refit` against `--final ensemble` on the same study: the study's own seed runs (or a retest's) of one kind
against a `retest --final ensemble` (or refit) of it, same seeds, same test split. Prints each metric's test mean ± std
[95% CI] over the seeds of both, and a paired permutation test on `--metric` (default MAE) of the seed-averaged
predictions, sample by sample, as `compare` pairs two architectures.

    python -m ray_msa.tune mosi --trials 1                        # prints: MLflow: study run STUDY
    python -m ray_msa.retest STUDY --final ensemble               # prints: MLflow: retest run RETEST
    python bench/refit_vs_ensemble.py STUDY RETEST [--tracking-uri URI]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

from ray_msa.compare import seed_predictions
from ray_msa.metrics import METRICS, metric_function
from ray_msa.statistics import paired_permutation_test, t_interval
from ray_msa.tracking import PARENT


def seed_metrics(client: MlflowClient, run_id: str) -> dict[str, list[float]]:
    """Each test metric over the run's final seed runs, in seed order."""
    run = client.get_run(run_id)
    query = f"tags.`{PARENT}` = '{run_id}' and tags.role = 'final' and attributes.status = 'FINISHED'"
    finals = sorted(client.search_runs([run.info.experiment_id], query), key=lambda r: int(r.data.tags["seed"]))
    return {m: [f.data.metrics[f"test_{m}"] for f in finals if f"test_{m}" in f.data.metrics] for m in METRICS}


def final_kind(client: MlflowClient, run) -> str:
    """`refit` or `ensemble`: a retest records it as a parameter, a study in its model_spec.json."""
    if "final" in run.data.params:
        return run.data.params["final"]
    with tempfile.TemporaryDirectory() as tmp:
        spec = json.loads(Path(client.download_artifacts(run.info.run_id, "model_spec.json", tmp)).read_text())
    return spec["config"]["train"]["final"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", help="a study or retest run id")
    parser.add_argument("second", help="another run id of the same study's configuration")
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns/mlflow.db")
    parser.add_argument("--metric", default="MAE", help="the paired test's metric (default MAE)")
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    runs = {name: client.get_run(name) for name in (args.first, args.second)}
    kinds = {name: final_kind(client, run) for name, run in runs.items()}
    print(f"{'metric':10s}" + "".join(f"{kinds[n] + ' ' + n[:8]:>36s}" for n in runs))
    per_run = {name: seed_metrics(client, name) for name in runs}
    for metric in METRICS:
        cells = []
        for name in runs:
            values = per_run[name][metric]
            mean, std, low, high = t_interval(values)
            cells.append(f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]")
        print(f"{metric:10s}" + "".join(f"{c:>36s}" for c in cells))
    rows = [{"experiment_id": runs[n].info.experiment_id, "run_id": n} for n in runs]
    (ids_a, labels, pred_a), (ids_b, _, pred_b) = (seed_predictions(client, row) for row in rows)
    assert list(ids_a) == list(ids_b), "the two runs predicted different test samples"
    difference, p_value = paired_permutation_test(labels, pred_a, pred_b, metric_function("mmsa", args.metric))
    print(
        f"paired permutation test on the seed-averaged predictions ({len(labels)} test samples, 9,999 resamples): "
        f"{args.metric} {kinds[args.first]} - {kinds[args.second]} = {difference:+.4f}, p = {p_value:.4g}"
    )


if __name__ == "__main__":
    main()
