"""`python -m ray_msa.ablate DATASET`: the same configuration in each ablation variant its
architecture declares (image_text: image+text, image only, text only), each a K-fold
cross-validation on the labelled data; prints the fold mean ± std of the main metrics.

The configuration is a study's resolved one, read back typed from its `model_spec.json`:
`--config-run RUN` (a study run id), else the latest finished study on DATASET in the
tracking store, else the search space's `start:` configuration. Its text model and text
mode come with it. Each variant is recorded in MLflow as a child of one ablation run.
"""

from __future__ import annotations

import argparse
import os
import sys

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_msa.data.sources import load_dataset, task_of
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import DEFAULT_METRIC, METRIC_SETS
from ray_msa.models import default_arch
from ray_msa.search_space import load_space
from ray_msa.tracking import Tracker, default_tracking_uri
from ray_msa.train.loop import WorkerContext, run_cross_validation
from ray_msa.trial import RunContext, TrialConfig


def study_config(tracking_uri: str, dataset: str, run_id: str | None) -> tuple[TrialConfig | None, str]:
    """The resolved configuration of study `run_id` (else of the latest finished study on
    `dataset`), and where it came from; (None, why) when there is none."""
    client = MlflowClient(tracking_uri)
    if run_id is None:
        experiment = client.get_experiment_by_name(f"ray_msa-{dataset}")
        query = "tags.role = 'study' and attributes.status = 'FINISHED'"
        order = ["attributes.start_time DESC"]
        runs = (
            client.search_runs([experiment.experiment_id], query, order_by=order, max_results=1) if experiment else []
        )
        if not runs:
            return None, f"the search space's start configuration (no finished {dataset} study in the tracking store)"
        run_id = runs[0].info.run_id
    mlflow.set_tracking_uri(tracking_uri)
    try:
        record = mlflow.artifacts.load_dict(f"runs:/{run_id}/model_spec.json")
    except MlflowException as err:
        raise InputError(
            run_id,
            "--config-run",
            f"no model_spec.json in this run ({str(err).splitlines()[0]})",
            f"pass the run id of a finished `tune {dataset}` study",
        ) from None
    if "config" not in record:
        raise InputError(
            run_id,
            "model_spec.json",
            "written before configurations were recorded",
            "tune again with this version, or ablate without --config-run",
        )
    return TrialConfig.from_dict(record["config"]), f"study run {run_id}"


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.ablate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="the dataset the study tuned on (mvsa: image+text posts)")
    parser.add_argument("--data", help="the dataset's folder (default: $RAY_MSA_DATA/DATASET or ./data/DATASET)")
    parser.add_argument("--config-run", help="study run whose configuration to use (default: the latest study)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold (default: the configuration's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", help="comma-separated subset of the architecture's variants (default: all)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    uri = args.tracking_uri or default_tracking_uri()
    trial, origin = study_config(uri, args.dataset, args.config_run)
    if trial is None:
        space = load_space(default_arch(task_of(args.dataset)))
        trial = space.build(space.start_for())
    spec = trial.spec
    if not spec.variants:
        raise InputError(
            "--config-run",
            trial.arch,
            "this architecture declares no ablation variants",
            "ablate a study of an architecture that does (image_text)",
        )
    variants = args.variants.split(",") if args.variants else list(spec.variants)
    unknown = [v for v in variants if v not in spec.variants]
    if unknown:
        raise InputError("--variants", ",".join(unknown), "unknown variant", f"use some of {', '.join(spec.variants)}")
    dataset = spec.prepare_text(load_dataset(args.dataset, args.data), trial.text)
    metric = trial.train.metric or DEFAULT_METRIC[dataset.metric_set]
    trial = trial.with_train(
        folds=args.folds, seed=args.seed, metric=metric, **({"max_epochs": args.epochs} if args.epochs else {})
    )
    print(
        f"{dataset.summary()}\nconfiguration from {origin}: {trial.arch} {trial.model}; text {trial.text}", flush=True
    )
    tracker = Tracker(uri)
    tags = {"role": "ablation", "arch": trial.arch, "dataset": args.dataset}
    parent = tracker.start(tracker.experiment(f"ray_msa-{args.dataset}"), "ablation", tags)
    tracker.params(parent, trial.params() | {"config_from": origin})
    rows = []
    for name in variants:
        child = tracker.child(parent, name, {"role": "ablation-variant", "variant": name})
        variant = trial.with_model(**spec.variants[name])
        summary = run_cross_validation(
            variant, dataset, lambda m, s: None, WorkerContext(), run=RunContext(trial_name=name)
        )
        tracker.metrics(child, summary)
        tracker.finish(child)
        rows.append((name, summary))
    tracker.finish(parent)
    shown = METRIC_SETS[dataset.metric_set][:2]
    print(f"\n{'variant':<12} " + " ".join(f"{m:>18}" for m in shown) + f"   ({args.folds}-fold mean ± std)")
    for name, s in rows:
        print(f"{name:<12} " + " ".join(f"{s[f'mean_{m}']:>9.4f} ± {s[f'std_{m}']:.4f}" for m in shown))
    print(f"MLflow: ablation run {parent} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
