"""`python -m ray_msa.robustness --model MODEL [--data SOURCE]`: a model under missing and noisy inputs.

Protocols (`--protocol`, default all three): `feature_missing` (each token or frame removed with
probability r: [UNK] tokens, zero frames), `modality_missing` (each proper subset of the modalities
present, the rest empty or zero) and `noise` (typing noise on words, Gaussian noise and dropped frames).
Levels 0.0 ... 0.9 are averaged over `--seeds` draws. Each protocol is logged as a `robustness` child run
of the model's study: the metrics per level, the relative robustness (area under the curve of `--metric`),
the effective robustness against the dataset's `lf_dnn` study when there is one (its model is evaluated
under the same draws if it has not been), a CSV and a PNG; `compare` shows the relative robustness.

    python -m ray_msa.robustness --model STUDY_RUN_ID                  # a MOSI study, the embedded data
    python -m ray_msa.robustness --model MTL_STUDY LF_DNN_STUDY --protocol feature_missing
    python -m ray_msa.robustness --model models:/m-... --data DIR --protocol feature_missing --seeds 5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from ray_msa.data.dataset import SPLITS, MSADataset
from ray_msa.data.sources import load_dataset
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import METRIC_SETS
from ray_msa.predict import load_stored, resolve_model
from ray_msa.robustness.evaluate import ROBUSTNESS_METRIC, conditions, curve, evaluate, model_modalities, summary
from ray_msa.robustness.plots import condition_figure, level_figure
from ray_msa.robustness.protocols import LEVELS, PROTOCOLS
from ray_msa.serving.stored import StoredModel
from ray_msa.tables import format_table
from ray_msa.tracking import Tracker, default_tracking_uri

BASELINE_ARCH = "lf_dnn"  # MultiBench's effective robustness is measured against late fusion


def study_of(model_uri: str, client: MlflowClient) -> str:
    """The run id of the study that logged `model_uri` (models:/m-... or runs:/RUN/...)."""
    if model_uri.startswith("models:/"):
        return client.get_logged_model(model_uri.removeprefix("models:/").split("/")[0]).source_run_id
    return model_uri.removeprefix("runs:/").split("/")[0]


def settings_tag(levels: tuple[float, ...], seeds: int, split: str, metric: str, fingerprint: str) -> str:
    """What makes two robustness runs comparable: the draws, the split, the curve's metric and the data."""
    grid = ",".join(f"{v:.1f}" for v in levels)
    return f"levels={grid} seeds={seeds} split={split} metric={metric} data={fingerprint[:16]}"


def logged_baseline(client: MlflowClient, experiment: str, protocol: str, tag: str) -> pd.DataFrame | None:
    """The `lf_dnn` table of an earlier robustness run with the same settings, if one was logged."""
    query = f"tags.role = 'robustness' and tags.arch = '{BASELINE_ARCH}' and tags.protocol = '{protocol}'"
    for found in client.search_runs([experiment], f"{query} and attributes.status = 'FINISHED'"):
        if found.data.tags.get("settings") == tag:
            with tempfile.TemporaryDirectory() as tmp:
                return pd.read_csv(client.download_artifacts(found.info.run_id, f"robustness_{protocol}.csv", tmp))
    return None


