"""How much training the default tuner saves: Optuna TPE + ASHA (`tune`'s default) against random search
without early stopping (MMSA's tuner: random configurations, each trained to its end), on the bundled MOSI
with `lf_dnn`, the same number of trials, several study seeds each.

Each study runs through the real command (`python -m ray_msa.tune mosi --arch lf_dnn --sampler ... --pruner
...`, one trial at a time) into its own tracking store. The cost axis is fold-epochs actually trained (a fold
that stopped on its patience, or a trial ASHA stopped, trains no more), read back from the fold runs' per-epoch
metrics; the quality axis is the best CV objective seen so far (every epoch a trial reports is a valid CV score
of its configuration). Printed per seed: each method's final best, the fold-epochs each used, and the share of
random search's fold-epochs that TPE + ASHA needed to reach random search's final best (of its whole budget, and
of the budget random search needed to first reach that value). A PNG draws the curves.

With `--replay-asha`, no study runs: the random-search studies of an earlier run (their ids in OUT's logs) are
replayed through Tune's own ASHA bookkeeping at several grace periods and reduction factors. Random search trains
every trial to its end, so its recorded curves say exactly what ASHA would have stopped, and when, had it run
beside the same configurations one at a time: the scheduler's share of the cost, without the sampler's.

    python bench/hpo_efficiency.py [--trials 12] [--folds 3] [--seeds 0,1,2] [--out bench/results/hpo_efficiency]
    python bench/hpo_efficiency.py --replay-asha [--out bench/results/hpo_efficiency]
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from mlflow.tracking import MlflowClient

from ray_msa.tracking import PARENT

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"tpe+asha": ("tpe", "asha"), "random": ("random", "none")}


def run_study(method: str, seed: int, args: argparse.Namespace, uri: str) -> tuple[str, float]:
    """One study through the command line: (its MLflow run id, wall seconds)."""
    sampler, pruner = METHODS[method]
    command = [
        sys.executable, "-m", "ray_msa.tune", "mosi", "--arch", "lf_dnn", "--trials", str(args.trials),
        "--folds", str(args.folds), "--seed", str(seed), "--sampler", sampler, "--pruner", pruner,
        "--concurrent", "1", "--cpus-per-worker", "1", "--test-seeds", "1", "--tracking-uri", uri,
    ]  # fmt: skip
    started = time.time()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    log = Path(args.out) / f"{method}-seed{seed}.log"
    log.write_text(done.stdout + done.stderr)
    found = re.search(r"MLflow: study run ([0-9a-f]+)", done.stdout)
    if done.returncode != 0 or not found:
        raise SystemExit(f"error: the {method} study with seed {seed} failed. Fix: read {log}")
    return found.group(1), time.time() - started


def trial_curves(client: MlflowClient, study_id: str, metric: str) -> list[tuple[dict[int, float], list[set[int]]]]:
    """Each trial of a study, in the order they ran: (epoch -> reported CV objective, the epochs each fold trained)."""
    experiment = client.get_run(study_id).info.experiment_id

    def children(parent: str, role: str) -> list:
        query = f"tags.`{PARENT}` = '{parent}' and tags.role = '{role}'"
        return client.search_runs([experiment], query, order_by=["attributes.start_time ASC"], max_results=1000)

    out = []
    for trial in children(study_id, "trial"):
        objective = {m.step: m.value for m in client.get_metric_history(trial.info.run_id, f"mean_{metric}")}
        trained = [
            {m.step for m in client.get_metric_history(fold.info.run_id, f"val_{metric}")}
            for fold in children(trial.info.run_id, "fold")
        ]
        out.append((objective, trained))
    return out


def cost_curve(trials: list, bracket: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative fold-epochs, best objective so far) after each epoch the trials report, one trial after another.
    With an ASHA `bracket` watching (metric minimised), a trial it stops trains and reports no more."""
    from ray.tune.schedulers import TrialScheduler

    spent, best, total, best_so_far = [], [], 0, math.inf
    for number, (objective, trained) in enumerate(trials):
        trial = SimpleNamespace(trial_id=str(number))  # all ASHA reads of a trial
        for epoch in sorted(objective):
            total += sum(epoch in steps for steps in trained)
            best_so_far = min(best_so_far, objective[epoch])
            spent.append(total)
            best.append(best_so_far)
            # Tune counts epochs from 1 (each report's `epoch`); MLflow's steps count from 0
            if bracket is not None and bracket.on_result(trial, epoch + 1, -objective[epoch]) == TrialScheduler.STOP:
                break
    return np.array(spent), np.array(best)


