"""`python -m ray_msa.sweep DATASET --param NAME --values a,b,c [--param2 NAME --values2 x,y]`:
one or two settings varied over a grid, the rest of the configuration fixed, each point a K-fold
cross-validation on Ray (no search and no early stopping of points: every point runs to the end).

The fixed configuration is a study's resolved one (`--config-run RUN`), else the first `start:`
entry of the architecture's search space. NAME is a training or model setting (`lr` or `train.lr`,
`heads` or `model.heads`); values are read with the setting's type, and every point is built and
checked before Ray starts. Prints each point's fold mean ± std of the dataset's main metrics, plots
the primary metric against the value (one setting) or as a heat map (two), and logs the table and
the plot to the sweep's MLflow run, whose children are the points, each with its fold runs.

Examples:
    python -m ray_msa.sweep mosi --arch lf_dnn --param lr --values 1e-4,1e-3 --folds 2 --epochs 2
    python -m ray_msa.sweep mosi --param heads --values 2,4,8 --param2 ffn --values2 128,256 --plot grid.png
    python -m ray_msa.sweep mvsa --data ../shared/data/mvsa_ecnu --config-run RUN --param focal_alpha --values 0.25,0.5
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import numbers
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from ray_msa.ablate import chosen_configuration
from ray_msa.config import ConfigError, TrainConfig, closest
from ray_msa.console import add_verbose_flag, route_library_logs, where_library_logs_went
from ray_msa.data.dataset import MSADataset
from ray_msa.data.sources import load_dataset
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.grid import GridInterrupted, GridResult, run_points
from ray_msa.metrics import DEFAULT_METRIC, METRIC_SETS, mode_of
from ray_msa.models import get_spec
from ray_msa.search_space import SpaceFile
from ray_msa.study import default_storage
from ray_msa.tables import FORMATS, format_table
from ray_msa.tracking import default_tracking_uri, redact
from ray_msa.trial import TrialConfig
from ray_msa.tune import _check_folds

if TYPE_CHECKING:
    from matplotlib.figure import Figure

NOT_SWEPT = {  # settings a sweep cannot vary, and why
    "metric": "the points would be judged on different metrics",
    "engine": "the engine follows the workers' devices",
    "final": "a sweep retrains no final model",
    "final_epochs": "a sweep retrains no final model",
}


@dataclass(frozen=True)
class Axis:
    """One swept setting: where it lives, its values as written (labels, point names) and as typed."""

    section: str  # "train" or "model"
    key: str
    written: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def numeric(self) -> bool:
        return all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in self.values)

    @property
    def log_scale(self) -> bool:
        """All positive numbers spanning a factor of ten or more: learning rates, weight decays."""
        return self.numeric and min(self.values) > 0 and max(self.values) / min(self.values) >= 10


@dataclass(frozen=True)
class Cell:
    """One point: its index on each axis and its fold results."""

    name: str
    at: tuple[int, ...]
    mean: dict[str, float]
    std: dict[str, float]
    folds: dict[str, list[float]]


def resolve_setting(arch: str, name: str, flag: str) -> tuple[str, str]:
    """(section, key) of `train.lr`, `model.heads` or a bare key, as a space file names them."""
    known = {"train": TrainConfig.keys(), "model": get_spec(arch).config.keys()}
    prefix, _, key = name.rpartition(".")
    if prefix and prefix not in known:
        raise InputError(flag, name, f"{prefix} is not a section of the settings", "write train.KEY, model.KEY or KEY")
    if prefix and key not in known[prefix]:
        where = f"a model setting of {arch}" if prefix == "model" else "a training setting"
        raise InputError(flag, name, f"not {where}", closest(key, known[prefix]))
    section = SpaceFile(Path(f"<{arch} settings>"), arch).section_of(key)
    if section is None:
        raise InputError(
            flag, name, f"not a training or model setting of {arch}", closest(key, (*known["train"], *known["model"]))
        )
    if key in NOT_SWEPT:
        raise InputError(flag, name, f"cannot be swept: {NOT_SWEPT[key]}", "sweep another setting")
    return section, key


def _read(raw: str) -> Any:
    """A command-line value as YAML reads it (64, 0.5, true, adamw); the setting's type does the rest."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _with(trial: TrialConfig, changes: dict[tuple[str, str], Any], flag: str, what: str) -> TrialConfig:
    """`trial` with the changed settings, checked like a space file's; a bad one names `flag`."""
    train = {k: v for (section, k), v in changes.items() if section == "train"}
    model = {k: v for (section, k), v in changes.items() if section == "model"}
    try:
        return trial.with_train(**train).with_model(**model)
    except ConfigError as err:
        own = {f"{section}.{key}" for section, key in changes}
        problem = err.problem if err.key in own else f"{err.key}: {err.problem}"
        raise InputError(flag, what, problem, err.fix) from None


