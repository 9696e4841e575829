"""`python -m ray_msa.ablate mvsa`: the same configuration on image+text, image only and
text only, each a stratified K-fold cross-validation; prints accuracy and weighted F1.

The configuration is the best one of a study: `--config-run RUN` (a study run id), else
the latest finished `tune mvsa` study in the tracking store, else the search space's
`start:` configuration (with its fixed settings in every case). Each variant is recorded in MLflow as a child
of one ablation run.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml

from ray_msa.errors import InputError, exit_on_input_error

VARIANTS = ("image+text", "image", "text")


def best_config(tracking_uri: str, run_id: str | None) -> tuple[dict[str, Any], str]:
    """The `best.*` parameters of a study run (typed back from MLflow's strings), and where they came from."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    if run_id is None:
        experiment = client.get_experiment_by_name("ray_msa-mvsa")
        runs = (
            client.search_runs(
                [experiment.experiment_id],
                "tags.role = 'study' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if experiment
            else []
        )
        if not runs:
            return {}, "the search space's start configuration (no finished mvsa study in the tracking store)"
        run_id = runs[0].info.run_id
    params = client.get_run(run_id).data.params
    config = {k[len("best.") :]: yaml.safe_load(v) for k, v in params.items() if k.startswith("best.")}
    if not config:
        raise InputError(
            run_id,
            "--config-run",
            "this run has no best.* parameters",
            "pass the run id of a finished `tune mvsa` study",
        )
    return config, f"study run {run_id}"


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.ablate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", choices=("mvsa",))
    parser.add_argument("--data", help="folder in the MVSA layout (default: $RAY_MSA_DATA/mvsa or ./data/mvsa)")
    parser.add_argument(
        "--config-run", help="study run whose best configuration to use (default: the latest mvsa study)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold (default: the search space's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ray_msa.data import load_dataset
    from ray_msa.models.image_text import prepare_post_text
    from ray_msa.search_space import load_space, load_start
    from ray_msa.tracking import Tracker, default_tracking_uri
    from ray_msa.train.loop import WorkerContext, run_cross_validation

    uri = args.tracking_uri or default_tracking_uri()
    dataset = prepare_post_text(load_dataset(args.dataset, args.data))
    fixed, _ = load_space("image_text")
    tuned, origin = best_config(uri, args.config_run)
    tuned = tuned or next(iter(load_start("image_text")), {})
    config = {**fixed, **tuned, "arch": "image_text", "folds": args.folds, "seed": args.seed, "metric": "Acc"}
    if args.epochs:
        config["max_epochs"] = args.epochs
    print(f"{dataset.summary()}\nconfiguration from {origin}: {tuned}", flush=True)
    tracker = Tracker(uri)
    parent = tracker.start(
        tracker.experiment("ray_msa-mvsa"), "ablation", {"role": "ablation", "arch": "image_text", "dataset": "mvsa"}
    )
    tracker.params(parent, {k: v for k, v in config.items()} | {"config_from": origin})
    rows = []
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise InputError("--variants", ",".join(unknown), "unknown variant", f"use some of {', '.join(VARIANTS)}")
    for use in variants:
        child = tracker.child(parent, use, {"role": "ablation-variant", "use": use})
        summary = run_cross_validation(
            {**config, "use": use, "trial_name": use}, dataset, lambda m, s: None, WorkerContext()
        )
        tracker.metrics(child, summary)
        tracker.finish(child)
        rows.append((use, summary))
    tracker.finish(parent)
    print(f"\n{'input':<12} {'accuracy':>18} {'weighted F1':>18}   ({args.folds}-fold mean ± std)")
    for use, s in rows:
        print(
            f"{use:<12} {s['mean_Acc']:>9.4f} ± {s['std_Acc']:.4f} {s['mean_F1_weighted']:>9.4f} ± {s['std_F1_weighted']:.4f}"
        )
    print(f"MLflow: ablation run {parent} at {uri}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
