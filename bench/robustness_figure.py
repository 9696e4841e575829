"""The README's robustness figure and table from the `robustness` runs of the given studies.

    python bench/robustness_figure.py --tracking-uri sqlite:///mlruns/robustness.db --out DIR STUDY_RUN_ID ...

Writes DIR/feature_missing.png (every study's curve on one axis, a band of one std over seeds) and prints a
Markdown table: each study's clean metric, relative and effective robustness under feature missing, and its
metric with each set of modalities present.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from ray_msa.robustness.evaluate import curve
from ray_msa.robustness.plots import level_figure
from ray_msa.robustness.protocols import modality_conditions
from ray_msa.tables import format_table
from ray_msa.tracking import PARENT


def robustness_runs(client: MlflowClient, study_id: str) -> dict[str, object]:
    """The study's latest robustness run per protocol."""
    study = client.get_run(study_id)
    query = f"tags.`{PARENT}` = '{study_id}' and tags.role = 'robustness' and attributes.status = 'FINISHED'"
    found = client.search_runs([study.info.experiment_id], query, order_by=["attributes.start_time DESC"])
    latest: dict[str, object] = {}
    for run in found:
        latest.setdefault(run.data.tags["protocol"], run)
    return latest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    client = MlflowClient(args.tracking_uri)
    curves, rows, subsets = {}, [], []
    for study_id in args.studies:
        runs = robustness_runs(client, study_id)
        missing = runs["feature_missing"]
        metric = missing.data.params["metric"]
        label = f"{missing.data.tags['arch']}, missing_rate {float(missing.data.params['trained_missing_rate']):g}"
        with tempfile.TemporaryDirectory() as tmp:
            table = pd.read_csv(client.download_artifacts(missing.info.run_id, "robustness_feature_missing.csv", tmp))
        curves[label] = curve(table, metric)
        m = missing.data.metrics
        effective = m.get(f"effective_robustness_{metric}")
        row = [label, f"{m[f'clean_{metric}']:.4f}", f"{m[f'relative_robustness_{metric}']:.4f}"]
        row += ["-" if effective is None else f"{effective:+.4f}", f"{curves[label]['mean'].iloc[-1]:.4f}"]
        if "modality_missing" in runs:
            present = runs["modality_missing"].data.metrics
            order = ["_".join(c) for c in modality_conditions(("text", "audio", "vision"))]
            names = [k for k in present if k.startswith(f"{metric}_present_")]
            names.sort(key=lambda k: order.index(k.split("_present_")[1]) if k.split("_present_")[1] in order else 99)
            subsets = subsets or names
            row += [f"{present[k]:.4f}" for k in subsets]
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    figure = level_figure(curves, metric, f"random feature missing on MOSI test: {metric}, mean ± std over seeds")
    figure.savefig(out / "feature_missing.png", dpi=130)
    header = ["model", f"clean {metric}", "relative robustness (AUC)", "effective vs lf_dnn", f"{metric} at r=0.9"]
    header += [k.split("_present_")[1].replace("_", "+") + " only" for k in subsets]
    print(format_table(header, rows, "md"))


if __name__ == "__main__":
    main()
