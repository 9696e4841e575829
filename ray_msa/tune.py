"""`python -m ray_msa.tune DATASET`: tune an architecture with cross-validated trials.

Examples:
    python -m ray_msa.tune mosi                       # embedded CMU-MOSI, defaults
    python -m ray_msa.tune mosei --data ~/data/MOSEI  # any directory with an MMSA label.csv
    python -m ray_msa.tune mosi --trials 2 --folds 2 --epochs 1 --workers 2
    python -m ray_msa.tune mosi --resume              # continue the latest interrupted mosi study
    ray job submit --working-dir . -- python -m ray_msa.tune mosi   # on a running Ray cluster
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from ray_msa.config import TextConfig
from ray_msa.console import add_verbose_flag, route_library_logs, where_library_logs_went
from ray_msa.data.dataset import MSADataset
from ray_msa.data.sources import load_dataset, task_of
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.metrics import ALL_METRICS, METRIC_SETS
from ray_msa.models import check_task, default_arch, get_spec
from ray_msa.search_space import load_space
from ray_msa.study import StudyInterrupted, StudySettings, default_storage, find_study, results_table, run_study
from ray_msa.tracking import default_tracking_uri, redact
from ray_msa.train.engine import deepspeed_config

DEFAULT_TEST_SEEDS = 3  # test numbers as mean ± std and a 95% interval over seeds, not one seed's


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.tune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "dataset", help="mosi, mosei, sims, iemocap, or mvsa (image+text posts); mosi has an embedded copy"
    )
    parser.add_argument("--data", help="directory with the dataset's files (default: the embedded copy)")
    parser.add_argument("--arch", help="architecture (default mtl; mult for IEMOCAP's emotions; image_text for MVSA)")
    parser.add_argument("--trials", type=int, default=6, help="Optuna trials (default 6)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds per trial (default 5)")
    parser.add_argument(
        "--epochs", type=int, help="maximum epochs per fold (default: the search space's fixed max_epochs)"
    )
    parser.add_argument(
        "--patience", type=int, help="epochs without improvement before a fold stops (default: the space's)"
    )
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per trial (default 1)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: fit the cluster)")
    parser.add_argument(
        "--engine",
        choices=("ddp", "deepspeed"),
        help="training engine of a Ray Train run per trial (default: deepspeed when workers get GPUs, ddp on CPU; "
        "one CPU worker without --engine trains in the trial's own process, no Ray Train run)",
    )
    gpu = parser.add_mutually_exclusive_group()
    gpu.add_argument(
        "--gpu",
        dest="gpu",
        action="store_true",
        default=None,
        help="one GPU per worker even if none is up yet (an autoscaling cluster adds GPU nodes on demand); "
        "default: when the cluster has GPUs",
    )
    gpu.add_argument("--cpu", dest="gpu", action="store_false", help="never use GPUs")
    parser.add_argument(
        "--time-budget",
        type=float,
        metavar="MIN",
        help="stop tuning after MIN minutes, then retrain the best trial (default: the search space's "
        "time_budget_min, else none)",
    )
    parser.add_argument(
        "--concurrent", type=int, help="trials at once (default: as many as the cluster's free CPUs/GPUs hold)"
    )
    parser.add_argument(
        "--deepspeed-config",
        help='DeepSpeed JSON whose "auto" values are filled per trial (default: ray_msa/train/deepspeed.json)',
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="STUDY",
        help="continue an interrupted study (default: the latest unfinished one on DATASET in --storage); other "
        "options come from the study",
    )
    parser.add_argument(
        "--metric", choices=ALL_METRICS, help="validation metric to optimise (default MAE; Mean_F1 for IEMOCAP)"
    )
    parser.add_argument(
        "--text",
        default="frozen",
        choices=("frozen", "finetune", "features"),
        help="MiniLM frozen (embeddings cached once), fine-tuned, or the text features the source ships "
        "(default frozen)",
    )
    parser.add_argument(
        "--text-model", default="minilm", help="text LM: the bundled 'minilm' or a Hugging Face name/path"
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI (default sqlite under ./mlruns)",
    )
    parser.add_argument("--storage", help="Ray results/checkpoints directory (default ./ray_results)")
    parser.add_argument("--space", help="search-space YAML (default: the shipped ray_msa/spaces/<arch>.yaml)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--missing-rate",
        type=float,
        metavar="R",
        help="train with missing inputs: per sample a rate r ~ U(0, R) of tokens and frames removed, half of the "
        "samples complete (default: the space's, else 0); tune it by listing missing_rate in the space file",
    )
    parser.add_argument(
        "--final",
        choices=("refit", "ensemble"),
        help="the tested model: retrained on train+valid for the folds' mean best epoch (refit, default), "
        "or the best trial's K fold models with their predictions averaged (ensemble)",
    )
    parser.add_argument(
        "--test-seeds",
        type=int,
        default=DEFAULT_TEST_SEEDS,
        help=f"retrain the best configuration with this many seeds, each tested once (default {DEFAULT_TEST_SEEDS})",
    )
    add_verbose_flag(parser)
    parser.add_argument(
        "--keep-checkpoints",
        action="store_true",
        help="keep every trial's last checkpoint under STORAGE (default: removed once the trial's runs are closed)",
    )
    parser.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler proposing trials (default tpe)"
    )
    parser.add_argument(
        "--pruner",
        choices=("asha", "none"),
        default="asha",
        help="asha stops poor trials at epochs 2, 4, ...; none runs every trial to its end (default asha)",
    )
    return parser.parse_args(argv)


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value, least in (
        ("--trials", args.trials, 1),
        ("--folds", args.folds, 2),
        ("--workers", args.workers, 1),
        ("--epochs", args.epochs or 1, 1),
        ("--patience", args.patience or 1, 1),
        ("--test-seeds", args.test_seeds, 1),
    ):
        if value < least:
            raise InputError(flag, str(value), "too small", f"use {flag} {least} or more")


def _check_folds(dataset: MSADataset, folds: int) -> None:
    videos = len(set(dataset.splits["train"].video_ids) | set(dataset.splits["valid"].video_ids))
    if videos == 0:
        raise InputError(
            dataset.source,
            "train",
            "no labelled samples to tune on",
            "add the labelled split (train.txt for image+text posts)",
        )
    if folds > videos:
        raise InputError(
            "--folds",
            str(folds),
            f"more folds than the {videos} videos of train+valid",
            f"use --folds {videos} or fewer",
        )


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Training settings the command line sets (they override the space file's `train:`)."""
    flags: dict[str, Any] = {"folds": args.folds, "seed": args.seed}
    if args.epochs:
        flags["max_epochs"] = args.epochs
    if args.patience:
        flags["patience"] = args.patience
    if args.metric:
        flags["metric"] = args.metric
    if args.final:
        flags["final"] = args.final
    if args.missing_rate is not None:
        flags["missing_rate"] = args.missing_rate
    if args.deepspeed_config:
        deepspeed_config(
            32, 1, 1.0, 0, torch.device("cpu"), args.deepspeed_config
        )  # a bad file fails here, not in every worker
        flags["deepspeed_config"] = str(Path(args.deepspeed_config).resolve())
    return flags


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    resume = None
    if args.resume:
        storage = args.storage or default_storage()
        resume = find_study(storage, args.dataset, None if args.resume == "latest" else args.resume)
        argv = [*resume["command"], "--storage", storage]
        args = parse_args(argv)
        print(f"resuming study {resume['study_name']}: {redact(' '.join(resume['command']))}", flush=True)
    if args.text_model == "minilm":  # the bundled model never needs the hub
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _check_counts(args)
    task = task_of(args.dataset)
    arch = args.arch or default_arch(task)
    spec = get_spec(arch)
    check_task(arch, task)
    if spec.text_mode(args.text) != args.text:
        print(f"{arch} reads its text one way only: using --text {spec.text_mode(args.text)}")
    text = TextConfig(mode=spec.text_mode(args.text), model=args.text_model)
    space = load_space(arch, args.space, args.dataset)  # every setting checked before any data is read or Ray starts
    flags = _flags(args)
    space.build(None, flags, text)
    dataset = load_dataset(args.dataset, args.data)
    no_transcripts = dataset.splits["train"].raw_text is None and dataset.splits["train"].text_ids is None
    if text.mode == "frozen" and no_transcripts:
        print(f"{dataset.source} has text features but no transcripts: using --text features")
        text = text.replace(mode="features")
    dataset = spec.prepare_text(dataset, text)
    metric = space.build(None, flags, text, dataset).train.metric  # the dataset's default unless --metric
    _check_folds(dataset, args.folds)
    settings = StudySettings(
        dataset=args.dataset,
        space=space,
        trials=args.trials,
        workers=args.workers,
        tracking_uri=args.tracking_uri or default_tracking_uri(),
        storage=args.storage or default_storage(),
        flags={**flags, "metric": metric},
        text=text,
        engine=args.engine,
        cpus_per_worker=args.cpus_per_worker,
        use_gpu=args.gpu,
        concurrent=args.concurrent,
        time_budget_min=args.time_budget or space.study.time_budget_min,
        test_seeds=args.test_seeds,
        sampler=args.sampler,
        pruner=args.pruner,
        keep_checkpoints=args.keep_checkpoints,
        command=[a for a in argv if a != "--resume"],
    )
    library_log = route_library_logs(settings.storage, args.verbose)
    try:
        result = run_study(dataset, settings, resume)
    except StudyInterrupted as stopped:
        print(
            f"\ninterrupted: study {stopped.study_name} is saved; continue it with\n"
            f"    python -m ray_msa.tune {args.dataset} --resume {stopped.study_name} --storage {settings.storage}",
            flush=True,
        )
        return 130
    print()
    print(f"{arch} on {args.dataset}: {result.trials} trials x {args.folds} folds in {result.wall_s / 60:.1f} min")
    print(results_table(result, METRIC_SETS[dataset.metric_set]))
    print(f"best configuration: {result.best_config}")
    overhead, trial_wall = result.ray_overhead_s
    if math.isfinite(overhead):  # a resumed study's trials report to the callbacks Tune restored, not to ours
        share = f"{overhead:.1f}s of {trial_wall:.1f}s ({100 * overhead / trial_wall:.0f}%)"
        print(f"Ray start-up + tear-down per trial: {share}")
    print(f"MLflow: study run {result.study_run_id} at {redact(settings.tracking_uri)}; model {result.model_uri}")
    where_library_logs_went(library_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
