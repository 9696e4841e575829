"""`python -m ray_msa.retest STUDY_RUN`: a finished study's best configuration trained and tested again,
with N seeds or as the fold ensemble, without running the study again.

The configuration is the study's resolved one (its `model_spec.json`), the data must be the data it
was tuned on (same fingerprint), and nothing the study chose is chosen again: the same configuration,
the same number of final epochs. The result is a new run in the study's experiment, tagged
`retest_of`, with the study's CV metrics copied beside the new test summary, a `final` child per seed
with its test predictions, and the model; `compare` shows it as that architecture's latest row.

    python -m ray_msa.retest 7940ce83... --test-seeds 5             # refit, seeds 0..4
    python -m ray_msa.retest 7940ce83... --final ensemble           # the K fold models, averaged
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import ray
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_msa.ablate import study_config
from ray_msa.console import add_verbose_flag, route_library_logs, where_library_logs_went
from ray_msa.data.sources import load_dataset
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import METRIC_SETS
from ray_msa.search_space import SpaceFile
from ray_msa.study import StudyResult, StudySettings, default_storage, final_evaluation, plan_cluster, results_table
from ray_msa.tracking import Tracker, default_tracking_uri, git_commit, redact
from ray_msa.tune import DEFAULT_TEST_SEEDS

COPIED_TAGS = ("arch", "dataset", "data_fingerprint", "data_source", "metric_set")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.retest", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("study", help="run id of a finished study (printed by tune: 'MLflow: study run ...')")
    parser.add_argument("--test-seeds", type=int, default=DEFAULT_TEST_SEEDS, help="seeds S, S+1, ... (default 3)")
    parser.add_argument("--seed", type=int, help="first seed (default: the study's)")
    parser.add_argument(
        "--final", choices=("refit", "ensemble"), help="the tested model (default: the study's final model kind)"
    )
    parser.add_argument("--data", help="the study's data folder (default: the embedded copy or $RAY_MSA_DATA)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per seed (default 1)")
    parser.add_argument("--cpus-per-worker", type=float)
    parser.add_argument(
        "--engine", choices=("ddp", "deepspeed"), help="as tune's: a Ray Train run per seed with this engine"
    )
    parser.add_argument("--storage", help="Ray results directory (default ./ray_results)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def finished_study(client: MlflowClient, run_id: str) -> Run:
    """The study run `run_id`, which must be a finished study (or retest) run."""
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise InputError("STUDY_RUN", run_id, "no such run in the tracking store", "pass a study run id") from None
    if run.data.tags.get("role") != "study" or run.info.status != "FINISHED":
        raise InputError(
            "STUDY_RUN",
            run_id,
            f"is a {run.data.tags.get('role', 'run')} run in state {run.info.status}, not a finished study",
            "pass the run id tune printed as 'MLflow: study run ...'",
        )
    return run


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.test_seeds < 1:
        raise InputError("--test-seeds", str(args.test_seeds), "too small", "use --test-seeds 1 or more")
    uri = args.tracking_uri or default_tracking_uri()
    tracker = Tracker(uri)
    source = finished_study(tracker.client, args.study)
    tags, metrics = source.data.tags, source.data.metrics
    trial, _ = study_config(uri, tags["dataset"], args.study)
    dataset = trial.spec.prepare_text(load_dataset(tags["dataset"], args.data), trial.text)
    if dataset.fingerprint() != tags["data_fingerprint"]:
        raise InputError(
            "--data",
            args.data or dataset.source,
            f"is not the data study {args.study} was tuned on (fingerprint {dataset.fingerprint()}, "
            f"the study's {tags['data_fingerprint']})",
            f"pass the study's data: {redact(tags.get('data_source', '?'))}",
        )
    storage = args.storage or default_storage()
    library_log = route_library_logs(storage, args.verbose)
    started = time.time()
    seed = trial.train.seed if args.seed is None else args.seed
    final = args.final or trial.train.final
    name = f"{trial.arch}-retest-{time.strftime('%Y%m%d-%H%M%S')}"
    run_id = tracker.start(
        source.info.experiment_id,
        name,
        {
            **{k: tags[k] for k in COPIED_TAGS if k in tags},
            "role": "study",
            "retest_of": args.study,
            "mlflow.source.git.commit": git_commit(),
        },
    )
    tracker.params(run_id, {**source.data.params, "seed": seed, "final": final, "retest_of": args.study})
    tracker.metrics(run_id, {k: v for k, v in metrics.items() if k.startswith("cv_") or k == "trials_run"})
    tracker.dataset_input(run_id, tags["dataset"], tags["data_fingerprint"], dataset.source)
    print(
        f"retest of study {args.study}: {trial.arch} on {dataset.summary()}; final {final}, seeds "
        f"{seed}..{seed + args.test_seeds - 1}; MLflow run {run_id}",
        flush=True,
    )
    own_ray = not ray.is_initialized()
    try:
        settings = StudySettings(  # only what `plan_cluster` reads: the cluster options
            dataset=tags["dataset"],
            space=SpaceFile(Path(f"<retest {args.study}>"), trial.arch),
            trials=args.test_seeds,
            workers=args.workers,
            tracking_uri=uri,
            storage=storage,
            cpus_per_worker=args.cpus_per_worker,
            engine=args.engine,
        )
        plan = plan_cluster(settings)
        trial = trial.with_train(seed=seed, final=final, engine=plan.engine)
        per_seed, test, model_uri = final_evaluation(
            tracker, run_id, dataset, trial, [ray.put(dataset)], plan, name, args.test_seeds
        )
        wall = time.time() - started
        tracker.metrics(run_id, {"retest_wall_s": wall, "wall_time_s": metrics.get("wall_time_s", 0.0) + wall})
        tracker.finish(run_id)
    except BaseException as err:
        tracker.finish(run_id, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if own_ray and ray.is_initialized():
            ray.shutdown()
    cv = {k[len("cv_") :]: v for k, v in metrics.items() if k.startswith("cv_")}
    trials = int(metrics.get("trials_run", 0))
    result = StudyResult(run_id, {}, cv, test, trials, wall, (0.0, 0.0), model_uri, trial, per_seed)
    print(f"\n{trial.arch} on {tags['dataset']}, final {final}, {args.test_seeds} seeds in {wall / 60:.1f} min")
    print(results_table(result, METRIC_SETS[dataset.metric_set]))
    print(f"MLflow: retest run {run_id} at {redact(uri)}; model {model_uri}")
    where_library_logs_went(library_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