def parse_axis(base: TrialConfig, name: str, text: str, param_flag: str, values_flag: str) -> Axis:
    """The setting NAME and its comma-separated values, each checked on `base`."""
    section, key = resolve_setting(base.arch, name, param_flag)
    written = tuple(v.strip() for v in text.split(","))
    if not all(written):
        raise InputError(values_flag, text, "an empty value", "separate the values with commas, e.g. 1e-4,1e-3")
    values = []
    for raw in written:
        trial = _with(base, {(section, key): _read(raw)}, values_flag, f"{key}={raw}")
        values.append(getattr(getattr(trial, section), key))
    repeats = [w for i, w in enumerate(written) if values[i] in values[:i]]
    if repeats:
        raise InputError(values_flag, text, f"{repeats[0]} repeats an earlier value of {key}", "give each value once")
    return Axis(section, key, written, tuple(values))


def point_name(axes: Sequence[Axis], at: tuple[int, ...]) -> str:
    return ",".join(f"{a.key}={a.written[i]}" for a, i in zip(axes, at))


def grid_points(base: TrialConfig, axes: Sequence[Axis]) -> tuple[dict[str, TrialConfig], dict[str, tuple[int, ...]]]:
    """Every combination of the axes' values on `base` (first axis slowest), each built and checked."""
    flag = "--values2" if len(axes) > 1 else "--values"
    points, places = {}, {}
    for at in itertools.product(*(range(len(a.values)) for a in axes)):
        name = point_name(axes, at)
        points[name] = _with(base, {(a.section, a.key): a.values[i] for a, i in zip(axes, at)}, flag, name)
        places[name] = at
    return points, places


def shown_metrics(metric_set: str, metric: str) -> tuple[str, ...]:
    """The primary metric, the dataset's default and its first three, once each."""
    return tuple(dict.fromkeys((metric, DEFAULT_METRIC[metric_set], *METRIC_SETS[metric_set][:3])))


def best_cell(cells: Sequence[Cell], metric: str) -> Cell | None:
    scored = [c for c in cells if math.isfinite(c.mean.get(metric, math.nan))]
    if not scored:
        return None
    pick = min if mode_of(metric) == "min" else max
    return pick(scored, key=lambda c: c.mean[metric])


def render_table(axes: Sequence[Axis], cells: Sequence[Cell], metrics: Sequence[str], fmt: str) -> str:
    """One row per point: its value(s), then fold mean ± std of each metric; CSV has the mean, the
    std and the per-fold values (';'-separated) in their own columns, at full precision."""
    keys = [a.key for a in axes]
    written = [[a.written[i] for a, i in zip(axes, c.at)] for c in cells]
    if fmt == "csv":
        header = keys + [f"{m}_{part}" for m in metrics for part in ("mean", "std", "folds")]
        rows = [
            values
            + [
                text
                for m in metrics
                for text in (
                    repr(c.mean.get(m, math.nan)),
                    repr(c.std.get(m, math.nan)),
                    ";".join(map(repr, c.folds.get(m, []))),
                )
            ]
            for values, c in zip(written, cells)
        ]
        return format_table(header, rows, "csv")
    rows = [
        values + [f"{c.mean.get(m, math.nan):.4f} ± {c.std.get(m, math.nan):.4f}" for m in metrics]
        for values, c in zip(written, cells)
    ]
    return format_table(keys + list(metrics), rows, fmt)


