"""`python -m ray_msa.ablate DATASET [--arch ARCH]`: the same configuration once per ablation
variant, each a K-fold cross-validation on Ray (variants side by side when the cluster has
room), recorded as child runs of one ablation run.

Variants: `full` (the configuration as it is), every modality subset the architecture can
run (T, A, V, T+A, T+V, A+V for three modalities; the dropped arrays are removed before the
loop sees them), and the variants its spec declares (mtl: without each task, shared feature
kind and block, paper 000 Table 5; awf: without B-fusion, without A-fusion, A-fusion frozen,
001 Tables 8-10; lf_dnn/lf_lstm: B-fusion on/off, 001 Table 3; cenet: without the CE module;
image_text: image+text, image, text). The table gives each variant's fold mean ± std of the
dataset's metrics and its difference to `full` on the validation metric, with a paired t-test
over the folds (the folds are the same: same seed, same data).

The configuration is a study's resolved one, read back typed from its `model_spec.json`:
`--config-run RUN` (a study run id), else the latest finished study of ARCH on DATASET in the
tracking store, else the search space's `start:` configuration for DATASET. Its text model and
text mode come with it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ray_msa.config import ConfigError, TextConfig
from ray_msa.console import add_verbose_flag, route_library_logs, where_library_logs_went
from ray_msa.data.dataset import MSADataset
from ray_msa.data.sources import load_dataset, task_of
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.grid import GridResult, run_points
from ray_msa.metrics import DEFAULT_METRIC, METRIC_SETS, mode_of
from ray_msa.models import check_task, default_arch, get_spec
from ray_msa.models.balance import SHORT
from ray_msa.search_space import load_space
from ray_msa.statistics import paired_fold_test
from ray_msa.study import default_storage
from ray_msa.tables import FORMATS, format_table
from ray_msa.tracking import default_tracking_uri
from ray_msa.trial import TrialConfig

FULL = "full"


def study_config(
    tracking_uri: str, dataset: str, run_id: str | None, arch: str | None = None
) -> tuple[TrialConfig | None, str]:
    """The resolved configuration of study `run_id` (else of the latest finished study of `arch`
    on `dataset`), and where it came from; (None, why) when there is none."""
    store = Path(tracking_uri.removeprefix("sqlite:///")) if tracking_uri.startswith("sqlite:///") else None
    which = f"{arch} {dataset}" if arch else dataset
    if run_id is None and store is not None and not store.exists():  # no store yet: no study, and none made here
        return None, f"the search space's start configuration (no finished {which} study: no tracking store yet)"
    client = MlflowClient(tracking_uri)
    if run_id is None:
        experiment = client.get_experiment_by_name(f"ray_msa-{dataset}")
        query = "tags.role = 'study' and attributes.status = 'FINISHED'" + (
            f" and tags.arch = '{arch}'" if arch else ""
        )
        order = ["attributes.start_time DESC"]
        runs = (
            client.search_runs([experiment.experiment_id], query, order_by=order, max_results=1) if experiment else []
        )
        if not runs:
            return None, f"the search space's start configuration (no finished {which} study in the tracking store)"
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


def variants_of(trial: TrialConfig, dataset: MSADataset) -> dict[str, TrialConfig]:
    """The reference first (`full`, or the declared variant that is the configuration itself,
    e.g. image_text's image+text), the modality subsets the architecture can run, then the
    other declared variants."""
    spec = trial.spec
    declared = {}
    for name, settings in spec.variants.items():
        try:
            declared[name] = trial.with_model(**settings)
        except ConfigError as err:
            raise InputError(f"variant {name}", err.key, err.problem, err.fix) from None
    reference = next((name for name, t in declared.items() if t == trial), FULL)
    out = {reference: trial}
    present = dataset.modalities
    if spec.modality_subsets and len(present) > 1:
        for size in range(1, len(present)):
            for subset in itertools.combinations(present, size):
                if set(spec.needs) <= set(subset):
                    out["+".join(SHORT[m] for m in subset)] = replace(trial, modalities=subset)
    return out | {name: t for name, t in declared.items() if name != reference}


def check_buildable(points: dict[str, TrialConfig], dataset: MSADataset) -> None:
    """Build each variant's network on the driver, so none fails inside a Ray worker."""
    for name, trial in points.items():
        try:
            trial.spec.for_dataset(trial.restrict(dataset), trial.model, trial.text)
        except (ValueError, ConfigError) as err:
            raise InputError(
                f"variant {name}", trial.arch, str(err).splitlines()[0], "leave it out of --variants"
            ) from None


def ablation_table(result: GridResult, reference: str, dataset: MSADataset, fmt: str) -> str:
    """Each variant: fold mean ± std of the metrics, then its difference to the reference on the
    validation metric with the paired t-test's p-value over folds."""
    metric = result.metric
    shown = [metric, *[m for m in METRIC_SETS[dataset.metric_set] if m != metric]][:4]
    full = result.points.get(reference)
    header = ["variant", *shown, f"Δ{metric} vs {reference}", "p (paired t)"]
    rows = []
    for name, point in result.points.items():
        cells = [f"{point.mean.get(m, math.nan):.4f} ± {point.std.get(m, math.nan):.4f}" for m in shown]
        if full is None or name == reference:
            cells += ["-", "-"]
        else:
            delta, p = paired_fold_test(point.folds[metric], full.folds[metric])
            cells += [f"{delta:+.4f}", "-" if math.isnan(p) else f"{p:.3f}"]
        rows.append([name, *cells])
    return format_table(header, rows, fmt)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.ablate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="mosi, mosei, sims, iemocap, or mvsa (image+text posts)")
    parser.add_argument("--arch", help="architecture (default: the dataset's default; with --config-run: the run's)")
    parser.add_argument("--data", help="the dataset's folder (default: $RAY_MSA_DATA/DATASET or the embedded copy)")
    parser.add_argument("--config-run", help="study run whose configuration to use (default: the latest study)")
    parser.add_argument(
        "--variants", help="comma-separated subset of the variants (default: all; the reference is added)"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold (default: the configuration's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", choices=FORMATS, default="text", help="how the table is printed")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per variant")
    parser.add_argument("--cpus-per-worker", type=float)
    parser.add_argument("--concurrent", type=int, help="variants at once (default: as many as the cluster holds)")
    parser.add_argument("--storage", help="Ray results directory (default ./ray_results)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def chosen_configuration(args: argparse.Namespace, uri: str) -> tuple[TrialConfig, str]:
    task = task_of(args.dataset)
    trial, origin = study_config(uri, args.dataset, args.config_run, None if args.config_run else args.arch)
    if trial is not None and args.arch and args.arch != trial.arch:
        raise InputError(
            "--arch", args.arch, f"study run {args.config_run} is of {trial.arch}", f"drop --arch or use {trial.arch}"
        )
    if trial is None:  # the space's start, with the text input the architecture reads (CENet fine-tunes its LM)
        arch = args.arch or default_arch(task)
        space = load_space(arch, None, args.dataset)
        trial = space.build(space.start_for(), None, TextConfig(mode=get_spec(arch).text_mode(TextConfig().mode)))
    check_task(trial.arch, task)
    return trial, origin


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.folds < 2:
        raise InputError("--folds", str(args.folds), "too small", "use --folds 2 or more")
    if args.out and not Path(args.out).resolve().parent.is_dir():
        raise InputError("--out", args.out, "its folder does not exist", "create it or write elsewhere")
    uri = args.tracking_uri or default_tracking_uri()
    trial, origin = chosen_configuration(args, uri)
    spec = trial.spec
    dataset = spec.prepare_text(load_dataset(args.dataset, args.data), trial.text)
    metric = trial.train.metric or DEFAULT_METRIC[dataset.metric_set]
    trial = trial.with_train(
        folds=args.folds, seed=args.seed, metric=metric, **({"max_epochs": args.epochs} if args.epochs else {})
    )
    every = variants_of(trial, dataset)
    wanted = args.variants.split(",") if args.variants else list(every)
    unknown = [v for v in wanted if v not in every]
    if unknown:
        raise InputError("--variants", ",".join(unknown), "unknown variant", f"use some of {', '.join(every)}")
    reference = next(iter(every))
    points = {name: every[name] for name in dict.fromkeys([reference, *wanted])}
    check_buildable(points, dataset)
    print(
        f"{dataset.summary()}\nconfiguration from {origin}: {trial.arch} {trial.model}; text {trial.text}", flush=True
    )
    print(f"variants ({len(points)}): {', '.join(points)}; {args.folds}-fold CV each, {mode_of(metric)} {metric}")

    storage = args.storage or default_storage()
    library_log = route_library_logs(storage, args.verbose)
    tables: dict[str, str] = {}

    def log_tables(result: GridResult) -> None:
        for fmt in FORMATS:
            tables[fmt] = ablation_table(result, reference, dataset, fmt)
        client = MlflowClient(uri)
        client.log_text(result.parent_run_id, tables["md"], "ablation.md")
        client.log_text(result.parent_run_id, tables["csv"], "ablation.csv")

    result = run_points(
        dataset,
        points,
        tracking_uri=uri,
        storage=storage,
        role="ablation",
        parent_name=f"ablation-{trial.arch}",
        tags={"arch": trial.arch, "variants": ",".join(points)},
        params={**trial.params(), "config_from": origin},
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        concurrent=args.concurrent,
        on_result=log_tables,
    )
    print(
        f"\n{trial.arch} on {args.dataset}: {len(points)} variants x {args.folds} folds in {result.wall_s / 60:.1f} min"
    )
    print(tables[args.format])
    if args.out:
        Path(args.out).write_text(tables[args.format] + "\n")
    print(f"MLflow: ablation run {result.parent_run_id} at {uri}")
    where_library_logs_went(library_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