def baseline_study(client: MlflowClient, experiment: str) -> mlflow.entities.Run | None:
    """The latest finished `lf_dnn` study of the experiment (the dataset)."""
    query = f"tags.role = 'study' and tags.arch = '{BASELINE_ARCH}' and attributes.status = 'FINISHED'"
    found = client.search_runs([experiment], query, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def run_protocol(
    tracker: Tracker, studies: list, models: list[StoredModel], protocol: str, tag: str, run: dict
) -> None:
    """Evaluate `models` (of `studies`) under one protocol on the same draws, and log each as a `robustness`
    child of its study, with its effective robustness against the `lf_dnn` curve where there is one."""
    dataset = run["dataset"]
    needs_baseline = protocol != "modality_missing" and any(m.trial.arch != BASELINE_ARCH for m in models)
    baseline = None
    if needs_baseline and all(m.trial.arch != BASELINE_ARCH for m in models):
        experiment = studies[0].info.experiment_id
        baseline = logged_baseline(tracker.client, experiment, protocol, tag)
        found = baseline_study(tracker.client, experiment) if baseline is None else None
        if found is not None:
            print(f"effective robustness: the {BASELINE_ARCH} study {found.info.run_id} is evaluated on the same draws")
            studies, models = [*studies, found], [*models, load_stored(found.info.run_id, tracker.uri)]
    chosen = [conditions(protocol, model_modalities(m, dataset), run["levels"], run["seeds"]) for m in models]
    tables = evaluate(models, dataset, run["split"], chosen, run["source"])
    if run["metric"] not in tables[0]:
        raise InputError(run["source"], run["split"], "these samples are not labelled", "pass a labelled --split")
    late_fusion = [(m.trial.train.missing_rate, k) for k, m in enumerate(models) if m.trial.arch == BASELINE_ARCH]
    if late_fusion:  # the reference is late fusion as it is usually trained: without missing inputs, if listed
        baseline = tables[min(late_fusion)[1]]
    for study, stored, table in zip(studies, models, tables):
        log_protocol(
            tracker, study, stored, protocol, tag, run, table, None if stored.trial.arch == BASELINE_ARCH else baseline
        )


def log_protocol(
    tracker: Tracker,
    study: mlflow.entities.Run,
    stored: StoredModel,
    protocol: str,
    tag: str,
    run: dict,
    table: pd.DataFrame,
    baseline: pd.DataFrame | None,
) -> None:
    """One model's protocol as a `robustness` child of `study`: metrics per level (or per condition), the
    scores, the per-seed table as CSV and the figure."""
    metric, arch = run["metric"], stored.trial.arch
    tags = {"role": "robustness", "protocol": protocol, "arch": arch, "settings": tag}
    child = tracker.child(study.info.run_id, f"robustness {protocol}", tags)
    tracker.params(child, {"levels": run["levels"], "seeds": run["seeds"], "split": run["split"], "metric": metric})
    tracker.params(child, {"data_source": run["source"], "trained_missing_rate": stored.trial.train.missing_rate})
    means = table.drop(columns=["protocol", "condition", "level", "seed"]).groupby(table["condition"], sort=False)
    means = means.mean()
    scores: dict[str, float] = {}
    title = f"{arch} ({study.info.run_id[:8]}), {protocol.replace('_', ' ')}, {run['split']} split"
    if protocol == "modality_missing":
        for condition, row in means.iterrows():
            tracker.metrics(child, {f"{k}_present_{condition.replace('+', '_')}": v for k, v in row.items()})
        figure = condition_figure(curve(table, metric), metric, title)
    else:
        for k, (_, row) in enumerate(means.iterrows()):  # step: the level's index (level x 10 for 0.0 ... 0.9)
            tracker.metrics(child, row.to_dict(), step=k)
        scores = summary(table, metric, baseline)
        tracker.metrics(child, scores)
        figure = level_figure({arch: curve(table, metric)}, metric, title)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"robustness_{protocol}.csv"
        table.to_csv(path, index=False, float_format="%.9g")
        tracker.client.log_artifact(child, str(path))
    tracker.client.log_figure(child, figure, f"robustness_{protocol}.png")
    tracker.finish(child)
    print(f"\n{arch}, study {study.info.run_id}", end="")
    _print(protocol, table, metric, scores, child)


def _print(protocol: str, table: pd.DataFrame, metric: str, scores: dict[str, float], child: str) -> None:
    rows = curve(table, metric)
    body = [[r["condition"], f"{r['mean']:.4f}", f"{r['std']:.4f}", str(int(r["count"]))] for _, r in rows.iterrows()]
    print(f"\n{protocol}: {metric} (mean and std over seeds)")
    print(format_table(["condition", metric, "std", "seeds"], body, "text"))
    for name, value in scores.items():
        print(f"{name}: {value:.4f}")
    print(f"MLflow: robustness run {child}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.robustness", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model",
        nargs="+",
        required=True,
        help="study run ids, models:/m-... or runs:/RUN/model of one dataset; several are scored on the same draws",
    )
    parser.add_argument("--data", help="what the readers accept for the model's dataset (default: the embedded copy)")
    parser.add_argument("--protocol", nargs="+", choices=PROTOCOLS, default=list(PROTOCOLS), help="default: all")
    parser.add_argument("--levels", nargs="+", type=float, default=list(LEVELS), help="default 0.0 0.1 ... 0.9")
    parser.add_argument("--seeds", type=int, default=3, help="draws averaged per level (default 3)")
    parser.add_argument("--split", choices=SPLITS, default="test", help="default test")
    parser.add_argument("--metric", help="the curve's metric (default: Non0_Acc2, Mult_acc_2, Mean_F1 or Acc)")
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"), help="default sqlite under ./mlruns"
    )
    return parser.parse_args(argv)


def _checked(args: argparse.Namespace, dataset: MSADataset) -> tuple[tuple[float, ...], str]:
    levels = tuple(round(v, 6) for v in args.levels)
    if args.seeds < 1:
        raise InputError("--seeds", str(args.seeds), "too small", "use --seeds 1 or more")
    if levels[0] != 0.0 or any(not 0 <= v < 1 for v in levels) or list(levels) != sorted(set(levels)):
        raise InputError("--levels", " ".join(map(str, levels)), "not increasing from 0 below 1", "e.g. 0 0.1 ... 0.9")
    metric = args.metric or ROBUSTNESS_METRIC[dataset.metric_set]
    known = METRIC_SETS[dataset.metric_set]
    if metric not in known:
        raise InputError("--metric", metric, f"not a metric of {dataset.name}", f"use one of {', '.join(known)}")
    return levels, metric


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tracker = Tracker(args.tracking_uri or default_tracking_uri())
    models = [load_stored(model, tracker.uri) for model in args.model]
    names = {m.record["dataset"] for m in models}
    if len(names) > 1:
        raise InputError(
            "--model",
            " ".join(args.model),
            f"models of different datasets ({', '.join(sorted(names))})",
            "pass models of one dataset",
        )
    studies = [tracker.client.get_run(study_of(resolve_model(m, tracker.uri), tracker.client)) for m in args.model]
    dataset = load_dataset(names.pop(), args.data)
    levels, metric = _checked(args, dataset)
    tag = settings_tag(levels, args.seeds, args.split, metric, dataset.fingerprint())
    run = {"dataset": dataset, "metric": metric, "levels": levels, "seeds": args.seeds}
    run |= {"split": args.split, "source": args.data or dataset.source}
    for protocol in args.protocol:
        run_protocol(tracker, studies, models, protocol, tag, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