def plot_sweep(axes: Sequence[Axis], cells: Sequence[Cell], metric: str, title: str) -> Figure:
    """One setting: `metric` against the value with fold-std error bars (log x over >= 10x, categorical
    x for names); two: a heat map of the fold mean, each cell annotated mean ± std."""
    from matplotlib.figure import Figure  # heavy: only a finished sweep plots; no pyplot state to close
    from matplotlib.ticker import NullFormatter

    better = "lower" if mode_of(metric) == "min" else "higher"
    if len(axes) == 1:
        (axis,) = axes
        order = sorted(cells, key=lambda c: axis.values[c.at[0]] if axis.numeric else c.at[0])
        x = [axis.values[c.at[0]] if axis.numeric else c.at[0] for c in order]
        fig = Figure(figsize=(max(4.5, 1.0 + 0.8 * len(x)), 3.4))
        ax = fig.subplots()
        ax.errorbar(
            x,
            [c.mean.get(metric, math.nan) for c in order],
            yerr=[c.std.get(metric, math.nan) for c in order],
            marker="o",
            capsize=4,
        )
        if axis.log_scale:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(x, labels=[axis.written[c.at[0]] for c in order])
        if not axis.numeric:
            ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xlabel(axis.key)
        ax.set_ylabel(f"{metric}, fold mean ± std\n({better} is better)")
    else:
        across, down = axes[0], axes[1]
        means = np.full((len(down.values), len(across.values)), np.nan)
        stds = np.full_like(means, np.nan)
        for c in cells:
            means[c.at[1], c.at[0]] = c.mean.get(metric, math.nan)
            stds[c.at[1], c.at[0]] = c.std.get(metric, math.nan)
        fig = Figure(figsize=(2.2 + 1.2 * len(across.values), 1.6 + 0.7 * len(down.values)))
        ax = fig.subplots()
        image = ax.imshow(means, cmap="viridis_r" if better == "lower" else "viridis", aspect="auto", origin="lower")
        for (row, col), value in np.ndenumerate(means):
            if math.isfinite(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                ink = "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"
                text = f"{value:.3f}\n± {stds[row, col]:.3f}"
                ax.text(col, row, text, ha="center", va="center", fontsize=8, color=ink)
        ax.set_xticks(range(len(across.values)), labels=list(across.written))
        ax.set_yticks(range(len(down.values)), labels=list(down.written))
        ax.set_xlabel(across.key)
        ax.set_ylabel(down.key)
        fig.colorbar(image, ax=ax, label=f"{metric} fold mean ({better} is better)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", help="mosi, mosei, sims, iemocap or mvsa; mosi has an embedded copy")
    parser.add_argument("--arch", help="architecture (default: the study's with --config-run, else the task's)")
    parser.add_argument("--param", required=True, help="the setting to vary: lr, train.lr, heads, model.heads, ...")
    parser.add_argument("--values", required=True, help="its values, comma-separated: 1e-4,3e-4,1e-3")
    parser.add_argument("--param2", help="a second setting: a heat map over both")
    parser.add_argument("--values2", help="the second setting's values")
    parser.add_argument("--folds", type=int, help="folds per point (default: the configuration's)")
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold (default: the configuration's)")
    parser.add_argument("--seed", type=int, help="seed of folds, batches and init (default: the configuration's)")
    parser.add_argument("--data", help="the dataset's directory or file (default: as for tune)")
    parser.add_argument("--config-run", help="study run whose resolved configuration is fixed (default: the space)")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--storage", help="Ray results directory (default ./ray_results)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers per point (default 1)")
    parser.add_argument("--cpus-per-worker", type=float, help="CPUs per worker (default: fit the cluster)")
    parser.add_argument("--concurrent", type=int, help="points at once (default: as many as the cluster holds)")
    parser.add_argument("--format", choices=FORMATS, default="text", help="table format (default text)")
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--plot", help="also write the PNG plot to this file")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def fixed_configuration(args: argparse.Namespace) -> tuple[TrialConfig, str]:
    """What ablate takes too: the --config-run study's resolved configuration, else the latest
    finished study of ARCH on DATASET, else the space's start entry for DATASET."""
    return chosen_configuration(args, args.tracking_uri or default_tracking_uri())


def with_flags(trial: TrialConfig, args: argparse.Namespace) -> TrialConfig:
    """--folds, --epochs and --seed over the fixed configuration (a swept setting wins over them)."""
    for flag, key, value in (
        ("--folds", "folds", args.folds),
        ("--epochs", "max_epochs", args.epochs),
        ("--seed", "seed", args.seed),
    ):
        if value is not None:
            trial = _with(trial, {("train", key): value}, flag, str(value))
    return trial


def prepare(
    args: argparse.Namespace, base: TrialConfig, points: dict[str, TrialConfig]
) -> tuple[MSADataset, str, dict[str, TrialConfig]]:
    """The dataset as the points read it, their metric, and every point's model built on it."""
    raw = load_dataset(args.dataset, args.data)
    text = base.text
    if text.mode == "frozen" and raw.splits["train"].raw_text is None and raw.splits["train"].text_ids is None:
        print(f"{raw.source} has text features but no transcripts: using them")
        text = text.replace(mode="features")
    dataset = base.spec.prepare_text(raw, text)
    metric = base.train.metric or DEFAULT_METRIC[dataset.metric_set]
    if metric not in METRIC_SETS[dataset.metric_set]:
        raise InputError(
            args.config_run or "configuration",
            "metric",
            f"{metric} is not a metric of {dataset.name}",
            "sweep the dataset the study tuned on",
        )
    points = {n: dataclasses.replace(t, text=text).with_train(metric=metric) for n, t in points.items()}
    _check_folds(dataset, max(t.train.folds for t in points.values()))
    flag = "--values2" if args.param2 else "--values"
    for name, trial in points.items():
        try:
            trial.spec.for_dataset(trial.restrict(dataset), trial.model, trial.text)
        except ConfigError as err:
            raise InputError(flag, name, f"{err.key}: {err.problem}", err.fix) from None
        except ValueError as err:
            raise InputError(flag, name, str(err), "choose values the model accepts on this dataset") from None
    return dataset, metric, points


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if (args.param2 is None) != (args.values2 is None):
        missing = "--values2" if args.param2 else "--param2"
        raise InputError(missing, "missing", "a second setting needs both --param2 and --values2", f"add {missing}")
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path and not Path(path).resolve().parent.is_dir():
            raise InputError(flag, path, "its folder does not exist", "create it or write elsewhere")
    base, origin = fixed_configuration(args)
    axes = [parse_axis(base, args.param, args.values, "--param", "--values")]
    if args.param2:
        axes.append(parse_axis(base, args.param2, args.values2, "--param2", "--values2"))
        if axes[1].key == axes[0].key:
            raise InputError("--param2", args.param2, f"the same setting as --param {args.param}", "vary two settings")
    base = with_flags(base, args)
    points, places = grid_points(base, axes)
    for flag, value in (("--workers", args.workers), ("--concurrent", args.concurrent or 1)):
        if value < 1:
            raise InputError(flag, str(value), "too small", f"use {flag} 1 or more")
    dataset, metric, points = prepare(args, base, points)
    folds = "/".join(str(k) for k in sorted({t.train.folds for t in points.values()}))  # one unless swept
    epochs = "/".join(str(e) for e in sorted({t.train.max_epochs for t in points.values()}))
    keys = [a.key for a in axes]
    print(
        f"{dataset.summary()}\nconfiguration from {origin}: {base.arch} {base.model}; "
        f"text {next(iter(points.values())).text}\n"
        f"sweep of {' x '.join(keys)}: {len(points)} points x {folds} folds, at most {epochs} epochs each, on {metric}",
        flush=True,
    )
    uri = args.tracking_uri or default_tracking_uri()
    shown = shown_metrics(dataset.metric_set, metric)
    title = f"{base.arch} on {dataset.name}: {folds}-fold CV, at most {epochs} epochs"
    outputs: dict[str, Any] = {}

    def log_outputs(result: GridResult) -> None:
        """Table (CSV, markdown) and plot onto the still-open sweep run, and the files asked for."""
        cells = [Cell(n, places[n], p.mean, p.std, p.folds) for n, p in result.points.items()]
        tables = {fmt: render_table(axes, cells, shown, fmt) for fmt in FORMATS}
        client = MlflowClient(uri)
        client.log_text(result.parent_run_id, tables["csv"] + "\n", "sweep.csv")
        client.log_text(result.parent_run_id, tables["md"] + "\n", "sweep.md")
        figure = plot_sweep(axes, cells, metric, title)
        client.log_figure(result.parent_run_id, figure, "sweep.png")
        if args.plot:
            figure.savefig(args.plot, dpi=120)
        if args.out:
            Path(args.out).write_text(tables[args.format] + "\n")
        outputs.update(cells=cells, table=tables[args.format])

    storage = args.storage or default_storage()
    library_log = route_library_logs(storage, args.verbose)
    params = {k: v for k, v in base.params().items() if k.split(".", 1)[1] not in keys}
    params |= {"arch": base.arch, "config_from": origin, **{f"sweep.{a.key}": ",".join(a.written) for a in axes}}
    try:
        result = run_points(
            dataset,
            points,
            tracking_uri=uri,
            storage=storage,
            role="sweep",
            parent_name=f"sweep-{base.arch}-{'-'.join(keys)}",
            tags={"swept": ",".join(keys)},
            params=params,
            workers=args.workers,
            cpus_per_worker=args.cpus_per_worker,
            concurrent=args.concurrent,
            on_result=log_outputs,
        )
    except GridInterrupted:
        print("\ninterrupted: the sweep run is KILLED in MLflow; a sweep is not resumed, run it again", flush=True)
        return 130
    print(f"\n{base.arch} on {dataset.name}: {len(points)} points x {folds} folds in {result.wall_s / 60:.1f} min")
    print(outputs["table"])
    best = best_cell(outputs["cells"], metric)
    if best is not None:
        print(f"best on {metric}: {best.name} ({best.mean[metric]:.4f} ± {best.std[metric]:.4f})")
    if args.out:
        print(f"table: {args.out}")
    if args.plot:
        print(f"plot: {args.plot}")
    print(f"MLflow: sweep run {result.parent_run_id} at {redact(uri)} (sweep.csv, sweep.md, sweep.png)")
    where_library_logs_went(library_log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