def curve(client: MlflowClient, study_id: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """A study's cost curve as it ran."""
    return cost_curve(trial_curves(client, study_id, metric))


def replay_asha(trials: list, grace: int, reduction: int, max_t: int) -> tuple[np.ndarray, np.ndarray]:
    """The cost curve had Tune's ASHA (one bracket, as `tune` builds it) watched these fully trained trials."""
    from ray.tune.schedulers.async_hyperband import _Bracket

    return cost_curve(trials, _Bracket(min_t=grace, max_t=max_t, reduction_factor=reduction, s=0))


def replay_table(client: MlflowClient, out: Path, max_t: int) -> str:
    """The random-search studies whose logs are in `out`, replayed through ASHA at several settings."""
    studies = {}
    for log in sorted(out.glob("random-seed*.log")):
        found = re.search(r"MLflow: study run ([0-9a-f]+)", log.read_text())
        if found:
            studies[int(log.stem.removeprefix("random-seed"))] = found.group(1)
    if not studies:
        raise SystemExit(f"error: no random-search study logs in {out}. Fix: run this script without --replay-asha")
    curves = {seed: trial_curves(client, study, "MAE") for seed, study in studies.items()}
    settings = [(1, 2), (2, 2), (2, 3), (3, 2), (3, 3), (4, 2), (4, 3), (6, 2)]
    lines = [
        f"Random search's studies replayed through ASHA (study seeds {', '.join(map(str, studies))}; max_t {max_t})",
        "",
        "| grace | reduction | fold-epochs, share of random's | best MAE reached (random's) "
        "| share of random's fold-epochs to reach random's best |",
        "|---|---|---|---|---|",
    ]
    unstopped = {seed: cost_curve(trials) for seed, trials in curves.items()}  # random search as it ran
    for grace, reduction in settings:
        used, reached, shares = [], [], []
        for seed, trials in curves.items():
            full_spent, full_best = unstopped[seed]
            spent, best = replay_asha(trials, grace, reduction, max_t)
            used.append(f"{100 * spent[-1] / full_spent[-1]:.0f}%")
            reached.append(f"{best[-1]:.4f} ({full_best[-1]:.4f})")
            needed = epochs_to_reach(spent, best, full_best[-1])
            shares.append("never" if math.isinf(needed) else f"{100 * needed / full_spent[-1]:.0f}%")
        lines.append(f"| {grace} | {reduction} | {' / '.join(used)} | {' / '.join(reached)} | {' / '.join(shares)} |")
    return "\n".join(lines)


def epochs_to_reach(spent: np.ndarray, best: np.ndarray, target: float) -> float:
    """The fold-epochs after which the best so far is at most `target` (inf when never)."""
    hit = np.flatnonzero(best <= target + 1e-12)
    return float(spent[hit[0]]) if hit.size else math.inf


def plot(curves: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"tpe+asha": "tab:blue", "random": "tab:orange"}
    for (method, seed), (spent, best) in sorted(curves.items()):
        ax.step(spent, best, where="post", color=colours[method], alpha=0.8, label=f"{method} (study seed {seed})")
    ax.set_xlabel("cumulative fold-epochs trained")
    ax.set_ylabel(f"best CV {metric} so far")
    ax.set_title("lf_dnn on the bundled MOSI: TPE + ASHA vs random search without early stopping")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(ROOT / "bench/results/hpo_efficiency"))
    parser.add_argument("--tracking-uri", help="default: sqlite:///OUT/../../../mlruns/hpo_efficiency.db")
    parser.add_argument("--replay-asha", action="store_true", help="replay the random studies in OUT's logs")
    parser.add_argument("--max-epochs", type=int, default=12, help="the space's max_epochs (ASHA's max_t)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{ROOT / 'mlruns' / 'hpo_efficiency.db'}"
    (ROOT / "mlruns").mkdir(exist_ok=True)
    client = MlflowClient(uri)
    if args.replay_asha:
        table = replay_table(client, out, args.max_epochs)
        print(table)
        (out / "asha_replay.md").write_text(table + "\n")
        return 0
    seeds = [int(s) for s in args.seeds.split(",")]
    curves, walls = {}, {}
    for seed in seeds:
        for method in METHODS:
            study, walls[method, seed] = run_study(method, seed, args, uri)
            spent, best = curves[method, seed] = curve(client, study, "MAE")
            minutes = walls[method, seed] / 60
            print(f"{method} seed {seed}: best CV MAE {best[-1]:.4f} after {spent[-1]} fold-epochs ({minutes:.1f} min)")
    lines = [
        f"lf_dnn on the bundled MOSI, {args.trials} trials x {args.folds} folds per study, MAE (lower is better)",
        "",
        "| study seed | random: best MAE | random: fold-epochs (to first reach it) | TPE+ASHA: best MAE "
        "| TPE+ASHA: fold-epochs | TPE+ASHA: fold-epochs to reach random's best | share of random's "
        "| share of random's to first reach | wall min random / TPE+ASHA |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    shares = []
    for seed in seeds:
        r_spent, r_best = curves["random", seed]
        t_spent, t_best = curves["tpe+asha", seed]
        target = r_best[-1]
        needed = epochs_to_reach(t_spent, t_best, target)
        random_first = epochs_to_reach(r_spent, r_best, target)
        share, share_first = needed / r_spent[-1], needed / random_first
        shares.append(share)
        shown = "not reached" if math.isinf(needed) else f"{needed:.0f}"
        lines.append(
            f"| {seed} | {target:.4f} | {r_spent[-1]} ({random_first:.0f}) | {t_best[-1]:.4f} | {t_spent[-1]} "
            f"| {shown} "
            f"| {100 * share:.0f}% | {100 * share_first:.0f}% "
            f"| {walls['random', seed] / 60:.1f} / {walls['tpe+asha', seed] / 60:.1f} |"
        )
    finite = [s for s in shares if math.isfinite(s)]
    lines += [
        "",
        f"share of random search's fold-epochs TPE + ASHA needed to reach random's final best: "
        f"mean {100 * np.mean(shares):.0f}% over {len(seeds)} study seeds "
        f"({len(finite)} of {len(seeds)} reached it; goal: at most 40%)",
    ]
    table = "\n".join(lines)
    print("\n" + table)
    (out / "hpo_efficiency.md").write_text(table + "\n")
    plot(curves, out / "hpo_efficiency.png", "MAE")
    return 0


if __name__ == "__main__":
    sys.exit(main())
